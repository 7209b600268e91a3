//! The SDK against a real server: the network is cut in the middle of
//! sending (server restarted, or sockets closed by a proxy), pushes are lost,
//! the client restarts from its state file; the application still sees
//! every event exactly once and in order, and every send ends `sent`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokenim_client::{
    Client, Config, Event, EventKind, FileStore, MemoryStore, MessageStatus, Messenger, Session,
    StateStore, Update, Updates, event_text,
};
use tokenim_testkit::TestServer;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// How long a test waits for what it expects before failing.
const WAIT: Duration = Duration::from_secs(30);

async fn user(server: &TestServer, name: &str, device: &str) -> Session {
    let client = Client::new(&server.http).expect("client");
    client
        .register(name, "password1", None)
        .await
        .expect("register");
    client
        .login(name, "password1", device, "cli")
        .await
        .expect("login")
}

fn fast(ws_url: Option<String>) -> Config {
    Config {
        ws_url,
        resend_after: Duration::from_secs(2),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(500),
        gap_grace: Duration::from_millis(200),
        ack_interval: Duration::from_millis(50),
        ..Config::default()
    }
}

/// What one messenger has told the application so far.
#[derive(Default)]
struct Seen {
    events: BTreeMap<String, Vec<Event>>,
    statuses: HashMap<String, Vec<MessageStatus>>,
    synced: usize,
    disconnects: usize,
}

impl Seen {
    fn take(&mut self, u: Update) {
        match u {
            Update::Event(e) => self.events.entry(e.conv_id.clone()).or_default().push(e),
            Update::Status(s) => self
                .statuses
                .entry(s.client_msg_id)
                .or_default()
                .push(s.status),
            Update::Synced => self.synced += 1,
            Update::Disconnected { .. } => self.disconnects += 1,
            Update::Stopped(r) => panic!("stopped: {r:?}"),
            _ => {}
        }
    }

    fn conv(&self, conv: &str) -> &[Event] {
        self.events.get(conv).map_or(&[], |v| v.as_slice())
    }

    fn last_status(&self, id: &str) -> Option<MessageStatus> {
        self.statuses.get(id).and_then(|v| v.last().copied())
    }

    /// Reads updates until `done` holds; fails after `WAIT`.
    async fn until(&mut self, updates: &mut Updates, what: &str, done: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(self) {
            match tokio::time::timeout_at(deadline, updates.recv()).await {
                Ok(Some(u)) => self.take(u),
                Ok(None) => panic!("updates ended while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }
}

/// Every event of `conv` exactly once, in order, from seq 1 up to `n`.
fn assert_complete(events: &[Event], n: u64) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let want: Vec<u64> = (1..=n).collect();
    assert_eq!(seqs, want, "events out of order, missing or repeated");
}

fn texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::Message)
        .map(|e| event_text(e).expect("text message"))
        .collect()
}

/// A WebSocket proxy in front of the server that can close every socket at
/// once, refuse connections, drop chosen server frames, and count the client
/// frames of each type.
struct Proxy {
    url: String,
    shared: Arc<ProxyShared>,
}

type Filter = Box<dyn Fn(&Value) -> bool + Send + Sync>;

struct ProxyShared {
    upstream: String,
    down: AtomicBool,
    cut: tokio::sync::watch::Sender<u64>,
    drop_frame: Mutex<Option<Filter>>,
    dropped: AtomicUsize,
    client_frames: Mutex<HashMap<String, usize>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(ProxyShared {
            upstream: upstream.to_owned(),
            down: AtomicBool::new(false),
            cut: tokio::sync::watch::channel(0).0,
            drop_frame: Mutex::new(None),
            dropped: AtomicUsize::new(0),
            client_frames: Mutex::new(HashMap::new()),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if s.down.load(Ordering::SeqCst) {
                    drop(tcp);
                    continue;
                }
                tokio::spawn(Proxy::pipe(s.clone(), tcp));
            }
        });
        Proxy {
            url: format!("ws://{addr}/v1/ws"),
            shared,
        }
    }

    async fn pipe(s: Arc<ProxyShared>, tcp: tokio::net::TcpStream) {
        let mut cut = s.cut.subscribe();
        let Ok(mut client) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        let Ok((mut server, _)) = tokio_tungstenite::connect_async(s.upstream.as_str()).await
        else {
            return;
        };
        loop {
            tokio::select! {
                _ = cut.changed() => return, // both sockets dropped: no close frame
                m = client.next() => {
                    let Some(Ok(m)) = m else { return };
                    if let Message::Text(t) = &m
                        && let Ok(v) = serde_json::from_str::<Value>(t)
                    {
                        let ty = v["type"].as_str().unwrap_or("").to_owned();
                        *s.client_frames.lock().unwrap().entry(ty).or_default() += 1;
                    }
                    if server.send(m).await.is_err() { return }
                }
                m = server.next() => {
                    let Some(Ok(m)) = m else { return };
                    if let Message::Text(t) = &m
                        && let Ok(v) = serde_json::from_str::<Value>(t)
                        && s.drop_frame.lock().unwrap().as_ref().is_some_and(|f| f(&v))
                    {
                        s.dropped.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    if client.send(m).await.is_err() { return }
                }
            }
        }
    }

    /// Closes every socket through the proxy, abruptly.
    fn cut(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    /// Refuses (true) or accepts (false) new connections.
    fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    fn drop_frames(&self, f: impl Fn(&Value) -> bool + Send + Sync + 'static) {
        *self.shared.drop_frame.lock().unwrap() = Some(Box::new(f));
    }

    fn client_frames(&self, ty: &str) -> usize {
        self.shared
            .client_frames
            .lock()
            .unwrap()
            .get(ty)
            .copied()
            .unwrap_or(0)
    }
}

async fn start(
    session: &Session,
    store: Arc<dyn StateStore>,
    cfg: Config,
) -> (Messenger, Updates, Seen) {
    let (m, mut u) = Messenger::start(session, store, cfg).await.expect("start");
    let mut seen = Seen::default();
    seen.until(&mut u, "the first sync", |s| s.synced >= 1)
        .await;
    (m, u, seen)
}

/// Both sides see everything once and in order, and no duplicate comes
/// late: a sentinel from bob must be the very next event alice sees.
async fn finish_with_sentinel(
    conv: &str,
    n: u64,
    (alice_u, alice): (&mut Updates, &mut Seen),
    (bob_m, bob_u, bob): (&Messenger, &mut Updates, &mut Seen),
) {
    let id = bob_m.send_text(conv, "sentinel").await.expect("send");
    bob.until(bob_u, "the sentinel sent", |s| {
        s.last_status(&id) >= Some(MessageStatus::Sent) && s.conv(conv).len() as u64 > n
    })
    .await;
    alice
        .until(alice_u, "the sentinel", |s| s.conv(conv).len() as u64 > n)
        .await;
    assert_complete(alice.conv(conv), n + 1);
    assert_complete(bob.conv(conv), n + 1);
    assert_eq!(texts(alice.conv(conv)).last().unwrap(), "sentinel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_sending_loses_and_repeats_nothing() {
    let mut server = TestServer::start().await;
    let alice = user(&server, "alice", "laptop").await;
    let bob = user(&server, "bob", "phone").await;
    let conv = alice.create_direct(bob.user_id()).await.unwrap().conv_id;

    let (am, mut au, mut a) = start(&alice, Arc::new(MemoryStore::new()), fast(None)).await;
    let (bm, mut bu, mut b) = start(&bob, Arc::new(MemoryStore::new()), fast(None)).await;

    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(am.send_text(&conv, &format!("m{i}")).await.unwrap());
    }
    // Cut while those are on the wire; keep sending while the server is down.
    server.restart().await;
    for i in 30..60 {
        ids.push(am.send_text(&conv, &format!("m{i}")).await.unwrap());
    }

    a.until(&mut au, "every send acknowledged and in the stream", |s| {
        ids.iter()
            .all(|id| s.last_status(id) >= Some(MessageStatus::Sent))
            && s.conv(&conv).len() >= 60
    })
    .await;
    b.until(&mut bu, "60 messages at bob", |s| s.conv(&conv).len() >= 60)
        .await;
    assert!(a.disconnects >= 1, "the restart did not cut alice");
    for id in &ids {
        let st = &a.statuses[id];
        assert_eq!(st[0], MessageStatus::Sending);
        assert!(!st.contains(&MessageStatus::Failed), "{id}: {st:?}");
        assert!(st.windows(2).all(|w| w[0] < w[1]), "{id}: {st:?}");
    }
    let want: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    assert_eq!(texts(b.conv(&conv)), want);
    assert_eq!(texts(a.conv(&conv)), want, "alice's own messages, in place");
    assert!(am.outbox().await.unwrap().is_empty());

    finish_with_sentinel(&conv, 60, (&mut au, &mut a), (&bm, &mut bu, &mut b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_cut_repeatedly_mid_sending_both_ways() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.ws).await;
    let alice = user(&server, "alice", "laptop").await;
    let bob = user(&server, "bob", "phone").await;
    let conv = alice.create_direct(bob.user_id()).await.unwrap().conv_id;

    let cfg = fast(Some(proxy.url.clone()));
    let (am, mut au, mut a) = start(&alice, Arc::new(MemoryStore::new()), cfg.clone()).await;
    let (bm, mut bu, mut b) = start(&bob, Arc::new(MemoryStore::new()), cfg).await;

    // Both send 4 rounds of 15 while every socket is cut after each round.
    let mut a_ids = Vec::new();
    let mut b_ids = Vec::new();
    for round in 0..4 {
        for i in 0..15 {
            a_ids.push(am.send_text(&conv, &format!("a{round}-{i}")).await.unwrap());
            b_ids.push(bm.send_text(&conv, &format!("b{round}-{i}")).await.unwrap());
        }
        proxy.cut();
    }
    a.until(
        &mut au,
        "alice's sends acknowledged and bob's received",
        |s| {
            a_ids
                .iter()
                .all(|id| s.last_status(id) >= Some(MessageStatus::Sent))
                && s.conv(&conv).len() >= 120
        },
    )
    .await;
    b.until(
        &mut bu,
        "bob's sends acknowledged and alice's received",
        |s| {
            b_ids
                .iter()
                .all(|id| s.last_status(id) >= Some(MessageStatus::Sent))
                && s.conv(&conv).len() >= 120
        },
    )
    .await;
    assert!(a.disconnects >= 1 && b.disconnects >= 1);
    assert_complete(a.conv(&conv), 120);
    assert_complete(b.conv(&conv), 120);
    // One timeline: both see the same texts in the same order, each sender's
    // in the order sent.
    let ta = texts(a.conv(&conv));
    assert_eq!(ta, texts(b.conv(&conv)));
    for (who, ids) in [("a", &a_ids), ("b", &b_ids)] {
        let mine: Vec<&String> = ta.iter().filter(|t| t.starts_with(who)).collect();
        let want: Vec<String> = (0..4)
            .flat_map(|r| (0..15).map(move |i| format!("{who}{r}-{i}")))
            .collect();
        assert_eq!(mine.len(), ids.len());
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
    finish_with_sentinel(&conv, 120, (&mut au, &mut a), (&bm, &mut bu, &mut b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_push_is_a_gap_that_a_sync_fills() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.ws).await;
    let alice = user(&server, "alice", "laptop").await;
    let bob = user(&server, "bob", "phone").await;
    let conv = alice.create_direct(bob.user_id()).await.unwrap().conv_id;

    let (_bm, mut bu, mut b) = start(
        &bob,
        Arc::new(MemoryStore::new()),
        fast(Some(proxy.url.clone())),
    )
    .await;
    alice.post_text(&conv, "http-1", "t1").await.expect("post");
    b.until(&mut bu, "the first event", |s| s.conv(&conv).len() == 1)
        .await;
    let syncs_before = proxy.client_frames("sync");
    assert_eq!(syncs_before, 1, "only the sync after connecting so far");
    // The push of seq 3 never reaches bob; the socket stays up.
    proxy.drop_frames(|v| v["type"] == "event" && v["event"]["seq"] == 3);
    for i in 2..=4 {
        let id = format!("http-{i}");
        alice
            .post_text(&conv, &id, &format!("t{i}"))
            .await
            .expect("post");
    }
    b.until(&mut bu, "4 events at bob", |s| s.conv(&conv).len() >= 4)
        .await;
    assert_eq!(proxy.shared.dropped.load(Ordering::SeqCst), 1);
    assert_complete(b.conv(&conv), 4);
    assert_eq!(texts(b.conv(&conv)), ["t1", "t2", "t3", "t4"]);
    assert!(
        proxy.client_frames("sync") > syncs_before,
        "the gap did not trigger a sync"
    );
    assert_eq!(b.disconnects, 0, "filled by a sync, not by a reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_in_a_file_survives_a_client_restart() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(&server.ws).await;
    let alice = user(&server, "alice", "laptop").await;
    let bob = user(&server, "bob", "phone").await;
    let conv = alice.create_direct(bob.user_id()).await.unwrap().conv_id;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.json");

    let (bm, mut bu, mut b) = start(&bob, Arc::new(MemoryStore::new()), fast(None)).await;
    // Alice's first run: online long enough to receive bob's first message.
    let (am, mut au, mut a) = start(
        &alice,
        Arc::new(FileStore::new(&path)),
        fast(Some(proxy.url.clone())),
    )
    .await;
    bm.send_text(&conv, "before").await.unwrap();
    a.until(&mut au, "bob's first message", |s| s.conv(&conv).len() == 1)
        .await;
    // Then the network goes away and alice queues 5 messages.
    proxy.set_down(true);
    proxy.cut();
    a.until(&mut au, "the cut", |s| s.disconnects >= 1).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(am.send_text(&conv, &format!("queued{i}")).await.unwrap());
    }
    assert_eq!(am.outbox().await.unwrap().len(), 5);
    am.close().await.unwrap();
    drop(au);
    let saved = FileStore::new(&path).load().unwrap();
    assert_eq!(saved.outbox.len(), 5);
    assert_eq!(saved.cursors.get(&conv), Some(&1));

    // A new client instance from the same file, with the network back.
    let (m2, mut u2) = Messenger::start(&alice, Arc::new(FileStore::new(&path)), fast(None))
        .await
        .unwrap();
    for id in &ids {
        assert_eq!(m2.status(id).await.unwrap(), Some(MessageStatus::Sending));
    }
    let mut a2 = Seen::default();
    a2.until(&mut u2, "the queued sends acknowledged", |s| {
        ids.iter()
            .all(|id| s.last_status(id) >= Some(MessageStatus::Sent))
    })
    .await;
    b.until(&mut bu, "the queued messages at bob", |s| {
        s.conv(&conv).len() >= 6
    })
    .await;
    let want = [
        "before", "queued0", "queued1", "queued2", "queued3", "queued4",
    ];
    assert_complete(b.conv(&conv), 6);
    assert_eq!(texts(b.conv(&conv)), want);
    // The new instance resumed after seq 1: nothing delivered twice.
    a2.until(&mut u2, "alice's own messages", |s| {
        s.conv(&conv).len() >= 5
    })
    .await;
    let seqs: Vec<u64> = a2.conv(&conv).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [2, 3, 4, 5, 6]);
    assert!(m2.outbox().await.unwrap().is_empty());
    m2.close().await.unwrap();
    let saved = FileStore::new(&path).load().unwrap();
    assert!(saved.outbox.is_empty());
    assert_eq!(saved.cursors.get(&conv), Some(&6));
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_reach_delivered_and_read() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice", "laptop").await;
    let bob = user(&server, "bob", "phone").await;
    let conv = alice.create_direct(bob.user_id()).await.unwrap().conv_id;
    let (am, mut au, mut a) = start(&alice, Arc::new(MemoryStore::new()), fast(None)).await;
    let (bm, mut bu, mut b) = start(&bob, Arc::new(MemoryStore::new()), fast(None)).await;

    let id = am.send_text(&conv, "hello").await.unwrap();
    a.until(&mut au, "delivered", |s| {
        s.last_status(&id) == Some(MessageStatus::Delivered)
    })
    .await;
    b.until(&mut bu, "the message", |s| s.conv(&conv).len() == 1)
        .await;
    bm.read(&conv, 1).await.unwrap();
    a.until(&mut au, "read", |s| {
        s.last_status(&id) == Some(MessageStatus::Read)
    })
    .await;
    assert_eq!(
        a.statuses[&id],
        [
            MessageStatus::Sending,
            MessageStatus::Sent,
            MessageStatus::Delivered,
            MessageStatus::Read
        ]
    );
    assert_eq!(am.status(&id).await.unwrap(), Some(MessageStatus::Read));

    // A reply implies its sender read what came before it.
    let id2 = am.send_text(&conv, "still there?").await.unwrap();
    a.until(&mut au, "sent", |s| {
        s.last_status(&id2) >= Some(MessageStatus::Sent)
    })
    .await;
    assert_ne!(a.last_status(&id2), Some(MessageStatus::Read));
    bm.send_text(&conv, "yes").await.unwrap();
    a.until(&mut au, "read by replying", |s| {
        s.last_status(&id2) == Some(MessageStatus::Read)
    })
    .await;

    // A refused send ends `failed` and leaves the outbox.
    let stranger = user(&server, "carol", "tab").await;
    let other = stranger.create_direct(bob.user_id()).await.unwrap().conv_id;
    let bad = am.send_text(&other, "not mine").await.unwrap();
    a.until(&mut au, "failed", |s| {
        s.last_status(&bad) == Some(MessageStatus::Failed)
    })
    .await;
    assert!(am.outbox().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_helpers() {
    let server = TestServer::start().await;
    let client = Client::new(&server.http).unwrap();
    let alice = user(&server, "alice", "laptop").await;
    let bob = user(&server, "bob", "phone").await;
    let err = client
        .register("alice", "password1", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tokenim_client::ErrorCode::Conflict));
    let err = client
        .login("alice", "wrong-password", "x", "cli")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tokenim_client::ErrorCode::Unauthorized));

    assert_eq!(alice.me().await.unwrap().username.as_deref(), Some("alice"));
    assert_eq!(alice.find_user("bob").await.unwrap().user_id, bob.user_id());
    assert!(alice.users_by_name("nobody").await.unwrap().is_empty());
    let direct = alice.create_direct(bob.user_id()).await.unwrap();
    assert_eq!(
        alice.create_direct(bob.user_id()).await.unwrap().conv_id,
        direct.conv_id
    );
    let group = alice.create_group("team", &[bob.user_id()]).await.unwrap();
    assert_eq!(group.member_count, 2);
    let posted = alice.post_text(&direct.conv_id, "k1", "one").await.unwrap();
    assert_eq!(
        alice.post_text(&direct.conv_id, "k1", "one").await.unwrap(),
        posted
    );
    let convs = bob.conversations().await.unwrap();
    let d = convs.iter().find(|c| c.conv_id == direct.conv_id).unwrap();
    assert_eq!(d.unread, 1);
    let page = bob
        .history(&direct.conv_id, tokenim_client::HistoryPage::Latest, 10)
        .await
        .unwrap();
    assert_eq!(texts(&page.events), ["one"]);
    let page = bob
        .history(&group.conv_id, tokenim_client::HistoryPage::After(0), 10)
        .await
        .unwrap();
    assert_eq!(page.events[0].kind, EventKind::MemberJoined);
    assert_eq!(
        client.ws_url(),
        format!("ws://{}/v1/ws", server.addr),
        "derived WebSocket URL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_the_messenger() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice", "laptop").await;
    let (_m, mut u, _seen) = start(&alice, Arc::new(MemoryStore::new()), fast(None)).await;
    alice.logout().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, u.recv()).await {
            Ok(Some(Update::Stopped(r))) => {
                assert_eq!(
                    r,
                    tokenim_client::StopReason::Kicked(
                        tokenim_client::proto::KickReason::LoggedOut
                    )
                );
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("expected a stop, got {other:?}"),
        }
    }
}
