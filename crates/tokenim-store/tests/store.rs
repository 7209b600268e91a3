//! A store on its own (the engine `TOKENIM_TEST_DATABASE` names): group
//! commit assigns gap-free seqs under concurrency, dedup is atomic with the
//! commit, and everything survives a reopen.

mod common;

use std::sync::Arc;

use serde_json::value::RawValue;
use tokenim_store::{Append, AppendOutcome, Author, NewUser, Op, Patch, Store};

fn user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        display_name: name.into(),
        password_hash: "x".into(),
        now_ms: 1,
    }
}

fn msg(conv: &str, actor: &str, cmid: &str) -> Append {
    Append {
        conv_id: conv.into(),
        actor: Author::device(actor, "d"),
        client_msg_id: Some(cmid.into()),
        op: Op::Message {
            content: RawValue::from_string(r#"{"type":"text","text":"x"}"#.into()).unwrap(),
        },
        origin: 0,
        now_ms: 10,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_gap_free_and_survive_reopen() {
    let place = common::Place::new().await;
    let store: Arc<dyn Store> = place.open().await;
    let users = store
        .create_users(vec![user("alice"), user("bob"), user("alice")])
        .await
        .unwrap();
    assert!(users[2].is_err(), "a taken username is refused");
    let a = users[0].as_ref().unwrap().user_id.clone();
    let b = users[1].as_ref().unwrap().user_id.clone();
    let (conv, created) = store.open_direct(&a, &b, None, 5).await.unwrap();
    assert!(created);
    let (again, created) = store.open_direct(&b, &a, None, 6).await.unwrap();
    assert!(!created);
    assert_eq!(again.conv_id, conv.conv_id);

    // 200 appends from many tasks at once: one gap-free order.
    let futs: Vec<_> = (0..200)
        .map(|i| store.append(vec![msg(&conv.conv_id, &a, &format!("m{i}"))]))
        .collect();
    let mut seqs = Vec::new();
    for r in futures_util::future::join_all(futs).await {
        let mut r = r.unwrap();
        seqs.push(r.pop().unwrap().unwrap().seq());
    }
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<u64>>(),
        "queue order is seq order"
    );

    // A repeat in the same batch as its original, and after it.
    let mut out = store
        .append(vec![
            msg(&conv.conv_id, &b, "x"),
            msg(&conv.conv_id, &b, "x"),
        ])
        .await
        .unwrap();
    let second = out.pop().unwrap().unwrap();
    let first = out.pop().unwrap().unwrap();
    assert!(first.created());
    assert!(matches!(second, AppendOutcome::Duplicate(_)));
    assert_eq!(first.seq(), second.seq());
    assert_eq!(
        store.conv(&conv.conv_id).await.unwrap().unwrap().last_seq,
        201
    );
    let member = store.member(&conv.conv_id, &b).await.unwrap().unwrap();
    assert_eq!((member.read_seq, member.read_count), (201, 201));
    let a_member = store.member(&conv.conv_id, &a).await.unwrap().unwrap();
    assert_eq!(
        a_member.unread(&store.conv(&conv.conv_id).await.unwrap().unwrap()),
        1
    );

    // Recall rewrites the target.
    let mut r = store
        .append(vec![Append {
            op: Op::Recall { target_seq: 3 },
            ..msg(&conv.conv_id, &a, "r1")
        }])
        .await
        .unwrap();
    assert_eq!(r.pop().unwrap().unwrap().seq(), 202);
    store.shutdown().await;
    drop(store);

    let store = place.open().await;
    let c = store.conv(&conv.conv_id).await.unwrap().unwrap();
    assert_eq!(c.last_seq, 202);
    assert_eq!(c.msg_count, 201);
    let evs = store.events(&conv.conv_id, 1, 300, 500).await.unwrap();
    assert_eq!(evs.len(), 202, "one stored event per append");
    assert!(evs[2].recalled && evs[2].content.is_none());
    let d = store.dedup(&b, "x").await.unwrap().unwrap();
    assert_eq!(d.seq, 201);
    let mut next = store
        .append(vec![msg(&conv.conv_id, &a, "after-reopen")])
        .await
        .unwrap();
    assert_eq!(next.pop().unwrap().unwrap().seq(), 203);
    let mut dup = store
        .append(vec![msg(&conv.conv_id, &a, "m7")])
        .await
        .unwrap();
    assert_eq!(
        dup.pop().unwrap().unwrap().seq(),
        8,
        "dedup survives a reopen"
    );
    store.shutdown().await;
}

fn put(id: &str) -> tokenim_store::PutUser {
    tokenim_store::PutUser {
        user_id: id.into(),
        username: Patch::Keep,
        display_name: Patch::Keep,
        password_hash: Patch::Keep,
        avatar_url: Patch::Keep,
        metadata: Patch::Keep,
        now_ms: 7,
    }
}

/// Users of the app's own IDs (PROTOCOL-INTEGRATION I1.2): created once,
/// updated field by field, usernames unique across both kinds of user
/// and free again when given up, deactivation that takes sessions and push
/// registrations in one write; all of it after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_by_id_are_upserted_renamed_and_deactivated() {
    let place = common::Place::new().await;
    let store: Arc<dyn Store> = place.open().await;
    let made = store.create_users(vec![user("alice")]).await.unwrap();
    let alice = made[0].as_ref().unwrap().clone();
    assert_eq!(alice.username.as_deref(), Some("alice"));

    let (u, created) = store.put_user(put("player:1")).await.unwrap();
    assert!(created);
    assert_eq!(
        (u.display_name.as_str(), u.username.clone()),
        ("player:1", None)
    );
    let (again, created) = store.put_user(put("player:1")).await.unwrap();
    assert!(!created);
    assert_eq!(again, u);
    let taken = store
        .put_user(tokenim_store::PutUser {
            username: Patch::Set("alice".into()),
            ..put("player:1")
        })
        .await;
    assert!(taken.is_err(), "alice is taken");
    let (u, _) = store
        .put_user(tokenim_store::PutUser {
            username: Patch::Set("ana".into()),
            password_hash: Patch::Set("h".into()),
            metadata: Patch::Set(r#"{"a":1}"#.into()),
            ..put("player:1")
        })
        .await
        .unwrap();
    assert_eq!(u.display_name, "player:1", "a kept display name stays");
    assert_eq!(
        store.user_by_name("ana").await.unwrap().unwrap().user_id,
        "player:1"
    );
    // The name moves to another user once given up.
    store
        .put_user(tokenim_store::PutUser {
            username: Patch::Set("ana2".into()),
            ..put("player:1")
        })
        .await
        .unwrap();
    assert!(store.user_by_name("ana").await.unwrap().is_none());
    let (p2, _) = store
        .put_user(tokenim_store::PutUser {
            username: Patch::Set("ana".into()),
            ..put("player:2")
        })
        .await
        .unwrap();
    assert_eq!(
        store.user_by_name("ana").await.unwrap().unwrap().user_id,
        p2.user_id
    );
    // Server-made IDs are updated, never created, by a PUT.
    assert!(store.put_user(put("u_nobody")).await.is_err());
    let (_, created) = store.put_user(put(&alice.user_id)).await.unwrap();
    assert!(!created, "an existing u_ user is updated");

    // Two sessions on two devices, one with a push registration.
    for (s, d) in [("s1", "phone"), ("s2", "web")] {
        let session = tokenim_store::Session {
            session_id: s.into(),
            user_id: "player:1".into(),
            device_id: d.into(),
            created_at: 1,
            expires_at: i64::MAX,
        };
        let device = tokenim_store::Device {
            user_id: "player:1".into(),
            device_id: d.into(),
            platform: "ios".into(),
            last_seen: 1,
            synced_before: false,
            push: None,
            push_last: None,
        };
        store.create_session(session, device).await.unwrap();
    }
    let target = tokenim_store::PushTarget::new("apns", "t");
    store
        .set_push_token("player:1", "phone", Some(target))
        .await
        .unwrap();
    let gone = store.deactivate_user("player:1").await.unwrap();
    assert_eq!(gone, Some(vec!["s1".to_owned(), "s2".to_owned()]));
    assert_eq!(
        store.deactivate_user("player:1").await.unwrap(),
        Some(vec![])
    );
    assert_eq!(store.deactivate_user("nobody").await.unwrap(), None);
    assert!(
        store.put_user(put("player:1")).await.is_err(),
        "deactivated"
    );
    store.shutdown().await;
    drop(store);

    let store = place.open().await;
    let u = store.user("player:1").await.unwrap().unwrap();
    assert!(u.deactivated);
    assert_eq!(u.username.as_deref(), Some("ana2"));
    assert_eq!(u.password_hash.as_deref(), Some("h"));
    assert_eq!(u.metadata.as_deref(), Some(r#"{"a":1}"#));
    assert_eq!(u.created_at, 7);
    assert!(store.session("s1").await.unwrap().is_none());
    assert!(store.session("s2").await.unwrap().is_none());
    let phone = store.device("player:1", "phone").await.unwrap().unwrap();
    assert!(phone.push.is_none(), "push registrations are dropped");
    assert_eq!(
        store.user_by_name("ana").await.unwrap().unwrap().user_id,
        "player:2"
    );
    assert_eq!(
        store.user_by_name("alice").await.unwrap().unwrap().user_id,
        alice.user_id
    );
    store.shutdown().await;
}
