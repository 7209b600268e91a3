//! Several nodes on one SQL database: each `SqlStore` below is what one
//! `tokenim serve` node opens (its own pool and writers). Writing into the
//! same conversation from all of them at once must still give one gap-free
//! sequence with every seq used once, and a request repeated on several
//! nodes at once must be stored once. Runs on PostgreSQL and on MySQL.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::{Backend, TempDb};
use serde_json::value::RawValue;
use tokenim_store::sql::SqlStore;
use tokenim_store::{Append, AppendOutcome, Author, NewGroup, NewUser, Op, Store};

fn text(i: usize) -> Box<RawValue> {
    RawValue::from_string(format!(r#"{{"type":"text","text":"{i}"}}"#)).unwrap()
}

fn send(conv: &str, actor: &str, cmid: &str, i: usize) -> Append {
    Append {
        conv_id: conv.into(),
        actor: Author::device(actor, "d"),
        client_msg_id: Some(cmid.into()),
        op: Op::Message { content: text(i) },
        origin: 0,
        now_ms: 10,
    }
}

async fn three_nodes_one_timeline(backend: Backend) {
    let db = TempDb::create(backend).await;
    let mut nodes: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..3 {
        nodes.push(SqlStore::connect(&db.url, 8).await.expect("node opens"));
    }
    let users: Vec<String> = nodes[0]
        .create_users(
            (0..3)
                .map(|i| NewUser {
                    username: format!("user{i}"),
                    display_name: format!("User {i}"),
                    password_hash: "x".into(),
                    now_ms: 1,
                })
                .collect(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.unwrap().user_id)
        .collect();

    // The same direct conversation opened on every node at once: one row.
    let opens = nodes
        .iter()
        .map(|n| n.open_direct(&users[0], &users[1], None, 5));
    let opened: Vec<_> = futures_util::future::join_all(opens)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(opened.iter().all(|(c, _)| c.conv_id == opened[0].0.conv_id));
    assert_eq!(opened.iter().filter(|(_, created)| *created).count(), 1);

    let (group, _) = nodes[1]
        .create_group(NewGroup {
            conv_id: None,
            owner: users[0].clone(),
            by: Author::device(&users[0], "d"),
            title: Some("g".into()),
            members: users[1..].to_vec(),
            now_ms: 6,
            origin: 0,
        })
        .await
        .unwrap();
    assert_eq!((group.last_seq, group.member_count), (1, 3));

    // 3 nodes x 3 senders x 40 sends, all queued at once.
    let mut futs = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for (u, user) in users.iter().enumerate() {
            for i in 0..40 {
                let cmid = format!("n{n}-u{u}-{i}");
                futs.push((
                    (n, u, i),
                    node.append(vec![send(&group.conv_id, user, &cmid, i)]),
                ));
            }
        }
    }
    let (keys, futs): (Vec<_>, Vec<_>) = futs.into_iter().unzip();
    let results = futures_util::future::join_all(futs).await;
    let mut by_seq = BTreeMap::new();
    let mut last_of: HashMap<(usize, usize), u64> = HashMap::new();
    for (key, r) in keys.into_iter().zip(results) {
        let out = r.unwrap().pop().unwrap().unwrap();
        assert!(out.created());
        assert!(by_seq.insert(out.seq(), key).is_none(), "a seq used twice");
        // One node's queue order is its commit order.
        let prev = last_of.insert((key.0, key.1), out.seq());
        assert!(prev.is_none_or(|p| p < out.seq()));
    }
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (2..=361).collect::<Vec<u64>>(),
        "seqs are gap-free across nodes"
    );
    let events = nodes[2]
        .events(&group.conv_id, 1, 1000, 1000)
        .await
        .unwrap();
    assert_eq!(events.len(), 361);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
    let conv = nodes[0].conv(&group.conv_id).await.unwrap().unwrap();
    assert_eq!((conv.last_seq, conv.msg_count), (361, 360));

    // The same requests repeated on all nodes at once: stored once each.
    let mut futs = Vec::new();
    for i in 0..20 {
        for node in &nodes {
            futs.push(node.append(vec![send(&group.conv_id, &users[2], &format!("dup{i}"), i)]));
        }
    }
    let outs: Vec<AppendOutcome> = futures_util::future::join_all(futs)
        .await
        .into_iter()
        .map(|r| r.unwrap().pop().unwrap().unwrap())
        .collect();
    for trio in outs.chunks(3) {
        assert_eq!(trio.iter().filter(|o| o.created()).count(), 1);
        assert!(trio.iter().all(|o| o.seq() == trio[0].seq()));
        assert!(trio.iter().all(|o| o.msg_id() == trio[0].msg_id()));
    }
    assert_eq!(
        nodes[1]
            .conv(&group.conv_id)
            .await
            .unwrap()
            .unwrap()
            .last_seq,
        381
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_share_one_gap_free_timeline() {
    three_nodes_one_timeline(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_nodes_share_one_gap_free_timeline() {
    three_nodes_one_timeline(Backend::MySql).await;
}
