//! The SDK's HTTP calls for membership, roles, mutes, titles, contacts,
//! blocks and push registration, and typed content, against a real server:
//! each call does what the protocol says, and its refusals come back as the
//! protocol's error codes.

use std::sync::Arc;
use std::time::Duration;

use tokenim_client::{
    Client, Config, ErrorCode, MemoryStore, MessageContent, Messenger, Session, Update, proto::Role,
};
use tokenim_testkit::TestServer;

async fn user(server: &TestServer, name: &str) -> Session {
    let c = Client::new(&server.http).unwrap();
    c.register(name, "password1", None).await.unwrap();
    c.login(name, "password1", "phone", "cli").await.unwrap()
}

fn code<T: std::fmt::Debug>(r: tokenim_client::Result<T>) -> Option<ErrorCode> {
    r.expect_err("refused").code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_managed_through_the_sdk() {
    let server = TestServer::start().await;
    let (ann, bea, cid) = (
        user(&server, "ann").await,
        user(&server, "bea").await,
        user(&server, "cid").await,
    );
    let g = ann.create_group("team", &[bea.user_id()]).await.unwrap();
    let conv = g.conv_id.as_str();
    ann.add_members(conv, &[cid.user_id()]).await.unwrap();
    let page = ann.members(conv, None, 2).await.unwrap();
    assert_eq!(page.members.len(), 2);
    assert!(page.has_more);
    let rest = ann
        .members(conv, Some(&page.members[1].user_id), 10)
        .await
        .unwrap();
    assert_eq!((rest.members.len(), rest.has_more), (1, false));

    // Title and announcement mode: admins only.
    let c = ann
        .update_conversation(conv, Some("team 2"), None)
        .await
        .unwrap();
    assert_eq!(c.title.as_deref(), Some("team 2"));
    assert_eq!(
        code(bea.update_conversation(conv, Some("mine"), None).await),
        Some(ErrorCode::Forbidden)
    );
    ann.set_role(conv, bea.user_id(), Role::Admin)
        .await
        .unwrap();
    bea.update_conversation(conv, None, Some(true))
        .await
        .unwrap();
    assert!(ann.conversation(conv).await.unwrap().only_admins_send);
    // Cid is no admin: in announcement mode he cannot post.
    assert_eq!(
        code(cid.post_text(conv, "c1", "hello?").await),
        Some(ErrorCode::Forbidden)
    );
    bea.update_conversation(conv, None, Some(false))
        .await
        .unwrap();
    // A muted member cannot post until unmuted.
    let hour = 3_600_000 + now_ms();
    bea.set_mute(conv, cid.user_id(), Some(hour)).await.unwrap();
    assert_eq!(
        code(cid.post_text(conv, "c2", "hello?").await),
        Some(ErrorCode::Forbidden)
    );
    bea.set_mute(conv, cid.user_id(), None).await.unwrap();
    cid.post_text(conv, "c3", "hello").await.unwrap();
    // Removing and leaving.
    bea.remove_member(conv, cid.user_id()).await.unwrap();
    assert_eq!(
        code(cid.conversation(conv).await),
        Some(ErrorCode::NotFound)
    );
    bea.leave(conv).await.unwrap();
    let left = ann.members(conv, None, 10).await.unwrap();
    assert_eq!(left.members.len(), 1);
    assert_eq!(
        code(ann.set_role(conv, ann.user_id(), Role::Member).await),
        Some(ErrorCode::Forbidden)
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_blocks_push_and_devices() {
    // The operator's own push channel is configured, so devices may
    // register for it.
    let server = TestServer::start_with(|c| {
        c.push.webhook = Some(tokenim_server::push::config::WebhookConfig {
            url: Some("https://backend.example.com/push".into()),
            secret: Some("hook-secret".into()),
            secrets: None,
        });
    })
    .await;
    let (dee, eve) = (user(&server, "dee").await, user(&server, "eve").await);
    dee.add_contact(eve.user_id()).await.unwrap();
    let contacts = dee.contacts().await.unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].user_id, eve.user_id());
    dee.remove_contact(eve.user_id()).await.unwrap();
    assert!(dee.contacts().await.unwrap().is_empty());

    // Blocked: eve cannot open a conversation with dee, until unblocked.
    dee.block(eve.user_id()).await.unwrap();
    assert_eq!(
        code(eve.create_direct(dee.user_id()).await),
        Some(ErrorCode::Forbidden)
    );
    dee.unblock(eve.user_id()).await.unwrap();
    eve.create_direct(dee.user_id()).await.unwrap();

    dee.set_push_token("webhook", "opaque-token").await.unwrap();
    assert_eq!(
        code(dee.set_push_token("carrier-pigeon", "x").await),
        Some(ErrorCode::BadRequest)
    );
    // FCM is not configured here: refused, saying so.
    let e = dee.set_push_token("fcm", "token").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    assert!(e.to_string().contains("not configured"), "{e}");
    // A second device of dee's is removed: its session ends.
    let c = Client::new(&server.http).unwrap();
    let laptop = c.login("dee", "password1", "laptop", "cli").await.unwrap();
    assert_eq!(dee.devices().await.unwrap().devices.len(), 2);
    dee.remove_device("laptop").await.unwrap();
    assert_eq!(code(laptop.me().await), Some(ErrorCode::Unauthorized));
    assert_eq!(
        code(dee.remove_device("laptop").await),
        Some(ErrorCode::NotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_content_is_sent_and_read_back() {
    let server = TestServer::start().await;
    let (fin, gil) = (user(&server, "fin").await, user(&server, "gil").await);
    let conv = fin.create_direct(gil.user_id()).await.unwrap().conv_id;
    let (m, mut u) = Messenger::start(&fin, Arc::new(MemoryStore::new()), Config::default())
        .await
        .unwrap();
    let sent = [
        MessageContent::text_mentioning("look, @gil", &[gil.user_id()]),
        MessageContent::Image {
            url: "https://cdn.example.com/p.png".into(),
            name: Some("p.png".into()),
            size: Some(1234),
        },
        MessageContent::from("plain"),
    ];
    let mut ids = Vec::new();
    for c in &sent {
        ids.push(m.send(&conv, c.clone()).await.unwrap());
    }
    let mut acked = 0;
    while acked < ids.len() {
        match tokio::time::timeout(Duration::from_secs(30), u.recv())
            .await
            .expect("an update")
            .expect("open")
        {
            Update::Status(s) if ids.contains(&s.client_msg_id) && s.seq.is_some() => acked += 1,
            Update::Stopped(r) => panic!("stopped: {r:?}"),
            _ => {}
        }
    }
    let page = gil
        .history(&conv, tokenim_client::HistoryPage::After(0), 10)
        .await
        .unwrap();
    let got: Vec<MessageContent> = page.events.iter().filter_map(MessageContent::of).collect();
    assert_eq!(got, sent);
    // Content the server refuses is refused through the SDK too.
    assert_eq!(
        code(
            fin.post_message(&conv, "bad", serde_json::json!({"text": "no type"}))
                .await
        ),
        Some(ErrorCode::BadRequest)
    );
}
