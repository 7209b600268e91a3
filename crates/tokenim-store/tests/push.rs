//! Push setup in the store (the engine `TOKENIM_TEST_DATABASE` names):
//! a token belongs to one device (I-11), found by the token index; the
//! registration's details and members' notification levels survive a
//! reopen; records written before these fields existed read back.

mod common;

use std::sync::Arc;

use tokenim_proto::NotifyLevel;
use tokenim_store::{Device, PushTarget, Session, Store};

async fn device(store: &Arc<dyn Store>, user: &str, device: &str) {
    let session = Session {
        session_id: format!("s-{user}-{device}"),
        user_id: user.into(),
        device_id: device.into(),
        created_at: 1,
        expires_at: i64::MAX,
    };
    let d = Device {
        user_id: user.into(),
        device_id: device.into(),
        platform: "ios".into(),
        last_seen: 1,
        synced_before: false,
        push: None,
        push_last: None,
    };
    store.create_session(session, d).await.unwrap();
}

async fn push_of(store: &Arc<dyn Store>, user: &str, device: &str) -> Option<PushTarget> {
    store.device(user, device).await.unwrap().unwrap().push
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_belongs_to_one_device_and_details_survive_reopen() {
    let place = common::Place::new().await;
    let store = place.open().await;
    for (u, d) in [("alice", "phone"), ("alice", "tablet"), ("bob", "phone")] {
        device(&store, u, d).await;
    }
    let mut apns = PushTarget::new("apns", "abcd01");
    apns.environment = Some("sandbox".into());
    store
        .set_push_token("alice", "phone", Some(apns.clone()))
        .await
        .unwrap();
    assert_eq!(
        store.push_device("apns", "abcd01").await.unwrap(),
        Some(("alice".into(), "phone".into()))
    );
    // The same token from another user's device moves there.
    store
        .set_push_token("bob", "phone", Some(PushTarget::new("apns", "abcd01")))
        .await
        .unwrap();
    assert_eq!(push_of(&store, "alice", "phone").await, None);
    assert_eq!(
        push_of(&store, "bob", "phone").await.unwrap().token,
        "abcd01"
    );
    assert_eq!(
        store.push_device("apns", "abcd01").await.unwrap(),
        Some(("bob".into(), "phone".into()))
    );
    // The same token under another provider is another registration.
    store
        .set_push_token("alice", "tablet", Some(PushTarget::new("fcm", "abcd01")))
        .await
        .unwrap();
    assert!(push_of(&store, "bob", "phone").await.is_some());
    // Registering the same token again on its own device keeps it there.
    store
        .set_push_token("bob", "phone", Some(PushTarget::new("apns", "abcd01")))
        .await
        .unwrap();
    assert!(push_of(&store, "bob", "phone").await.is_some());
    // A new token replaces the old one, which is then free.
    let mut web = PushTarget::new("webpush", "https://push.example.com/send/1");
    web.p256dh = Some("BP256".into());
    web.auth = Some("AUTH".into());
    store
        .set_push_token("bob", "phone", Some(web.clone()))
        .await
        .unwrap();
    assert_eq!(store.push_device("apns", "abcd01").await.unwrap(), None);
    assert!(
        store
            .set_push_token("nobody", "x", Some(PushTarget::new("fcm", "t")))
            .await
            .is_err()
    );
    store.shutdown().await;
    drop(store);

    let store = place.open().await;
    assert_eq!(push_of(&store, "bob", "phone").await, Some(web.clone()));
    assert_eq!(
        store.push_device("webpush", &web.token).await.unwrap(),
        Some(("bob".into(), "phone".into()))
    );
    // After a reopen the index still moves the token.
    store
        .set_push_token("alice", "phone", Some(web.clone()))
        .await
        .unwrap();
    assert_eq!(push_of(&store, "bob", "phone").await, None);
    // Dropping and removing devices free the token in the index.
    store.set_push_token("alice", "phone", None).await.unwrap();
    assert_eq!(
        store.push_device("webpush", &web.token).await.unwrap(),
        None
    );
    store
        .set_push_token("alice", "tablet", Some(apns.clone()))
        .await
        .unwrap();
    store.remove_device("alice", "tablet").await.unwrap();
    assert_eq!(store.push_device("apns", "abcd01").await.unwrap(), None);
    store
        .set_push_token("bob", "phone", Some(apns))
        .await
        .unwrap();
    assert_eq!(
        push_of(&store, "bob", "phone").await.unwrap().environment,
        Some("sandbox".into())
    );
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_levels_are_kept_per_member() {
    let place = common::Place::new().await;
    let store = place.open().await;
    let (conv, _) = store.open_direct("ann", "ben", None, 5).await.unwrap();
    let id = conv.conv_id.clone();
    let m = store.member(&id, "ann").await.unwrap().unwrap();
    assert_eq!((m.notify_level, m.notify_until), (NotifyLevel::All, None));
    store
        .set_notifications(&id, "ann", NotifyLevel::Mentions, Some(99))
        .await
        .unwrap();
    // The same again is not an error (MySQL reports no changed row).
    store
        .set_notifications(&id, "ann", NotifyLevel::Mentions, Some(99))
        .await
        .unwrap();
    store
        .set_notifications(&id, "ben", NotifyLevel::None, None)
        .await
        .unwrap();
    assert!(
        store
            .set_notifications(&id, "cat", NotifyLevel::None, None)
            .await
            .is_err()
    );
    store.shutdown().await;
    drop(store);

    let store = place.open().await;
    let ann = store.member(&id, "ann").await.unwrap().unwrap();
    assert_eq!(
        (ann.notify_level, ann.notify_until),
        (NotifyLevel::Mentions, Some(99))
    );
    let (_, ben) = store.membership(&id, "ben").await.unwrap().unwrap();
    assert_eq!(
        (ben.notify_level, ben.notify_until),
        (NotifyLevel::None, None)
    );
    let listed = store.user_convs("ann").await.unwrap();
    assert_eq!(listed[0].1.notify_level, NotifyLevel::Mentions);
    store.shutdown().await;
}

#[test]
fn records_from_before_push_setup_read_back() {
    let d: Device = serde_json::from_str(
        r#"{"user_id":"u","device_id":"d","platform":"ios","last_seen":1,
            "synced_before":true,"push":{"provider":"apns","token":"ab"}}"#,
    )
    .unwrap();
    let p = d.push.unwrap();
    assert_eq!((p.environment, p.p256dh, p.auth), (None, None, None));
    let m: tokenim_store::Member = serde_json::from_str(
        r#"{"user_id":"u","role":"member","muted_until":null,"joined_after":0,
            "read_seq":0,"read_count":0}"#,
    )
    .unwrap();
    assert_eq!((m.notify_level, m.notify_until), (NotifyLevel::All, None));
    // Debug never shows a whole token.
    let t = PushTarget::new("fcm", "secret-token-123456");
    assert!(!format!("{t:?}").contains("secret-token"));
    assert_eq!(t.token_tail(), "123456");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_token_leave_exactly_one_holder() {
    let place = common::Place::new().await;
    let store = place.open().await;
    let devices: Vec<String> = (0..8).map(|i| format!("d{i}")).collect();
    for d in &devices {
        device(&store, "u", d).await;
    }
    let tasks: Vec<_> = devices
        .iter()
        .map(|d| {
            let (store, d) = (store.clone(), d.clone());
            tokio::spawn(async move {
                store
                    .set_push_token("u", &d, Some(PushTarget::new("fcm", "raced")))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut holders = Vec::new();
    for d in &devices {
        if push_of(&store, "u", d).await.is_some() {
            holders.push(d.clone());
        }
    }
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(
        store.push_device("fcm", "raced").await.unwrap(),
        Some(("u".to_owned(), holders[0].clone()))
    );
    store.shutdown().await;
}
