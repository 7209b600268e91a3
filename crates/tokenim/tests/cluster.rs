//! Cluster mode end to end: three `tokenim serve` processes on different
//! ports share one fresh PostgreSQL database and one Redis (a prefix of
//! their own per test), as behind a load balancer. Clients on different
//! nodes chat 1:1 and in a group; concurrent sends from every node reach
//! every device in one gap-free order; a device that connects on another
//! node kicks its older socket (`replaced`); a node SIGKILLed mid-traffic
//! loses no acked message (its clients reconnect elsewhere, resend and sync)
//! and its users' presence goes offline within two heartbeats.
//!
//! Needs PostgreSQL (`TOKENIM_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and Redis
//! (`TOKENIM_TEST_REDIS`, default `redis://127.0.0.1:6379`): the tests fail
//! when either is missing.
//!
//! long: the cluster suite shares its node-starting harness; each test is
//! independent.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokenim_testkit::{Backend, Http, TestDatabase, WAIT, Ws, free_port, init_crypto};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

fn redis_url() -> String {
    std::env::var("TOKENIM_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// One `tokenim serve` process of the cluster.
struct Node {
    id: String,
    child: Child,
    http: String,
    ws: String,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node and waits for its "listening" line (it listens once
    /// it is subscribed to the cluster bus).
    async fn start(id: &str, db: &TestDatabase, prefix: &str, heartbeat_ms: u64) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokenim"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--database-url", db.url(), "--database-pool", "4"])
            .args(["--redis-url", &redis_url(), "--redis-prefix", prefix])
            .args(["--node-id", id])
            .args(["--argon2-memory-kib", "8", "--argon2-iterations", "1"])
            .args(["--limit", &format!("heartbeat_ms={heartbeat_ms}")])
            .args(["--limit", "send_rate_per_sec=100000"])
            .args(["--limit", "send_burst=100000"])
            .args(["--limit", "login_rate_per_min=100000"])
            .args(["--limit", "login_burst=100000"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tokenim");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut errs = BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = tokio::time::timeout(WAIT, async {
            while let Some(l) = lines.next_line().await.expect("read log") {
                let listening = l.contains("listening");
                logs.lock().unwrap().push(l);
                if listening {
                    return true;
                }
            }
            false
        })
        .await
        .expect("node started in time");
        if !ready {
            let mut why = Vec::new();
            while let Ok(Some(l)) = errs.next_line().await {
                why.push(l);
            }
            panic!(
                "node {id} exited before listening: {:?} {why:?}",
                logs.lock().unwrap()
            );
        }
        // Keep draining the logs so the child never blocks on a full pipe.
        let keep = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                keep.lock().unwrap().push(l);
            }
        });
        let keep = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = errs.next_line().await {
                keep.lock().unwrap().push(l);
            }
        });
        Node {
            id: id.to_owned(),
            child,
            http: format!("http://127.0.0.1:{port}"),
            ws: format!("ws://127.0.0.1:{port}/v1/ws"),
            logs,
            _dir: dir,
        }
    }

    fn client(&self) -> Http {
        Http::new(&self.http)
    }

    /// Logs in as `user` on `device` through this node.
    async fn login(&self, user: &str, device: &str) -> Http {
        self.client().login(user, device).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs.lock().unwrap();
            let from = logs.len().saturating_sub(40);
            for l in &logs[from..] {
                eprintln!("[{}] {l}", self.id);
            }
        }
    }
}

/// Three nodes on one fresh database and one Redis prefix.
struct Cluster {
    nodes: Vec<Node>,
    /// Dropped (the database with it) after the nodes.
    _db: TestDatabase,
    /// The cluster's Redis key prefix: its keys are deleted on drop, after
    /// the nodes have stopped.
    prefix: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let (url, prefix) = (redis_url(), self.prefix.clone());
        let _ = std::thread::spawn(move || {
            tokenim_server::delivery::cluster::forget_prefix(&url, &prefix)
        })
        .join();
    }
}

impl Cluster {
    async fn start(heartbeat_ms: u64) -> Cluster {
        init_crypto();
        let db = TestDatabase::create(Backend::Postgres)
            .await
            .expect("a PostgreSQL test database (is PostgreSQL running?)");
        let prefix = format!("tokenim-cluster-{}", unique());
        let mut nodes = Vec::new();
        for id in ["n1", "n2", "n3"] {
            nodes.push(Node::start(id, &db, &prefix, heartbeat_ms).await);
        }
        Cluster {
            nodes,
            _db: db,
            prefix,
        }
    }

    fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Registers users (through node 1) and answers their IDs.
    async fn users(&self, names: &[&str]) -> Vec<String> {
        let c = self.node(0).client();
        let mut ids = Vec::new();
        for n in names {
            ids.push(c.register(n).await);
        }
        ids
    }
}

/// A name no other test (in this run or another) uses.
fn unique() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A socket that keeps itself alive: a task pings every 500 ms (the tests
/// use short heartbeats, and a socket that only reads is silent to the
/// server), another reads frames into a queue the test takes them from.
struct Client {
    out: mpsc::UnboundedSender<Message>,
    frames: mpsc::UnboundedReceiver<Frame>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the reader saw: a JSON frame, or the end with the close code.
enum Frame {
    Json(Value),
    End(Option<u16>),
}

impl Client {
    async fn connect(node: &Node, http: &Http) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&node.ws))
            .await
            .expect("connect in time")
            .expect("connect");
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (ftx, frames) = mpsc::unbounded_channel();
        let writer = tokio::spawn(async move {
            // The first ping goes after the auth frame.
            let every = Duration::from_millis(500);
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            let mut n = 0u64;
            loop {
                let m = tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(m) => m,
                        None => return,
                    },
                    _ = tick.tick() => {
                        n += 1;
                        Message::Text(json!({"type": "ping", "id": format!("keepalive-{n}")}).to_string().into())
                    }
                };
                if sink.send(m).await.is_err() {
                    return;
                }
            }
        });
        let reader = tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                match m {
                    Ok(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(&t).expect("JSON frame");
                        if v["type"] == "pong" {
                            continue;
                        }
                        let _ = ftx.send(Frame::Json(v));
                    }
                    Ok(Message::Close(c)) => {
                        let _ = ftx.send(Frame::End(c.map(|c| u16::from(c.code))));
                        return;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = ftx.send(Frame::End(None));
        });
        let mut c = Client {
            out,
            frames,
            tasks: vec![writer, reader],
        };
        c.send(json!({"type": "auth", "token": http.token()})).await;
        let ok = c.recv().await;
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        c
    }

    async fn send(&mut self, v: Value) {
        self.out
            .send(Message::Text(v.to_string().into()))
            .expect("socket writer alive");
    }

    /// The next frame within `WAIT` (panics if the socket ends).
    async fn recv(&mut self) -> Value {
        match self.next(WAIT).await {
            Some(Frame::Json(v)) => v,
            Some(Frame::End(code)) => panic!("socket closed ({code:?})"),
            None => panic!("no frame in {WAIT:?}"),
        }
    }

    async fn next(&mut self, wait: Duration) -> Option<Frame> {
        tokio::time::timeout(wait, self.frames.recv())
            .await
            .ok()
            .flatten()
    }

    /// Reads until a frame matching `pred` (others are dropped).
    async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Frame::Json(v)) if pred(&v) => return v,
                Some(Frame::Json(_)) => {}
                Some(Frame::End(code)) => panic!("socket closed ({code:?})"),
                None => panic!("no matching frame in {WAIT:?}"),
            }
        }
    }

    /// Reads until the server closes the socket; answers the frames read
    /// before and the close code.
    async fn closed(&mut self) -> (Vec<Value>, Option<u16>) {
        let deadline = Instant::now() + WAIT;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Frame::Json(v)) => frames.push(v),
                Some(Frame::End(code)) => return (frames, code),
                None => panic!("not closed in time; read {frames:?}"),
            }
        }
    }

    /// The frames that arrive within `wait` (for acks already on the wire
    /// when a node dies).
    async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(Frame::Json(v)) = self.next(wait).await {
            out.push(v);
        }
        out
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn text(conv: &str, cmid: &str, body: &str) -> Value {
    json!({"type": "send", "id": cmid, "conv_id": conv, "client_msg_id": cmid,
           "content": {"type": "text", "text": body}})
}

fn is_event_of(conv: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v: &Value| v["type"] == "event" && v["event"]["conv_id"] == conv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_different_nodes_chat() {
    let cl = Cluster::start(30_000).await;
    let ids = cl.users(&["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&ids[0], &ids[1], &ids[2]);
    // Each logs in and connects through another node.
    let ah = cl.node(0).login("alice", "d").await;
    let bh = cl.node(1).login("bob", "d").await;
    let ch = cl.node(2).login("carol", "d").await;
    let mut a = Client::connect(cl.node(0), &ah).await;
    let mut b = Client::connect(cl.node(1), &bh).await;
    let mut c = Client::connect(cl.node(2), &ch).await;

    // 1:1, opened on node 1: both sides get conv_added, wherever they are.
    let direct = ah.direct(bob).await;
    let added = b.until(|v| v["type"] == "conv_added").await;
    assert_eq!(added["conversation"]["conv_id"], direct);
    a.send(text(&direct, "a1", "hi bob")).await;
    let ack = a.until(|v| v["type"] == "send_ack").await;
    let got = b.until(is_event_of(&direct)).await;
    assert_eq!(got["event"]["seq"], ack["seq"]);
    assert_eq!(got["event"]["content"]["text"], "hi bob");

    // Delivered and read notices cross nodes too.
    b.send(json!({"type": "ack", "conv_id": direct, "seq": ack["seq"]}))
        .await;
    let d = a.until(|v| v["type"] == "delivered").await;
    assert_eq!(d["user_id"], bob.as_str());
    b.send(json!({"type": "read", "conv_id": direct, "seq": ack["seq"]}))
        .await;
    let r = a.until(|v| v["type"] == "receipt").await;
    assert_eq!(r["read_seq"], ack["seq"]);
    b.send(text(&direct, "b1", "hi alice")).await;
    let got = a.until(is_event_of(&direct)).await;
    assert_eq!(got["event"]["content"]["text"], "hi alice");
    assert_eq!(got["event"]["sender"], bob.as_str());

    // A group made on node 2 with members on every node.
    let g = bh
        .post(
            "/v1/conversations",
            json!({"type": "group", "title": "g", "members": [alice, carol]}),
        )
        .await;
    assert_eq!(g.status, 201, "{:?}", g.body);
    let group = g.body["conv_id"].as_str().unwrap().to_owned();
    for s in [&mut a, &mut c] {
        let added = s.until(|v| v["type"] == "conv_added").await;
        assert_eq!(added["conversation"]["conv_id"], group);
        let joined = s.until(is_event_of(&group)).await;
        assert_eq!(joined["event"]["kind"], "member_joined");
    }
    c.send(text(&group, "c1", "hello all")).await;
    let ack = c.until(|v| v["type"] == "send_ack").await;
    for s in [&mut a, &mut b] {
        let e = s
            .until(|v| is_event_of(&group)(v) && v["event"]["kind"] == "message")
            .await;
        assert_eq!(e["event"]["seq"], ack["seq"]);
        assert_eq!(e["event"]["content"]["text"], "hello all");
    }
    c.send(json!({"type": "typing", "conv_id": group})).await;
    for s in [&mut a, &mut b] {
        let t = s.until(|v| v["type"] == "typing").await;
        assert_eq!(t["user_id"], carol.as_str());
    }

    // Presence and device lists are cluster-wide.
    c.send(json!({"type": "presence_sub", "user_ids": [alice, bob]}))
        .await;
    let mut online = BTreeMap::new();
    while online.len() < 2 {
        let p = c.until(|v| v["type"] == "presence").await;
        online.insert(
            p["user_id"].as_str().unwrap().to_owned(),
            p["online"].clone(),
        );
    }
    assert_eq!(online[alice.as_str()], true);
    assert_eq!(online[bob.as_str()], true);
    let devs = cl
        .node(2)
        .client()
        .with_token(ah.token())
        .get("/v1/devices")
        .await;
    assert_eq!(devs.body["devices"][0]["online"], true, "{:?}", devs.body);
    drop(b);
    let p = c.until(|v| v["type"] == "presence").await;
    assert_eq!(p["user_id"], bob.as_str());
    assert_eq!(p["online"], false);
    // Someone added later sees history from node 3 as node 1 wrote it.
    let hist = cl
        .node(2)
        .client()
        .with_token(ch.token())
        .get(&format!("/v1/conversations/{group}/events?after_seq=0"))
        .await;
    assert_eq!(hist.body["events"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_from_every_node_give_one_gap_free_order() {
    const N: usize = 150;
    let cl = Cluster::start(30_000).await;
    let names = ["user0", "user1", "user2"];
    let ids = cl.users(&names).await;
    // Per user: a sending device and a watching device, on different nodes.
    let mut senders = Vec::new();
    let mut watchers = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let sh = cl.node(i).login(n, "send").await;
        let wh = cl.node((i + 1) % 3).login(n, "watch").await;
        senders.push(Client::connect(cl.node(i), &sh).await);
        watchers.push(Client::connect(cl.node((i + 1) % 3), &wh).await);
    }
    let owner = cl.node(0).login("user0", "http").await;
    let g = owner
        .post(
            "/v1/conversations",
            json!({"type": "group", "title": "busy", "members": [ids[1], ids[2]]}),
        )
        .await;
    assert_eq!(g.status, 201);
    let group = g.body["conv_id"].as_str().unwrap().to_owned();
    let total = 3 * N as u64 + 1;

    // Everyone sends at once; every socket records the events it is pushed.
    let mut tasks = Vec::new();
    for (i, mut s) in senders.into_iter().enumerate() {
        let group = group.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..N {
                s.send(text(&group, &format!("s{i}-{k}"), "x")).await;
            }
            let mut acks = BTreeMap::new();
            let mut seen = Vec::new();
            while acks.len() < N || seen.len() < total as usize - N {
                let v = s.recv().await;
                match v["type"].as_str() {
                    Some("send_ack") => {
                        acks.insert(v["seq"].as_u64().unwrap(), v["client_msg_id"].clone());
                    }
                    Some("event") if v["event"]["conv_id"] == group.as_str() => seen.push(v),
                    Some("error") => panic!("{v}"),
                    _ => {}
                }
            }
            (acks, seen)
        }));
    }
    for mut w in watchers {
        let group = group.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while seen.len() < total as usize {
                let v = w.until(is_event_of(&group)).await;
                seen.push(v);
            }
            (BTreeMap::new(), seen)
        }));
    }
    let mut acked: BTreeMap<u64, Value> = BTreeMap::new();
    let mut views = Vec::new();
    for t in tasks {
        let (acks, seen) = t.await.unwrap();
        for (seq, cmid) in &acks {
            assert!(
                acked.insert(*seq, cmid.clone()).is_none(),
                "seq {seq} acked twice"
            );
        }
        views.push((acks, seen));
    }
    // Every seq from 2 on is exactly one acked message.
    assert_eq!(acked.len(), 3 * N);
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (2..=total).collect::<Vec<_>>()
    );
    // Each sender's own messages got increasing seqs in send order.
    for i in 0..3 {
        let mine: Vec<u64> = acked
            .iter()
            .filter(|(_, c)| c.as_str().unwrap().starts_with(&format!("s{i}-")))
            .map(|(s, _)| *s)
            .collect();
        let order: Vec<usize> = mine
            .iter()
            .map(|s| acked[s].as_str().unwrap()[3..].parse().unwrap())
            .collect();
        assert_eq!(order, (0..N).collect::<Vec<_>>(), "sender {i}: rule 8");
    }
    // Every node took the others' events from the bus (and put them in
    // order: how often that needed a gap fill or dropped a repeat is
    // timing, shown for the record).
    for n in &cl.nodes {
        assert!(metric(n, "tokenim_cluster_received_total").await > 0);
        eprintln!(
            "{}: gap-filled {} repeats dropped {}",
            n.id,
            metric(n, "tokenim_cluster_gap_filled_total").await,
            metric(n, "tokenim_cluster_repeats_dropped_total").await
        );
    }
    // Every device saw one order: increasing, with nothing skipped but its
    // own sends, nothing twice, and each seq the message acked for it.
    for (d, (own, seen)) in views.iter().enumerate() {
        let seqs: Vec<u64> = seen
            .iter()
            .map(|v| v["event"]["seq"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = (1..=total).filter(|s| !own.contains_key(s)).collect();
        assert_eq!(seqs, want, "device {d}");
        for v in seen {
            let seq = v["event"]["seq"].as_u64().unwrap();
            if seq > 1 {
                assert_eq!(
                    v["event"]["client_msg_id"], acked[&seq],
                    "device {d} seq {seq}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_connecting_on_another_node_replaces_its_old_socket() {
    let mut cl = Cluster::start(30_000).await;
    cl.users(&["alice"]).await;
    let first = cl.node(0).login("alice", "phone").await;
    let laptop = cl.node(0).login("alice", "laptop").await;
    let mut old = Client::connect(cl.node(0), &first).await;
    let mut other = Client::connect(cl.node(2), &laptop).await;
    // The same device logs in again and connects through node 2.
    let second = cl.node(1).login("alice", "phone").await;
    let mut new = Client::connect(cl.node(1), &second).await;
    let (frames, code) = old.closed().await;
    assert_eq!(code, Some(4002), "{frames:?}");
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "kicked" && f["reason"] == "replaced"),
        "{frames:?}"
    );
    // The new socket and the other device live on.
    for s in [&mut new, &mut other] {
        s.send(json!({"type": "sync", "id": "alive", "limit": 1}))
            .await;
        s.until(|v| v["type"] == "sync_result").await;
    }
    let devs = cl
        .node(2)
        .client()
        .with_token(laptop.token())
        .get("/v1/devices")
        .await;
    let online: HashMap<String, bool> = devs.body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["device_id"].as_str().unwrap().to_owned(),
                d["online"] == true,
            )
        })
        .collect();
    assert!(online["phone"] && online["laptop"], "{online:?}");
    // Logging out through node 3 kicks the socket on node 2.
    let r = cl
        .node(2)
        .client()
        .with_token(second.token())
        .delete("/v1/sessions/current")
        .await;
    assert_eq!(r.status, 204);
    let (frames, code) = new.closed().await;
    assert_eq!(code, Some(4002));
    assert!(
        frames.iter().any(|f| f["reason"] == "logged_out"),
        "{frames:?}"
    );

    // SIGTERM: node 3 closes its sockets, leaves the cluster and exits 0.
    let node = &mut cl.nodes[2];
    let pid = node.child.id().unwrap().to_string();
    let term = Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(term.unwrap().success());
    let (_, code) = other.closed().await;
    assert_eq!(code, Some(1001));
    let status = tokio::time::timeout(WAIT, node.child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(status.success(), "{status}");
    let devs = cl
        .node(0)
        .client()
        .with_token(laptop.token())
        .get("/v1/devices")
        .await;
    assert!(
        devs.body["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["online"] == false),
        "{:?}",
        devs.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_and_its_users_go_offline() {
    const N: usize = 300;
    const HEARTBEAT: u64 = 2000;
    let mut cl = Cluster::start(HEARTBEAT).await;
    let ids = cl.users(&["alice", "bob", "carol", "dave"]).await;
    let (bob, dave) = (&ids[1], &ids[3]);
    // alice sends from node 3 (to die), bob reads on node 1, carol on node 2
    // watches dave, whose only device is on node 3.
    let ah = cl.node(2).login("alice", "d").await;
    let bh = cl.node(0).login("bob", "d").await;
    let ch = cl.node(1).login("carol", "d").await;
    let dh = cl.node(2).login("dave", "d").await;
    let mut b = Client::connect(cl.node(0), &bh).await;
    let mut c = Client::connect(cl.node(1), &ch).await;
    let d = Client::connect(cl.node(2), &dh).await;
    let g = ah
        .post(
            "/v1/conversations",
            json!({"type": "group", "title": "g", "members": [bob, &ids[2], dave]}),
        )
        .await;
    assert_eq!(g.status, 201);
    let group = g.body["conv_id"].as_str().unwrap().to_owned();
    c.send(json!({"type": "presence_sub", "user_ids": [dave]}))
        .await;
    let p = c.until(|v| v["type"] == "presence").await;
    assert_eq!(p["online"], true, "dave is online on node 3");

    // alice pipelines N sends; node 3 is killed with about half acked.
    let mut a = Client::connect(cl.node(2), &ah).await;
    for i in 0..N {
        a.send(text(&group, &format!("c{i}"), &format!("msg {i}")))
            .await;
    }
    let mut acked: BTreeMap<usize, Value> = BTreeMap::new();
    while acked.len() < N / 2 {
        let v = a.until(|v| v["type"] == "send_ack").await;
        acked.insert(
            v["client_msg_id"].as_str().unwrap()[1..].parse().unwrap(),
            v,
        );
    }
    cl.nodes[2].child.kill().await.expect("SIGKILL");
    let killed = Instant::now();
    // Acks already on the wire count too.
    for v in a.drain(Duration::from_millis(300)).await {
        if v["type"] == "send_ack" {
            acked.insert(
                v["client_msg_id"].as_str().unwrap()[1..].parse().unwrap(),
                v,
            );
        }
    }
    drop(d);

    // dave's presence goes offline on node 2 within two heartbeats (and
    // not before the kill: carol's first presence frame since is it).
    let p = c.until(|v| v["type"] == "presence").await;
    assert_eq!(p["user_id"], dave.as_str());
    assert_eq!(p["online"], false);
    let after = killed.elapsed();
    assert!(
        after < Duration::from_millis(2 * HEARTBEAT),
        "offline after {after:?}"
    );

    // alice reconnects through node 1 and resends what has no ack (and
    // what has: dedup answers the original acks).
    let mut a = Client::connect(cl.node(0), &ah).await;
    for i in 0..N {
        a.send(text(&group, &format!("c{i}"), "resent")).await;
    }
    let mut acks = BTreeMap::new();
    while acks.len() < N {
        let v = a.until(|v| v["type"] == "send_ack").await;
        let i: usize = v["client_msg_id"].as_str().unwrap()[1..].parse().unwrap();
        if let Some(orig) = acked.get(&i) {
            assert_eq!(v["seq"], orig["seq"], "c{i}: the original ack");
            assert_eq!(v["msg_id"], orig["msg_id"]);
        }
        acks.insert(i, v["seq"].as_u64().unwrap());
    }
    // Seq 1 is the group's creation; the messages follow in send order.
    for (i, seq) in &acks {
        assert_eq!(*seq, *i as u64 + 2, "c{i}");
    }

    // bob, on node 1 all along, was pushed every message once, in order
    // (what node 3 committed but never published is filled from the store).
    let mut pushed = Vec::new();
    while pushed.len() < N + 1 {
        let v = b.until(is_event_of(&group)).await;
        pushed.push(v);
    }
    for (k, v) in pushed.iter().enumerate() {
        assert_eq!(v["event"]["seq"], k as u64 + 1);
        if k > 0 {
            assert_eq!(v["event"]["client_msg_id"], format!("c{}", k - 1));
        }
    }
    // A device that syncs from scratch on node 2 finds the same.
    let fresh = cl.node(1).login("bob", "tablet").await;
    let mut t = Ws::connect_auth(&cl.node(1).ws, fresh.token()).await;
    let mut cursors = BTreeMap::from([(group.clone(), 0)]);
    let all = t.sync_all(&mut cursors).await;
    let msgs: Vec<&Value> = all.iter().filter(|e| e["kind"] == "message").collect();
    assert_eq!(msgs.len(), N);
    for (i, e) in msgs.iter().enumerate() {
        assert_eq!(e["client_msg_id"], format!("c{i}"), "once, in order");
        assert_eq!(e["seq"], i as u64 + 2);
        if acked.contains_key(&i) {
            assert_eq!(e["content"]["text"], format!("msg {i}"), "never replaced");
        }
    }
    // One survivor took the dead node's devices offline.
    let reaped = metric(cl.node(0), "tokenim_cluster_reaped_nodes_total").await
        + metric(cl.node(1), "tokenim_cluster_reaped_nodes_total").await;
    assert_eq!(reaped, 1);
}

/// A counter of a node's `/metrics`.
async fn metric(node: &Node, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", node.http))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}
