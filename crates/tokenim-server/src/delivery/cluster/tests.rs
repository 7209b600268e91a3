//! The cluster layer against a real Redis (`TOKENIM_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`; every test uses a prefix of its own): the
//! registry, cross-node pushes and kicks, dead-node reaping, the shared
//! token bucket, surviving a Redis outage, and in-order delivery with gap
//! fills. Nodes here are `AppState`s in one process, each with its own embedded
//! store; the three-process tests with PostgreSQL are in
//! `crates/tokenim/tests/cluster.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokenim_proto::{KickReason, ServerFrame};
use tokenim_store::Store;
use tokio::sync::{mpsc, watch};

use super::*;
use crate::auth::Tokens;
use crate::delivery::hub::Conn;
use crate::delivery::outbox::Close;
use crate::state::AppState;

const WAIT: Duration = Duration::from_secs(5);

fn redis_url() -> String {
    std::env::var("TOKENIM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A test cluster's key prefix; its keys are deleted when it is dropped.
struct Prefix(String);

impl std::ops::Deref for Prefix {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // Blocking: run it off the test's runtime thread.
        let (url, prefix) = (redis_url(), self.0.clone());
        let _ = std::thread::spawn(move || super::forget_prefix(&url, &prefix)).join();
    }
}

fn prefix() -> Prefix {
    Prefix(format!("tokenim-test-{}", random_hex(6)))
}

/// A node: an AppState with its own embedded store, joined to the cluster
/// `prefix` (tasks running, subscribed).
struct Node {
    app: Arc<AppState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _stop: watch::Sender<bool>,
    deliveries: mpsc::Receiver<Vec<Committed>>,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(prefix: &str, node: &str, url: &str, heartbeat_ms: u64) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            data_dir: dir.path().to_path_buf(),
            redis_url: Some(url.to_owned()),
            node_id: Some(node.to_owned()),
            redis_prefix: prefix.to_owned(),
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            ..Config::default()
        };
        cfg.limits.heartbeat_ms = heartbeat_ms;
        let store: Arc<dyn Store> =
            Arc::new(tokenim_store::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let cluster = Cluster::connect(&cfg).await.expect("redis is running");
        let key = cluster.shared_token_key(dir.path()).await.unwrap();
        let app = AppState::new(cfg, store, Some(cluster.clone()), Tokens::from_key(key)).unwrap();
        let (tx, rx) = mpsc::channel(1024);
        let (stop, stop_rx) = watch::channel(false);
        let tasks = cluster.spawn(app.hub.clone(), tx, stop_rx);
        assert!(cluster.wait_subscribed(WAIT).await, "subscribed");
        Node {
            app,
            tasks,
            _stop: stop,
            deliveries: rx,
            _dir: dir,
        }
    }

    fn cluster(&self) -> &Arc<Cluster> {
        self.app.cluster.as_ref().unwrap()
    }

    /// A socket of `user`'s `device`, connected through the fanout.
    async fn connect(&self, user: &str, device: &str) -> Arc<Conn> {
        let c = self.app.hub.new_conn(user, device);
        self.app.fanout.connected(&c).await;
        c
    }

    /// Dies without a word: its tasks stop, nothing is unregistered.
    fn kill(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The next frames of a socket (waiting at most `WAIT`), as JSON, and how
/// it closed if it did.
async fn frames(c: &Conn) -> (Vec<serde_json::Value>, Option<Close>) {
    let d = tokio::time::timeout(WAIT, c.outbox.drain())
        .await
        .expect("frames in time");
    let v = d
        .frames
        .iter()
        .map(|f| serde_json::from_str(f.as_str()).unwrap())
        .collect();
    (v, d.close)
}

/// Reads a socket's frames until one matches.
async fn frame_where(c: &Conn, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    loop {
        let (fs, close) = frames(c).await;
        if let Some(f) = fs.into_iter().find(&pred) {
            return f;
        }
        assert!(close.is_none(), "closed: {close:?}");
    }
}

#[tokio::test]
async fn pushes_and_presence_cross_nodes() {
    let p = prefix();
    let url = redis_url();
    let n1 = Node::start(&p, "n1", &url, 30_000).await;
    let n2 = Node::start(&p, "n2", &url, 30_000).await;

    // A watcher on n1 sees bob come online on n2.
    let watcher = n1.connect("u_alice", "d").await;
    n1.app.hub.set_subs(&watcher, vec!["u_bob".into()]);
    let bob = n2.connect("u_bob", "d").await;
    let f = frame_where(&watcher, |f| f["type"] == "presence").await;
    assert_eq!(f["online"], true);
    assert_eq!(f["user_id"], "u_bob");
    assert_eq!(
        n1.app
            .presence
            .frames(&["u_bob".into(), "u_carol".into()])
            .await
            .len(),
        2
    );
    match n1.app.presence.of("u_bob").await {
        ServerFrame::Presence { online, .. } => assert!(online, "bob is online on n2"),
        other => panic!("{other:?}"),
    }
    assert!(n1.app.fanout.online_devices("u_bob").await.contains("d"));

    // A frame for a user and one for members reach n2's socket.
    let f: Utf8Bytes = r#"{"type":"delivered","conv_id":"c","user_id":"u_x","seq":1}"#.into();
    n1.app.fanout.to_user("u_bob", 0, Priority::Event, &f);
    let got = frame_where(&bob, |f| f["type"] == "delivered").await;
    assert_eq!(got["seq"], 1);
    let f: Utf8Bytes = r#"{"type":"typing","conv_id":"c","user_id":"u_alice"}"#.into();
    n1.app
        .fanout
        .to_members(&["u_bob".into()], watcher.id, Priority::Ephemeral, &f);
    frame_where(&bob, |f| f["type"] == "typing").await;

    // Bob leaves: the watcher on n1 is told.
    n2.app.fanout.disconnected(&bob);
    let f = frame_where(&watcher, |f| f["type"] == "presence").await;
    assert_eq!(f["online"], false);
    match n1.app.presence.of("u_bob").await {
        ServerFrame::Presence { online, .. } => assert!(!online),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_device_replaced_on_another_node_is_kicked() {
    let p = prefix();
    let url = redis_url();
    let n1 = Node::start(&p, "n1", &url, 30_000).await;
    let n2 = Node::start(&p, "n2", &url, 30_000).await;
    let old = n1.connect("u_a", "phone").await;
    let other = n1.connect("u_a", "laptop").await;
    let new = n2.connect("u_a", "phone").await;
    loop {
        let (_, close) = frames(&old).await;
        if let Some(c) = close {
            assert_eq!(c, Close::Kick(KickReason::Replaced));
            break;
        }
    }
    // The old socket's end does not undo the new one's registration.
    n1.app.fanout.disconnected(&old);
    n1.cluster().flush(WAIT).await;
    let devs = n1.app.fanout.online_devices("u_a").await;
    assert!(
        devs.contains("phone") && devs.contains("laptop"),
        "{devs:?}"
    );
    // Logging out on n1 kicks the socket on n2.
    n1.app
        .fanout
        .kick("u_a", "phone", KickReason::LoggedOut)
        .await;
    loop {
        let (_, close) = frames(&new).await;
        if let Some(c) = close {
            assert_eq!(c, Close::Kick(KickReason::LoggedOut));
            break;
        }
    }
    assert!(
        other.outbox.push(Priority::Event, "{}".into()),
        "laptop untouched"
    );
}

#[tokio::test]
async fn a_dead_nodes_users_go_offline_within_two_heartbeats() {
    let p = prefix();
    let url = redis_url();
    let hb = 1000;
    let n1 = Node::start(&p, "n1", &url, hb).await;
    let n2 = Node::start(&p, "n2", &url, hb).await;
    let watcher = n1.connect("u_w", "d").await;
    n1.app.hub.set_subs(&watcher, vec!["u_z".into()]);
    let _z = n2.connect("u_z", "d").await;
    let f = frame_where(&watcher, |f| f["type"] == "presence").await;
    assert_eq!(f["online"], true);
    // Let n2 renew its lease once, so it is a known node.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut c = n1.cluster().conn.clone();
    loop {
        let nodes: Vec<String> = redis::cmd("HKEYS")
            .arg(format!("{p}:nodes"))
            .query_async(&mut c)
            .await
            .unwrap();
        if nodes.iter().any(|n| n.starts_with("n2|")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "n2 never renewed");
        frames_or_nothing(&watcher, Duration::from_millis(50)).await;
    }
    let killed = tokio::time::Instant::now();
    n2.kill();
    let f = tokio::time::timeout(
        Duration::from_millis(2 * hb),
        frame_where(&watcher, |f| f["type"] == "presence"),
    )
    .await
    .expect("offline within 2 heartbeats");
    assert_eq!(f["online"], false);
    assert_eq!(f["user_id"], "u_z");
    assert!(killed.elapsed() < Duration::from_millis(2 * hb));
    match n1.app.presence.of("u_z").await {
        ServerFrame::Presence { online, .. } => assert!(!online),
        other => panic!("{other:?}"),
    }
    assert_eq!(n1.cluster().stats.reaped_nodes.load(Ordering::Relaxed), 1);
}

/// Waits up to `wait` for frames (used to pace a polling loop on a socket
/// that may get none).
async fn frames_or_nothing(c: &Conn, wait: Duration) {
    let _ = tokio::time::timeout(wait, c.outbox.drain()).await;
}

#[tokio::test]
async fn rate_limits_are_shared_by_the_nodes() {
    let p = prefix();
    let url = redis_url();
    let n1 = Node::start(&p, "n1", &url, 30_000).await;
    let n2 = Node::start(&p, "n2", &url, 30_000).await;
    let (a, b) = (n1.cluster(), n2.cluster());
    assert_eq!(a.take_token("send", "u", 1, 1000, 3).await, Some(Ok(())));
    assert_eq!(b.take_token("send", "u", 1, 1000, 3).await, Some(Ok(())));
    assert_eq!(a.take_token("send", "u", 1, 1000, 3).await, Some(Ok(())));
    let Some(Err(wait)) = b.take_token("send", "u", 1, 1000, 3).await else {
        panic!("the fourth token in a second is refused")
    };
    assert!((1..=1000).contains(&wait), "{wait}");
    // Another user has a bucket of their own.
    assert_eq!(b.take_token("send", "v", 1, 1000, 3).await, Some(Ok(())));
}

/// A TCP proxy to Redis that can be cut and restored on the same port.
struct Proxy {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("proxy port");
        let port = listener.local_addr().unwrap().port();
        let target = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Proxy {
            port,
            task: Some(task),
        }
    }

    /// Cuts every connection and stops listening.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[tokio::test]
async fn a_redis_outage_degrades_to_local_and_recovers() {
    let p = prefix();
    let url = redis_url();
    let mut proxy = Proxy::start(0).await;
    let proxied = format!("redis://127.0.0.1:{}", proxy.port);
    let n1 = Node::start(&p, "n1", &proxied, 30_000).await;
    let n2 = Node::start(&p, "n2", &url, 30_000).await;
    let bob = n1.connect("u_bob", "d").await;

    proxy.cut();
    // Sends are still rate limited, locally, and fast.
    let t = tokio::time::Instant::now();
    n1.app.rate.send("u_bob").await.expect("local bucket");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(n1.cluster().stats.rate_limit_local.load(Ordering::Relaxed) >= 1);
    // Presence falls back to this node's view.
    match n1.app.presence.of("u_bob").await {
        ServerFrame::Presence { online, .. } => assert!(online),
        other => panic!("{other:?}"),
    }
    let mut rx = n1.cluster().subscribed.subscribe();
    tokio::time::timeout(WAIT, rx.wait_for(|s| !*s))
        .await
        .expect("the subscriber notices")
        .unwrap();

    // Redis comes back on the same address: n1 resubscribes and a frame
    // from n2 reaches bob again.
    let proxy2 = Proxy::start(proxy.port).await;
    assert!(n1.cluster().wait_subscribed(WAIT).await, "resubscribed");
    let f: Utf8Bytes = r#"{"type":"delivered","conv_id":"c","user_id":"u_x","seq":7}"#.into();
    n2.app.fanout.to_user("u_bob", 0, Priority::Event, &f);
    let got = frame_where(&bob, |f| f["type"] == "delivered").await;
    assert_eq!(got["seq"], 7);
    // And the request path uses Redis again once the cool-down is over.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if n1
            .cluster()
            .take_token("send", "u_back", 10, 1000, 10)
            .await
            .is_some()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis never used again"
        );
        frames_or_nothing(&bob, Duration::from_millis(100)).await;
    }
    drop(proxy2);
}

#[tokio::test]
async fn out_of_order_events_reach_sockets_in_order_without_gaps() {
    let p = prefix();
    let url = redis_url();
    let mut n1 = Node::start(&p, "n1", &url, 30_000).await;
    let store = n1.app.store.clone();
    let users = store
        .create_users(
            ["alice", "bob"]
                .iter()
                .map(|u| tokenim_store::NewUser {
                    username: (*u).into(),
                    display_name: (*u).into(),
                    password_hash: "x".into(),
                    now_ms: 1,
                })
                .collect(),
        )
        .await
        .unwrap();
    let ids: Vec<String> = users.into_iter().map(|u| u.unwrap().user_id).collect();
    let (alice, bob) = (&ids[0], &ids[1]);
    let (meta, _) = store
        .create_group(tokenim_store::NewGroup {
            conv_id: None,
            owner: alice.clone(),
            by: tokenim_store::Author::device(alice, "d"),
            title: None,
            members: vec![bob.clone()],
            now_ms: 1,
            origin: 0,
        })
        .await
        .unwrap();
    let conv = meta.conv_id;
    for i in 0..5 {
        let r = store
            .append(vec![tokenim_store::Append {
                conv_id: conv.clone(),
                actor: tokenim_store::Author::device(alice, "d"),
                client_msg_id: Some(format!("m{i}")),
                op: tokenim_store::Op::Message {
                    content: serde_json::value::RawValue::from_string(format!(
                        r#"{{"type":"text","text":"{i}"}}"#
                    ))
                    .unwrap(),
                },
                origin: 0,
                now_ms: 2,
            }])
            .await
            .unwrap();
        r.into_iter().next().unwrap().unwrap();
    }
    let events = store.events(&conv, 1, 6, 10).await.unwrap();
    assert_eq!(events.len(), 6);
    let committed = |seq: u64| Committed {
        event: Arc::new(events[seq as usize - 1].clone()),
        origin: 0,
        added: Vec::new(),
        removed: None,
        members: None,
    };
    let sock = n1.connect(bob, "d").await;
    // alice's socket here sent m1 (seq 3) and was not pushed it yet.
    let own = n1.connect(alice, "d").await;
    own.sending.lock().insert("m1".into());
    // Arrivals: 1, then 4 (2 and 3 are missing), 3 again, 2, 6, 5, 6.
    for seq in [1, 4, 3, 2, 6, 5, 6] {
        n1.app.dispatcher.deliver(vec![committed(seq)]).await;
    }
    let mut seqs = Vec::new();
    let mut added = 0;
    while seqs.len() < 6 {
        let (fs, close) = frames(&sock).await;
        assert!(close.is_none());
        for f in fs {
            match f["type"].as_str() {
                Some("event") => seqs.push(f["event"]["seq"].as_u64().unwrap()),
                // Derived from the member_joined event itself.
                Some("conv_added") => added += 1,
                _ => {}
            }
        }
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(added, 1);
    // The sender is not pushed its own event, though it came by a gap fill.
    let mut seqs = Vec::new();
    while seqs.len() < 5 {
        let (fs, _) = frames(&own).await;
        seqs.extend(
            fs.iter()
                .filter(|f| f["type"] == "event")
                .map(|f| f["event"]["seq"].as_u64().unwrap()),
        );
    }
    assert_eq!(seqs, [1, 2, 4, 5, 6]);
    assert!(own.sending.lock().is_empty());
    let st = &n1.cluster().stats;
    assert_eq!(st.gap_filled.load(Ordering::Relaxed), 3);
    assert_eq!(st.repeats_dropped.load(Ordering::Relaxed), 4);
    // Nothing else was queued for this node's dispatcher.
    assert!(n1.deliveries.try_recv().is_err());
}
