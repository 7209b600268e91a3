//! Cluster mode: several `tokenim serve` nodes share one SQL database and
//! one Redis. Through Redis a node publishes what it committed and what it
//! tells users (pub/sub), keeps the registry of the devices connected to it
//! (hashes with expiring entries, renewed every `heartbeat_ms / 2`), takes
//! rate-limit tokens from buckets every node shares (Lua), and notices dead
//! nodes. The database stays the only source of truth for the timeline:
//! Redis carries nothing that a device could not get again by `sync`.
//!
//! Redis failing never stops chat on a node: every call has a deadline, the
//! request path skips Redis for a second after a failure (local presence,
//! local rate limits), the subscriber reconnects and resubscribes, and the
//! registry refills itself at the next renewal.
//!
//! Keys (all under `{prefix}:`): `dev:{user}` (registry hash),
//! `nodeusers:{node}|{inc}` (users with a socket on a node), `nodes` (live
//! node incarnations), `alive:{node}|{inc}` (a node's lease), `reap:{..}`
//! (who cleans up after a dead node), `rl:{kind}:{who}` (token buckets),
//! `token_key` (the key signing bearer tokens). Channels: `bus`
//! (broadcast) and `node:{node}` (kicks for one node).
//!
//! long: the cluster's node lifecycle (registry, liveness, takeover, bus
//! loop) around one shared state; the bus format, Lua scripts and sequencer
//! are apart.

pub mod bus;
pub mod scripts;
pub mod sequencer;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::extract::ws::Utf8Bytes;
use base64::Engine;
use futures_util::StreamExt;
use parking_lot::Mutex;
use rand::RngCore;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::value::RawValue;
use tokenim_proto::KickReason;
use tokenim_store::Committed;
use tokio::sync::{mpsc, watch};

use tokenim_core::clock::now_ms;

use crate::config::Config;
use crate::delivery::hub::Hub;
use crate::delivery::outbox::Priority;
use scripts::{Owner, Scripts};

/// Deadline of a Redis call on a request's path.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// Deadline of a background round (renewal, publishing, reaping).
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the request path leaves Redis alone after a failure.
const COOL_DOWN_MS: i64 = 1000;
/// Most messages waiting to be published; past it new ones are dropped
/// (counted in `tokenim_cluster_publish_dropped_total`).
const PUBLISH_QUEUE: usize = 8192;
/// Most events, and about the most bytes, per published message (Redis
/// disconnects a subscriber whose output buffer passes 32 MiB).
const EVENTS_PER_MESSAGE: usize = 256;
const BYTES_PER_MESSAGE: usize = 1 << 20;
/// Registry entries per renewal script call.
const RENEW_CHUNK: usize = 200;

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Stats {
    pub published: AtomicU64,
    pub publish_dropped: AtomicU64,
    pub received: AtomicU64,
    pub received_dropped: AtomicU64,
    pub redis_errors: AtomicU64,
    pub gap_filled: AtomicU64,
    pub repeats_dropped: AtomicU64,
    pub rate_limit_local: AtomicU64,
    pub reaped_nodes: AtomicU64,
}

impl Stats {
    /// The counters as `/metrics` shows them: (name, help, value).
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            (
                "tokenim_cluster_published_total",
                "messages published to the cluster bus",
                &self.published,
            ),
            (
                "tokenim_cluster_publish_dropped_total",
                "messages not published (queue full or redis failing)",
                &self.publish_dropped,
            ),
            (
                "tokenim_cluster_received_total",
                "messages received from other nodes",
                &self.received,
            ),
            (
                "tokenim_cluster_received_dropped_total",
                "event batches from other nodes dropped (dispatcher queue full)",
                &self.received_dropped,
            ),
            (
                "tokenim_cluster_redis_errors_total",
                "failed or timed-out redis calls",
                &self.redis_errors,
            ),
            (
                "tokenim_cluster_gap_filled_total",
                "events read from the store to fill a gap before a push",
                &self.gap_filled,
            ),
            (
                "tokenim_cluster_repeats_dropped_total",
                "events not pushed again (already pushed by this node)",
                &self.repeats_dropped,
            ),
            (
                "tokenim_cluster_rate_limit_local_total",
                "rate-limit checks answered locally because redis failed",
                &self.rate_limit_local,
            ),
            (
                "tokenim_cluster_reaped_nodes_total",
                "dead nodes whose devices this node took offline",
                &self.reaped_nodes,
            ),
        ]
        .into_iter()
        .map(|(name, help, v)| (name, help, get(v)))
        .collect()
    }
}

/// A message waiting to be published: its channel and payload.
type Outgoing = (String, Vec<u8>);

/// One node's membership in the cluster.
pub struct Cluster {
    /// This node's name (`--node-id`).
    pub node: String,
    /// This process's incarnation (random per start), so entries and kicks
    /// of a node's previous life are never mistaken for its current one.
    pub inc: String,
    /// `node|inc`: how this process signs its bus messages (two processes
    /// wrongly given one node ID still hear each other).
    sender: String,
    prefix: String,
    client: redis::Client,
    conn: ConnectionManager,
    heartbeat_ms: u64,
    scripts: Scripts,
    out: mpsc::Sender<Outgoing>,
    out_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// The request path skips Redis until this time (ms) after a failure.
    down_until: AtomicI64,
    last_warn: AtomicI64,
    /// Unregistrations still talking to Redis (waited for at shutdown).
    pending: AtomicU64,
    /// Whether the subscriber is subscribed right now.
    subscribed: watch::Sender<bool>,
    pub stats: Stats,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Cluster {
    /// Connects to Redis (it must answer at start; later outages are
    /// survived).
    pub async fn connect(cfg: &Config) -> anyhow::Result<Arc<Cluster>> {
        let url = cfg.redis_url.as_deref().context("no redis_url")?;
        let client = redis::Client::open(url).context("parsing redis_url")?;
        let mcfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            ConnectionManager::new_with_config(client.clone(), mcfg),
        )
        .await
        .context("connecting to redis timed out")?
        .context("connecting to redis")?;
        let node = cfg.node_id.clone().unwrap_or_else(|| random_hex(6));
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let inc = random_hex(4);
        Ok(Arc::new(Cluster {
            sender: format!("{node}|{inc}"),
            node,
            inc,
            prefix: cfg.redis_prefix.clone(),
            client,
            conn,
            heartbeat_ms: cfg.limits.heartbeat_ms.max(100),
            scripts: Scripts::default(),
            out: tx,
            out_rx: Mutex::new(Some(rx)),
            down_until: AtomicI64::new(0),
            last_warn: AtomicI64::new(0),
            pending: AtomicU64::new(0),
            subscribed: watch::channel(false).0,
            stats: Stats::default(),
        }))
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn dev_key(&self, user: &str) -> String {
        self.key(&format!("dev:{user}"))
    }

    /// This incarnation as entries start: `node|inc|`.
    fn me(&self) -> String {
        format!("{}|{}|", self.node, self.inc)
    }

    fn users_key(&self, me: &str) -> String {
        self.key(&format!("nodeusers:{}", me.trim_end_matches('|')))
    }

    fn bus(&self) -> String {
        self.key("bus")
    }

    fn node_channel(&self, node: &str) -> String {
        self.key(&format!("node:{node}"))
    }

    /// How long a registry entry lives without renewal: 1.5 heartbeats, so a
    /// dead node's devices are offline within that (and one missed renewal
    /// is survived).
    fn entry_ttl_ms(&self) -> u64 {
        self.heartbeat_ms * 3 / 2
    }

    fn owner(&self, conn: u64) -> Owner {
        Owner {
            node: self.node.clone(),
            inc: self.inc.clone(),
            conn,
        }
    }

    // ---- calls ----------------------------------------------------------

    /// Logs a Redis failure (at most every 5 s) and counts it.
    fn failed(&self, what: &str, e: &dyn std::fmt::Display) {
        self.stats.redis_errors.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let last = self.last_warn.load(Ordering::Relaxed);
        if now - last >= 5000
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, what, "redis call failed");
        }
    }

    /// Runs a call on the request path: `None` when Redis failed or is
    /// cooling down after a failure.
    async fn call<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        if now_ms() < self.down_until.load(Ordering::Relaxed) {
            return None;
        }
        let r = match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        self.down_until
            .store(now_ms() + COOL_DOWN_MS, Ordering::Relaxed);
        self.failed(what, &r);
        None
    }

    /// Runs a background call (no cool-down: background rounds are what
    /// notices that Redis is back).
    async fn background<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(ROUND_TIMEOUT, f).await {
            Ok(Ok(v)) => {
                self.down_until.store(0, Ordering::Relaxed);
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(what, &e);
                None
            }
            Err(_) => {
                self.failed(what, &"timed out");
                None
            }
        }
    }

    // ---- publishing -----------------------------------------------------

    fn publish(&self, channel: String, payload: Vec<u8>) {
        if self.out.try_send((channel, payload)).is_err() {
            self.stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes a batch this node committed.
    pub fn publish_events(&self, batch: &[Committed]) {
        let mut events = Vec::new();
        let mut bytes = 0;
        for c in batch {
            bytes += 256 + c.event.content.as_ref().map_or(0, |c| c.get().len());
            events.push(&*c.event);
            if events.len() >= EVENTS_PER_MESSAGE || bytes >= BYTES_PER_MESSAGE {
                let m = bus::Out::Events {
                    node: &self.sender,
                    events: std::mem::take(&mut events),
                };
                self.publish(self.bus(), bus::encode(&m));
                bytes = 0;
            }
        }
        if !events.is_empty() {
            let m = bus::Out::Events {
                node: &self.sender,
                events,
            };
            self.publish(self.bus(), bus::encode(&m));
        }
    }

    fn raw(frame: &Utf8Bytes) -> Option<Box<RawValue>> {
        RawValue::from_string(frame.as_str().to_owned()).ok()
    }

    pub fn publish_user(&self, user: &str, p: Priority, frame: &Utf8Bytes) {
        if let Some(f) = Self::raw(frame) {
            let m = bus::Out::User {
                node: &self.sender,
                user,
                p: p.into(),
                frame: &f,
            };
            self.publish(self.bus(), bus::encode(&m));
        }
    }

    pub fn publish_members(&self, members: &[String], p: Priority, frame: &Utf8Bytes) {
        if let Some(f) = Self::raw(frame) {
            let m = bus::Out::Members {
                node: &self.sender,
                members,
                p: p.into(),
                frame: &f,
            };
            self.publish(self.bus(), bus::encode(&m));
        }
    }

    pub fn publish_presence(&self, user: &str, online: bool, last_seen: i64) {
        let m = bus::Out::Presence {
            node: &self.sender,
            user,
            online,
            last_seen,
        };
        self.publish(self.bus(), bus::encode(&m));
    }

    /// Tells the node holding `owner`'s socket to kick it.
    pub fn publish_kick(&self, owner: &Owner, user: &str, device: &str, reason: KickReason) {
        let m = bus::Out::Kick {
            node: &self.sender,
            inc: &owner.inc,
            conn: owner.conn,
            user,
            device,
            reason,
        };
        self.publish(self.node_channel(&owner.node), bus::encode(&m));
    }

    /// Whether `owner` is a socket of another node (this node's own
    /// sockets, of this life or a previous one, need no message).
    pub fn is_remote(&self, owner: &Owner) -> bool {
        owner.node != self.node
    }

    // ---- registry -------------------------------------------------------

    /// Registers a socket: answers the live entry it replaced (another
    /// socket of the device) and whether the user was online before, or
    /// `None` when Redis failed.
    pub async fn register(
        &self,
        user: &str,
        device: &str,
        conn: u64,
    ) -> Option<(Option<Owner>, bool)> {
        let mut c = self.conn.clone();
        let mut inv = self.scripts.register.prepare_invoke();
        inv.key(self.dev_key(user))
            .key(self.users_key(&self.me()))
            .arg(device)
            .arg(self.owner(conn).prefix())
            .arg(self.entry_ttl_ms())
            .arg(user);
        let (old, was): (String, i64) = self.call("register", inv.invoke_async(&mut c)).await?;
        Some((Owner::parse(&old), was != 0))
    }

    /// Unregisters a socket (if its entry is still its own); answers how
    /// many live devices the user has left, or `None` when Redis failed.
    pub async fn unregister(&self, user: &str, device: &str, conn: u64) -> Option<u64> {
        let mut c = self.conn.clone();
        let me = self.me();
        let mut inv = self.scripts.unregister.prepare_invoke();
        inv.key(self.dev_key(user))
            .key(self.users_key(&me))
            .arg(device)
            .arg(self.owner(conn).prefix())
            .arg(user)
            .arg(&me);
        self.call("unregister", inv.invoke_async(&mut c)).await
    }

    /// The live devices of a user and who holds them, or `None` when Redis
    /// failed.
    pub async fn live_devices(&self, user: &str) -> Option<Vec<(String, Owner)>> {
        let mut c = self.conn.clone();
        let mut inv = self.scripts.live.prepare_invoke();
        inv.key(self.dev_key(user));
        let flat: Vec<String> = self.call("live", inv.invoke_async(&mut c)).await?;
        Some(
            flat.chunks(2)
                .filter_map(|p| match p {
                    [d, e] => Owner::parse(e).map(|o| (d.clone(), o)),
                    _ => None,
                })
                .collect(),
        )
    }

    /// Whether each user has a live device anywhere (one round trip), or
    /// `None` when Redis failed.
    pub async fn online(&self, users: &[String]) -> Option<Vec<bool>> {
        if users.is_empty() {
            return Some(Vec::new());
        }
        let mut c = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.load_script(&self.scripts.live).ignore();
        for u in users {
            let mut inv = self.scripts.live.prepare_invoke();
            inv.key(self.dev_key(u));
            pipe.invoke_script(&inv);
        }
        let lists: Vec<Vec<String>> = self.call("online", pipe.query_async(&mut c)).await?;
        Some(lists.iter().map(|l| !l.is_empty()).collect())
    }

    // ---- rate limits ----------------------------------------------------

    /// Takes a token from the cluster-wide bucket `kind:who`: `Some(Ok)`,
    /// `Some(Err(wait_ms))`, or `None` when Redis failed (the caller falls
    /// back to its local bucket).
    pub async fn take_token(
        &self,
        kind: &str,
        who: &str,
        rate: u64,
        per_ms: u64,
        burst: u64,
    ) -> Option<Result<(), u64>> {
        let mut c = self.conn.clone();
        let mut inv = self.scripts.bucket.prepare_invoke();
        inv.key(self.key(&format!("rl:{kind}:{who}")))
            .arg(rate.max(1))
            .arg(per_ms.max(1))
            .arg(burst.max(1));
        let r = self.call("rate limit", inv.invoke_async(&mut c)).await;
        match r {
            Some(0u64) => Some(Ok(())),
            Some(wait) => Some(Err(wait)),
            None => {
                self.stats.rate_limit_local.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    // ---- the token key ----------------------------------------------------

    /// The key every node signs bearer tokens with: the cluster's (kept in
    /// Redis), adopted into `dir/token.key` by a node that has none; a node
    /// whose own key differs refuses to start (its tokens would fail on
    /// every other node).
    pub async fn shared_token_key(&self, dir: &std::path::Path) -> anyhow::Result<[u8; 32]> {
        let local = crate::auth::Tokens::read_key(dir)?;
        let candidate = local.unwrap_or_else(|| {
            let mut k = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut k);
            k
        });
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = self.key("token_key");
        let mut c = self.conn.clone();
        let shared: String = tokio::time::timeout(
            ROUND_TIMEOUT,
            redis::pipe()
                .cmd("SET")
                .arg(&key)
                .arg(b64.encode(candidate))
                .arg("NX")
                .ignore()
                .cmd("GET")
                .arg(&key)
                .query_async::<(String,)>(&mut c),
        )
        .await
        .context("reading the cluster's token key timed out")?
        .context("reading the cluster's token key")?
        .0;
        let shared: [u8; 32] = b64
            .decode(shared.trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .context("the cluster's token key in redis is not 32 base64 bytes")?;
        match local {
            Some(l) if l != shared => anyhow::bail!(
                "{} differs from the cluster's token key: remove it to adopt the cluster's",
                dir.join("token.key").display()
            ),
            Some(_) => {}
            None => crate::auth::Tokens::save_key(dir, &shared)?,
        }
        Ok(shared)
    }

    // ---- background -------------------------------------------------------

    /// Starts the publisher, the subscriber and the heartbeat (renewals,
    /// the node's lease, reaping dead nodes).
    pub fn spawn(
        self: &Arc<Self>,
        hub: Arc<Hub>,
        deliveries: mpsc::Sender<Vec<Committed>>,
        stop: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(rx) = self.out_rx.lock().take() {
            tasks.push(tokio::spawn(self.clone().publisher(rx)));
        }
        tasks.push(tokio::spawn(self.clone().subscriber(
            hub.clone(),
            deliveries,
            stop.clone(),
        )));
        tasks.push(tokio::spawn(self.clone().heartbeat(hub, stop)));
        tasks
    }

    /// Publishes queued messages, as many per round trip as are waiting,
    /// in order.
    async fn publisher(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>) {
        let mut buf = Vec::new();
        while rx.recv_many(&mut buf, 512).await > 0 {
            let mut pipe = redis::pipe();
            for (ch, payload) in &buf {
                pipe.cmd("PUBLISH").arg(ch).arg(payload).ignore();
            }
            let mut c = self.conn.clone();
            let n = buf.len() as u64;
            if self
                .background("publish", pipe.exec_async(&mut c))
                .await
                .is_some()
            {
                self.stats.published.fetch_add(n, Ordering::Relaxed);
            } else {
                self.stats.publish_dropped.fetch_add(n, Ordering::Relaxed);
            }
            buf.clear();
        }
    }

    /// Waits (at most `wait`) until what was queued for publishing is sent.
    pub async fn flush(&self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while self.out.capacity() < self.out.max_capacity()
            || self.pending.load(Ordering::Relaxed) > 0
        {
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The last round may still be on the wire.
        let mut c = self.conn.clone();
        let _ = self
            .background("ping", redis::cmd("PING").query_async::<String>(&mut c))
            .await;
    }

    /// Listens on the broadcast channel and this node's channel; reconnects
    /// and resubscribes when the connection drops.
    async fn subscriber(
        self: Arc<Self>,
        hub: Arc<Hub>,
        deliveries: mpsc::Sender<Vec<Committed>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(50);
        let channels = [self.bus(), self.node_channel(&self.node)];
        let mut lost = false;
        loop {
            let connected = tokio::time::timeout(ROUND_TIMEOUT, async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&channels[..]).await?;
                Ok::<_, redis::RedisError>(ps)
            })
            .await;
            match connected {
                Ok(Ok(ps)) => {
                    backoff = Duration::from_millis(50);
                    if lost {
                        tracing::info!("resubscribed to the cluster bus");
                    }
                    self.subscribed.send_replace(true);
                    let mut stream = ps.into_on_message();
                    loop {
                        tokio::select! {
                            m = stream.next() => match m {
                                Some(m) => self.on_message(&hub, &deliveries, m.get_payload_bytes()),
                                None => break,
                            },
                            _ = stop.changed() => return,
                        }
                    }
                    lost = true;
                    self.subscribed.send_replace(false);
                    self.failed("subscribe", &"connection lost; resubscribing");
                }
                Ok(Err(e)) => self.failed("subscribe", &e),
                Err(_) => self.failed("subscribe", &"timed out"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    fn on_message(&self, hub: &Hub, deliveries: &mpsc::Sender<Vec<Committed>>, payload: &[u8]) {
        let msg = match bus::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                self.failed("decode", &e);
                return;
            }
        };
        if msg.node() == self.sender && !matches!(msg, bus::In::Kick { .. }) {
            return; // delivered locally already
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match msg {
            bus::In::Events { events, .. } => {
                let batch = events
                    .into_iter()
                    .map(|e| Committed {
                        event: Arc::new(e),
                        origin: 0,
                        added: Vec::new(),
                        removed: None,
                        members: None,
                    })
                    .collect();
                // Bounded: when this node is this far behind, the events are
                // dropped here and come back as a gap fill with the
                // conversation's next event (or at the devices' next sync).
                if deliveries.try_send(batch).is_err() {
                    self.stats.received_dropped.fetch_add(1, Ordering::Relaxed);
                    self.failed("deliver", &"dispatcher queue full; remote events dropped");
                }
            }
            bus::In::User { user, p, frame, .. } => {
                let f: Utf8Bytes = String::from(frame.get()).into();
                hub.to_user(&user, 0, p.into(), &f);
            }
            bus::In::Members {
                members, p, frame, ..
            } => {
                let f: Utf8Bytes = String::from(frame.get()).into();
                hub.to_members(&members, 0, p.into(), &f);
            }
            bus::In::Presence {
                user,
                online,
                last_seen,
                ..
            } => {
                if !online {
                    hub.note_last_seen(&user, last_seen);
                }
                hub.announce(&user, online, last_seen);
            }
            bus::In::Kick {
                inc,
                conn,
                user,
                device,
                reason,
                ..
            } => {
                if inc == self.inc {
                    hub.kick_conn(&user, &device, conn, reason);
                }
            }
        }
    }

    /// Every `heartbeat_ms / 4`: reap dead nodes; every other round also
    /// renew this node's lease and its devices' entries.
    async fn heartbeat(self: Arc<Self>, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.heartbeat_ms / 4));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut round = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if round.is_multiple_of(2) {
                self.renew(&hub).await;
            }
            round += 1;
            self.reap(&hub).await;
        }
    }

    /// Renews the lease and every local device's entry (pipelined).
    async fn renew(&self, hub: &Hub) {
        let me = self.me();
        let users_key = self.users_key(&me);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key(&format!("alive:{}", me.trim_end_matches('|'))))
            .arg(now_ms())
            .arg("PX")
            .arg(self.heartbeat_ms)
            .ignore();
        pipe.cmd("HSET")
            .arg(self.key("nodes"))
            .arg(me.trim_end_matches('|'))
            .arg(now_ms())
            .ignore();
        pipe.load_script(&self.scripts.renew).ignore();
        let conns = hub.local_devices();
        for chunk in conns.chunks(RENEW_CHUNK) {
            let mut inv = self.scripts.renew.prepare_invoke();
            inv.key(&users_key).arg(self.entry_ttl_ms());
            for (user, device, conn) in chunk {
                inv.key(self.dev_key(user))
                    .arg(device)
                    .arg(self.owner(*conn).prefix())
                    .arg(user);
            }
            pipe.invoke_script(&inv).ignore();
        }
        // The user set outlives the node long enough to be reaped.
        pipe.cmd("PEXPIRE")
            .arg(&users_key)
            .arg((self.heartbeat_ms * 20).max(60_000))
            .ignore();
        let mut c = self.conn.clone();
        let _ = self.background("renew", pipe.exec_async(&mut c)).await;
    }

    /// Finds node incarnations whose lease expired and, once per dead node
    /// across the cluster, removes their entries and announces `offline`
    /// for the users left without a live device.
    async fn reap(&self, hub: &Hub) {
        let nodes_key = self.key("nodes");
        let mut c = self.conn.clone();
        let Some(nodes) = self
            .background(
                "reap",
                redis::cmd("HKEYS")
                    .arg(&nodes_key)
                    .query_async::<Vec<String>>(&mut c),
            )
            .await
        else {
            return;
        };
        let me = self.me();
        let others: Vec<String> = nodes
            .into_iter()
            .filter(|n| format!("{n}|") != me)
            .collect();
        if others.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for n in &others {
            pipe.cmd("EXISTS").arg(self.key(&format!("alive:{n}")));
        }
        let Some(alive) = self
            .background("reap", pipe.query_async::<Vec<bool>>(&mut c))
            .await
        else {
            return;
        };
        for (n, alive) in others.iter().zip(alive) {
            if !alive {
                self.reap_node(hub, n).await;
            }
        }
    }

    async fn reap_node(&self, hub: &Hub, dead: &str) {
        let mut c = self.conn.clone();
        let claimed: Option<Option<String>> = self
            .background(
                "reap",
                redis::cmd("SET")
                    .arg(self.key(&format!("reap:{dead}")))
                    .arg(&self.node)
                    .arg("NX")
                    .arg("PX")
                    .arg(60_000)
                    .query_async(&mut c),
            )
            .await;
        if !matches!(claimed, Some(Some(_))) {
            return; // another node does it (or Redis failed: next round)
        }
        let dead_prefix = format!("{dead}|");
        let users_key = self.users_key(&dead_prefix);
        let Some(users) = self
            .background(
                "reap",
                redis::cmd("SMEMBERS")
                    .arg(&users_key)
                    .query_async::<Vec<String>>(&mut c),
            )
            .await
        else {
            return;
        };
        let now = now_ms();
        let mut offline = 0usize;
        for chunk in users.chunks(RENEW_CHUNK) {
            let mut inv = self.scripts.reap.prepare_invoke();
            inv.arg(&dead_prefix);
            for u in chunk {
                inv.key(self.dev_key(u));
            }
            let Some(live) = self
                .background("reap", inv.invoke_async::<Vec<u64>>(&mut c))
                .await
            else {
                return;
            };
            for (u, n) in chunk.iter().zip(live) {
                if n == 0 {
                    offline += 1;
                    hub.note_last_seen(u, now);
                    hub.announce(u, false, now);
                    self.publish_presence(u, false, now);
                }
            }
        }
        let _ = self
            .background(
                "reap",
                redis::pipe()
                    .cmd("HDEL")
                    .arg(self.key("nodes"))
                    .arg(dead)
                    .ignore()
                    .cmd("DEL")
                    .arg(&users_key)
                    .ignore()
                    .exec_async(&mut c),
            )
            .await;
        self.stats.reaped_nodes.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(node = %dead, users = users.len(), offline, "node lease expired; its devices are offline");
    }

    /// Leaves the cluster at shutdown: waits for unregistrations and
    /// publishes, then drops the lease.
    pub async fn leave(&self) {
        self.flush(Duration::from_secs(3)).await;
        let me = self.me();
        let me = me.trim_end_matches('|');
        let mut c = self.conn.clone();
        let _ = self
            .background(
                "leave",
                redis::pipe()
                    .cmd("DEL")
                    .arg(self.key(&format!("alive:{me}")))
                    .ignore()
                    .cmd("HDEL")
                    .arg(self.key("nodes"))
                    .arg(me)
                    .ignore()
                    .cmd("DEL")
                    .arg(self.users_key(&self.me()))
                    .ignore()
                    .exec_async(&mut c),
            )
            .await;
    }

    /// Waits (at most `wait`) until the subscriber listens; answers whether
    /// it does.
    pub async fn wait_subscribed(&self, wait: Duration) -> bool {
        let mut rx = self.subscribed.subscribe();
        tokio::time::timeout(wait, rx.wait_for(|s| *s))
            .await
            .is_ok()
    }

    /// Counts an unregistration in flight (see [`Cluster::flush`]).
    pub fn begin(self: &Arc<Self>) -> Pending {
        self.pending.fetch_add(1, Ordering::Relaxed);
        Pending(self.clone())
    }
}

/// Deletes every Redis key of the cluster `prefix` on `redis_url` (a
/// cluster retired for good; the tests' throw-away clusters). Blocking;
/// answers how many keys it deleted.
pub fn forget_prefix(redis_url: &str, prefix: &str) -> redis::RedisResult<usize> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_connection()?;
    let pattern = format!("{prefix}:*");
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)?;
        if !keys.is_empty() {
            deleted += redis::cmd("DEL").arg(&keys).query::<usize>(&mut conn)?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// An unregistration in flight; counted down on drop.
pub struct Pending(Arc<Cluster>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
