//! The store's part of the server API's conversations (PROTOCOL-INTEGRATION
//! I1.4, I-8, I-9): conversations under chosen IDs, and timeline writes by
//! the app's backend with or without a user, on the engine
//! `TOKENIM_TEST_DATABASE` names, also after a reopen.

mod common;

use serde_json::value::RawValue;
use tokenim_proto::ErrorCode;
use tokenim_proto::system::System;
use tokenim_store::{
    Append, AppendOutcome, Author, NewGroup, NewUser, Op, Store, StoreError, StoreResult,
};

fn user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        display_name: name.into(),
        password_hash: "x".into(),
        now_ms: 1,
    }
}

fn text(t: &str) -> Box<RawValue> {
    RawValue::from_string(format!(r#"{{"type":"text","text":"{t}"}}"#)).unwrap()
}

fn system() -> Author {
    Author::System {
        dedup_key: "#crm".into(),
    }
}

fn write(conv: &str, actor: Author, cmid: Option<&str>, op: Op) -> Append {
    Append {
        conv_id: conv.into(),
        actor,
        client_msg_id: cmid.map(str::to_owned),
        op,
        origin: 0,
        now_ms: 10,
    }
}

async fn one(store: &dyn Store, a: Append) -> StoreResult<AppendOutcome> {
    store.append(vec![a]).await?.pop().expect("one answer")
}

fn code<T: std::fmt::Debug>(r: StoreResult<T>) -> ErrorCode {
    match r {
        Err(StoreError::Rejected(e)) => e.code,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn group(conv_id: Option<&str>, owner: &str, members: &[String], by: Author) -> NewGroup {
    NewGroup {
        conv_id: conv_id.map(str::to_owned),
        owner: owner.to_owned(),
        by,
        title: Some("t".into()),
        members: members.to_vec(),
        now_ms: 5,
        origin: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_under_chosen_ids() {
    let place = common::Place::new().await;
    let store = place.open().await;
    let us = store
        .create_users(vec![user("ann"), user("ben"), user("cat")])
        .await
        .unwrap();
    let ids: Vec<String> = us.into_iter().map(|u| u.unwrap().user_id).collect();
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);

    let (d, created) = store.open_direct(a, b, Some("dm:ab"), 5).await.unwrap();
    assert!(created);
    assert_eq!(d.conv_id, "dm:ab");
    let (again, created) = store.open_direct(b, a, Some("dm:ab"), 6).await.unwrap();
    assert!(!created && again.conv_id == "dm:ab");
    // Without an ID the pair's conversation is found, whatever its ID.
    let (found, created) = store.open_direct(a, b, None, 6).await.unwrap();
    assert!(!created && found.conv_id == "dm:ab");
    assert_eq!(
        code(store.open_direct(a, b, Some("dm:other"), 6).await),
        ErrorCode::Conflict,
        "the pair under another ID"
    );
    assert_eq!(
        code(store.open_direct(a, c, Some("dm:ab"), 6).await),
        ErrorCode::Conflict,
        "another pair under the ID"
    );

    // Two creates of one group ID at once: one creates, both answer it.
    let make = || group(Some("team.1"), a, std::slice::from_ref(b), system());
    let (x, y) = tokio::join!(store.create_group(make()), store.create_group(make()));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.1 as u8 + y.1 as u8, 1, "created once");
    assert_eq!((x.0.conv_id.as_str(), x.0.last_seq), ("team.1", 1));
    assert_eq!((y.0.conv_id.as_str(), y.0.member_count), ("team.1", 2));
    // Again with other fields: unchanged.
    let (g, created) = store
        .create_group(group(Some("team.1"), c, &[], system()))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!((g.member_count, g.last_seq), (2, 1));
    assert_eq!(
        store.member("team.1", a).await.unwrap().unwrap().role,
        tokenim_proto::Role::Owner
    );
    assert!(store.member("team.1", c).await.unwrap().is_none());
    assert_eq!(
        code(
            store
                .create_group(group(Some("dm:ab"), a, &[], system()))
                .await
        ),
        ErrorCode::Conflict
    );
    assert_eq!(
        code(store.open_direct(a, c, Some("team.1"), 6).await),
        ErrorCode::Conflict
    );

    // The group's first event was made by no user.
    let first = &store.events("team.1", 1, 1, 1).await.unwrap()[0];
    assert!(first.system && first.sender.is_none() && first.sender_device.is_none());
    match System::of(first) {
        Some(System::MemberJoined(j)) => {
            assert_eq!(j.user_ids, vec![a.clone(), b.clone()]);
            assert!(j.by.is_none());
        }
        other => panic!("not member_joined: {other:?}"),
    }
    store.shutdown().await;
    drop(store);
    let store = place.open().await;
    assert_eq!(
        store.conv("dm:ab").await.unwrap().unwrap().pair,
        Some(if a < b {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        })
    );
    assert_eq!(
        code(store.open_direct(a, b, Some("dm:x"), 7).await),
        ErrorCode::Conflict
    );
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_and_member_writes_by_the_backend() {
    let place = common::Place::new().await;
    let store = place.open().await;
    let us = store
        .create_users(vec![user("ann"), user("ben"), user("cat")])
        .await
        .unwrap();
    let ids: Vec<String> = us.into_iter().map(|u| u.unwrap().user_id).collect();
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let (g, _) = store
        .create_group(group(
            None,
            a,
            &[b.clone(), c.clone()],
            Author::device(a, "d"),
        ))
        .await
        .unwrap();
    let conv = g.conv_id.as_str();

    // A member's own send, then the backend's as that member with the same
    // client_msg_id: one event.
    let own = one(
        &*store,
        write(
            conv,
            Author::device(b, "phone"),
            Some("k1"),
            Op::Message { content: text("x") },
        ),
    )
    .await
    .unwrap();
    let as_b = Author::User {
        user_id: b.clone(),
        device_id: None,
    };
    let again = one(
        &*store,
        write(
            conv,
            as_b.clone(),
            Some("k1"),
            Op::Message { content: text("y") },
        ),
    )
    .await
    .unwrap();
    assert!(own.created() && !again.created());
    assert_eq!((own.seq(), own.msg_id()), (again.seq(), again.msg_id()));

    // A message as the member: theirs, from no device; it moves their read
    // marker like their own sends.
    let posted = one(
        &*store,
        write(conv, as_b, Some("k2"), Op::Message { content: text("z") }),
    )
    .await
    .unwrap();
    let AppendOutcome::Created(e) = &posted else {
        panic!("not created")
    };
    assert!(e.sent_by(b) && e.sender_device.is_none() && !e.system);
    assert_eq!(store.member(conv, b).await.unwrap().unwrap().read_seq, 3);

    // A system message: no sender, deduplicated under the system's key,
    // which is not the member's.
    let sys = one(
        &*store,
        write(
            conv,
            system(),
            Some("k2"),
            Op::Message { content: text("s") },
        ),
    )
    .await
    .unwrap();
    let AppendOutcome::Created(e) = &sys else {
        panic!("not created")
    };
    assert!(e.system && e.sender.is_none() && e.seq == 4);
    let repeat = one(
        &*store,
        write(
            conv,
            system(),
            Some("k2"),
            Op::Message { content: text("s") },
        ),
    )
    .await
    .unwrap();
    assert!(!repeat.created() && repeat.seq() == 4);
    assert_eq!(store.dedup("#crm", "k2").await.unwrap().unwrap().seq, 4);
    assert_eq!(store.dedup(b, "k2").await.unwrap().unwrap().seq, 3);
    let meta = store.conv(conv).await.unwrap().unwrap();
    assert_eq!((meta.last_seq, meta.msg_count), (4, 3));
    let cm = store.member(conv, c).await.unwrap().unwrap();
    assert_eq!(cm.unread(&meta), 3, "a system message counts as unread");

    // Membership by the backend: events without `by`; the owner stays
    // while anyone else is in the group, and may go once alone.
    let removed = one(
        &*store,
        write(conv, system(), None, Op::Remove { user_id: c.clone() }),
    )
    .await
    .unwrap();
    let AppendOutcome::Created(e) = &removed else {
        panic!("not created")
    };
    assert!(e.system);
    assert!(matches!(System::of(e), Some(System::MemberRemoved(r)) if r.by.is_none()));
    assert_eq!(
        code(
            one(
                &*store,
                write(conv, system(), None, Op::Remove { user_id: a.clone() })
            )
            .await
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(
            one(
                &*store,
                write(
                    conv,
                    Author::device(a, "d"),
                    None,
                    Op::Remove { user_id: a.clone() }
                )
            )
            .await
        ),
        ErrorCode::Forbidden,
        "a user never removes the owner"
    );
    one(
        &*store,
        write(conv, system(), None, Op::Remove { user_id: b.clone() }),
    )
    .await
    .unwrap();
    one(
        &*store,
        write(conv, system(), None, Op::Remove { user_id: a.clone() }),
    )
    .await
    .unwrap();
    assert_eq!(store.conv(conv).await.unwrap().unwrap().member_count, 0);
    let joined = one(
        &*store,
        write(
            conv,
            system(),
            None,
            Op::AddMembers {
                user_ids: vec![c.clone()],
                max_members: 10,
            },
        ),
    )
    .await
    .unwrap();
    assert_eq!(joined.seq(), 8);
    store.shutdown().await;
    drop(store);

    let store = place.open().await;
    let evs = store.events(conv, 1, 100, 100).await.unwrap();
    assert_eq!(evs.len(), 8);
    assert!(
        evs[3].system && evs[3].sender.is_none(),
        "read back as stored"
    );
    assert!(evs[2].sent_by(b) && evs[2].sender_device.is_none());
    assert!(matches!(System::of(&evs[7]), Some(System::MemberJoined(j)) if j.by.is_none()));
    let repeat = one(
        &*store,
        write(
            conv,
            system(),
            Some("k2"),
            Op::Message { content: text("s") },
        ),
    )
    .await
    .unwrap();
    assert!(
        !repeat.created() && repeat.seq() == 4,
        "dedup survives a reopen"
    );
    store.shutdown().await;
}
