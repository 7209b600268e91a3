//! Crash safety: the real binary is SIGKILLed with sends in flight and
//! restarted on the same data directory (or, when `TOKENIM_TEST_DATABASE`
//! is `postgres` or `mysql`, the same test database). Every acked message
//! is there exactly once and in order, and resending an acked
//! `client_msg_id` returns the original ack.

use std::process::Stdio;

use serde_json::json;
use tokenim_testkit::{Http, TestDatabase, Ws, free_port, init_crypto};
use tokio::process::{Child, Command};

/// Starts `tokenim serve` and waits for its "listening" log line (logs go
/// to standard output). With `db`, the data lives in that database.
async fn spawn(dir: &std::path::Path, db: Option<&TestDatabase>, port: u16) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenim"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir);
    if let Some(db) = db {
        cmd.args(["--database-url", db.url()]).args([
            "--database-pool",
            &tokenim_testkit::db::TEST_POOL.to_string(),
        ]);
    }
    let mut child = cmd
        .args(["--argon2-memory-kib", "8", "--argon2-iterations", "1"])
        .args([
            "--limit",
            "send_rate_per_sec=100000",
            "--limit",
            "send_burst=100000",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        // Startup errors (a database it cannot open) show in the test output.
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tokenim");
    tokenim_testkit::wait_listening(&mut child).await;
    child
}

#[tokio::test]
async fn sigkill_loses_no_acked_message() {
    init_crypto();
    let dir = tempfile::tempdir().unwrap();
    // Declared before the children so it is dropped after they are killed.
    let db = TestDatabase::for_run().await;
    eprintln!("backend: {}", tokenim_testkit::backend());
    let port = free_port();
    let mut child = spawn(dir.path(), db.as_ref(), port).await;
    if let Some(db) = &db {
        let tables = db.table_count().await.expect("count tables");
        assert!(tables > 0, "the server keeps its data in {}", db.name());
    }
    let base = format!("http://127.0.0.1:{port}");
    let ws_url = format!("ws://127.0.0.1:{port}/v1/ws");
    let c = Http::new(&base);
    c.register("alice").await;
    let bob = c.register("bob").await;
    let a = c.login("alice", "d").await;
    let conv = a.direct(&bob).await;

    const N: usize = 400;
    let mut ws = Ws::connect_auth(&ws_url, a.token()).await;
    for i in 0..N {
        ws.send(
            json!({"type": "send", "id": i, "conv_id": conv, "client_msg_id": format!("c{i}"),
                       "content": {"type": "text", "text": format!("msg {i}")}}),
        )
        .await;
    }
    // Collect acks until half are in, then kill with the rest in flight.
    let mut acked = std::collections::BTreeMap::new();
    while acked.len() < N / 2 {
        let v = ws.expect("send_ack").await;
        acked.insert(v["id"].as_u64().unwrap(), v);
    }
    child.kill().await.expect("SIGKILL");
    // Acks already on the wire before the kill count too.
    while let Ok(v) = ws.try_recv(std::time::Duration::from_millis(500)).await {
        if v["type"] == "send_ack" {
            acked.insert(v["id"].as_u64().unwrap(), v);
        }
    }
    let mut child = spawn(dir.path(), db.as_ref(), port).await;

    // Every acked message is there once, in send order, gap-free.
    let hist = a
        .get(&format!(
            "/v1/conversations/{conv}/events?after_seq=0&limit=500"
        ))
        .await;
    let events = hist.body["events"].as_array().unwrap().clone();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "gap-free");
        assert_eq!(e["client_msg_id"], format!("c{i}"), "in send order, once");
    }
    assert!(
        events.len() >= acked.len(),
        "{} stored < {} acked",
        events.len(),
        acked.len()
    );
    for (i, ack) in &acked {
        let e = &events[*i as usize];
        assert_eq!(e["msg_id"], ack["msg_id"]);
        assert_eq!(e["seq"], ack["seq"]);
    }

    // The client resends everything it has no ack for (and some it has):
    // exactly once in the timeline, and the original acks come back.
    let mut ws = Ws::connect_auth(&ws_url, a.token()).await;
    for i in 0..N {
        ws.send(
            json!({"type": "send", "id": i, "conv_id": conv, "client_msg_id": format!("c{i}"),
                       "content": {"type": "text", "text": "resent"}}),
        )
        .await;
    }
    for _ in 0..N {
        let v = ws.expect("send_ack").await;
        let i = v["id"].as_u64().unwrap();
        if let Some(orig) = acked.get(&i) {
            assert_eq!(v["msg_id"], orig["msg_id"]);
            assert_eq!(v["seq"], orig["seq"]);
        }
        assert_eq!(v["seq"], i + 1, "resends keep the send order");
    }
    let hist = a
        .get(&format!(
            "/v1/conversations/{conv}/events?after_seq=0&limit=500"
        ))
        .await;
    let events = hist.body["events"].as_array().unwrap();
    assert_eq!(events.len(), N);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["client_msg_id"], format!("c{i}"));
        if i < acked.len() {
            assert_ne!(
                e["content"]["text"], "resent",
                "a resend never replaces the original"
            );
        }
    }
    // SIGTERM: a graceful stop that exits 0.
    let pid = child.id().unwrap() as i32;
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    let status = tokio::time::timeout(tokenim_testkit::WAIT, child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status}");
}
