//! A store on its own (the engine `TOKENIM_TEST_DATABASE` names): group
//! commit assigns gap-free seqs under concurrency, dedup is atomic with the
//! commit, and everything survives a reopen.

mod common;

use std::sync::Arc;

use serde_json::value::RawValue;
use tokenim_store::{Append, AppendOutcome, Author, NewUser, Op, Store};

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
