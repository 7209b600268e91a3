//! The server with `--tls-cert/--tls-key` serves HTTPS and WSS on one port,
//! and a client that trusts the certificate chats over it.

use std::sync::Arc;

use serde_json::json;
use tokenim_testkit::{Http, TestServer, Ws, init_crypto};

#[tokio::test]
async fn https_and_wss() {
    init_crypto();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let s = TestServer::start_with(|c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await;
    let base = format!("https://localhost:{}", s.addr.port());
    let ws_url = format!("wss://localhost:{}/v1/ws", s.addr.port());

    // A plain-HTTP client gets nothing useful from the TLS port.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", s.addr.port()))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    let c = Http::with_ca(&base, ck.cert.pem().as_bytes());
    assert_eq!(c.get("/healthz").await.status, 200);
    let a_id = c.register("alice").await;
    let b_id = c.register("bob").await;
    let a = c.login("alice", "d").await;
    let b = c.login("bob", "d").await;
    let conv = a
        .post("/v1/conversations", json!({"type": "direct", "peer": b_id}))
        .await
        .body["conv_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let mut wa = Ws::connect_tls(&ws_url, tls.clone()).await;
    wa.send(json!({"type": "auth", "token": a.token()})).await;
    assert_eq!(wa.recv().await["type"], "auth_ok");
    let mut wb = Ws::connect_tls(&ws_url, tls).await;
    wb.send(json!({"type": "auth", "token": b.token()})).await;
    assert_eq!(wb.recv().await["type"], "auth_ok");
    let ack = wa.send_msg(&conv, "t1", "over tls").await;
    assert_eq!(ack["type"], "send_ack");
    let e = wb.expect("event").await;
    assert_eq!(e["event"]["content"]["text"], "over tls");
    assert_eq!(e["event"]["sender"], a_id.as_str());
}
