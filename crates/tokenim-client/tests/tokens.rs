//! The SDK signed in with a ready token instead of a password (as an app's
//! backend would mint one), against a real server: it chats like a
//! password session, and a refused or malformed token fails at once with
//! `unauthorized`, never as a retry loop.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokenim_client::{
    Client, Config, ErrorCode, MemoryStore, Messenger, StopReason, Update, event_text,
};
use tokenim_testkit::TestServer;

const WAIT: Duration = Duration::from_secs(30);

/// A token got outside the SDK, as an app's backend gets one: the user
/// created under the app's own ID, a session minted for the device.
async fn token_for(server: &TestServer, user_id: &str, device: &str) -> String {
    let backend = server.client().with_token("test-admin");
    let r = backend
        .put(&format!("/v1/server/users/{user_id}"), Some(json!({})))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = backend
        .post(
            &format!("/v1/server/users/{user_id}/sessions"),
            json!({"device_id": device, "platform": "web"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["token"].as_str().expect("token").to_owned()
}

/// The next update (panics when none comes in time).
async fn next(u: &mut tokenim_client::Updates) -> Update {
    tokio::time::timeout(WAIT, u.recv())
        .await
        .expect("an update in time")
        .expect("updates still open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_token_signs_in_and_chats() {
    let server = TestServer::start().await;
    let token = token_for(&server, "alice", "phone").await;
    let bob = server.client();
    let bob_id = bob.register("bob").await;
    let bob = bob.login("bob", "laptop").await;

    let client = Client::new(&server.http).expect("client");
    let alice = client
        .session_from_token(&token, "phone")
        .await
        .expect("the token is accepted");
    assert_eq!(alice.token(), token);
    assert_eq!(alice.device_id(), "phone");
    assert_eq!(alice.user_id(), "alice");
    assert_eq!(alice.me().await.unwrap().username, None);
    let conv = alice.create_direct(&bob_id).await.unwrap().conv_id;

    let (m, mut u) = Messenger::start(&alice, Arc::new(MemoryStore::new()), Config::default())
        .await
        .expect("start");
    let id = m.send_text(&conv, "hi bob").await.expect("send");
    let r = bob
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            json!({"client_msg_id": "b-1", "content": {"type": "text", "text": "hi alice"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let (mut sent, mut got) = (false, false);
    while !(sent && got) {
        match next(&mut u).await {
            Update::Status(s) if s.client_msg_id == id && s.seq.is_some() => sent = true,
            Update::Event(e) if event_text(&e).as_deref() == Some("hi alice") => {
                assert_eq!(e.sender.as_deref(), Some(bob_id.as_str()));
                got = true;
            }
            Update::Stopped(r) => panic!("stopped: {r:?}"),
            _ => {}
        }
    }
    let h = bob
        .get(&format!("/v1/conversations/{conv}/events?after_seq=0"))
        .await;
    let texts: Vec<&str> = h.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["content"]["text"].as_str())
        .collect();
    assert!(texts.contains(&"hi bob"), "{texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_malformed_token_is_unauthorized_at_once() {
    let server = TestServer::start().await;
    let client = Client::new(&server.http).expect("client");
    let revoked = token_for(&server, "alice", "phone").await;
    let r = server
        .client()
        .with_token(&revoked)
        .delete("/v1/sessions/current")
        .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    for bad in ["garbage", revoked.as_str(), "", "two words", "line\nbreak"] {
        let e = client
            .session_from_token(bad, "phone")
            .await
            .expect_err(bad);
        assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{bad:?}: {e}");
        assert!(!e.retryable(), "{bad:?}");
    }
    // A malformed device ID is the caller's mistake, said as such.
    let e = client
        .session_from_token("garbage", "bad device")
        .await
        .unwrap_err();
    assert!(matches!(e, tokenim_client::Error::Invalid(_)), "{e}");

    // A messenger given a refused token stops with Unauthorized instead of
    // reconnecting.
    let session = client.session("garbage", "u_nobody", "phone");
    let (_m, mut u) = Messenger::start(&session, Arc::new(MemoryStore::new()), Config::default())
        .await
        .expect("start");
    loop {
        match next(&mut u).await {
            Update::Stopped(r) => {
                assert_eq!(r, StopReason::Unauthorized);
                break;
            }
            Update::Connected { .. } => panic!("connected with a garbage token"),
            _ => {}
        }
    }
}
