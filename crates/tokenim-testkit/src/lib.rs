//! Test harness for tokenim: starts a real server (in-process on an
//! ephemeral port, with its own data directory) and talks to it over real
//! HTTP and WebSocket connections. Used by every integration test.
//!
//! The storage backend comes from `TOKENIM_TEST_DATABASE` (`embedded`, the
//! default, `postgres` or `mysql`; see [`db`]): on the SQL backends every
//! [`TestServer`] gets a fresh database of its own, kept across
//! [`TestServer::restart`] and dropped with the server. The same tests thus
//! run unchanged on every backend; `scripts/test.sh` runs them on all three.
//!
//! No test is skipped on any backend. The only tests allowed to run on the
//! embedded engine alone are those inherently about its files (opening or
//! inspecting the data directory); there are none among the suites over
//! this crate: `protocol`, `groups`, `prop_delivery` and `tls` here,
//! `tokenim/tests/crash.rs` and `cli.rs`, `tokenim-client/tests/
//! reliability.rs` all run unchanged on every backend.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokenim_server::{Config, Server};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod db;
pub use db::{Backend, TestDatabase, backend};

/// How long a test waits for an expected frame or response.
pub const WAIT: Duration = Duration::from_secs(10);

/// Installs the process-wide rustls provider (ring) once.
pub fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A TCP port that was free a moment ago (for servers run as processes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// A configuration for tests: port 0, cheap Argon2, generous rate limits.
pub fn test_config(data_dir: &Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().expect("valid"),
        data_dir: data_dir.to_path_buf(),
        argon2_memory_kib: 8,
        argon2_iterations: 1,
        admin_token: Some("test-admin".into()),
        ..Config::default()
    };
    c.limits.login_rate_per_min = 100_000;
    c.limits.login_burst = 100_000;
    c.limits.send_rate_per_sec = 100_000;
    c.limits.send_burst = 100_000;
    c
}

/// A running in-process server, its data directory and (on the SQL
/// backends) its database.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub http: String,
    pub ws: String,
    server: Option<Server>,
    dir: Arc<tempfile::TempDir>,
    /// Dropped (and with it the database) after the server is told to stop.
    db: Option<Arc<TestDatabase>>,
    pub config: Config,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts with a test configuration changed by `f`, on the run's
    /// backend (a fresh database when it is PostgreSQL or MySQL).
    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
        init_crypto();
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut cfg = test_config(dir.path());
        let db = TestDatabase::for_run().await.map(Arc::new);
        if let Some(db) = &db {
            cfg.database_url = Some(db.url().to_owned());
            cfg.database_pool = db::TEST_POOL;
        }
        f(&mut cfg);
        Self::start_in(dir, db, cfg).await
    }

    async fn start_in(
        dir: Arc<tempfile::TempDir>,
        db: Option<Arc<TestDatabase>>,
        cfg: Config,
    ) -> TestServer {
        let store = tokenim_server::open_store(&cfg).await.expect("store");
        let server = tokenim_server::start(cfg.clone(), store)
            .await
            .expect("server starts");
        let addr = server.addr;
        let scheme = if cfg.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let ws_scheme = if cfg.tls_cert.is_some() { "wss" } else { "ws" };
        TestServer {
            addr,
            http: format!("{scheme}://{addr}"),
            ws: format!("{ws_scheme}://{addr}/v1/ws"),
            server: Some(server),
            dir,
            db,
            config: cfg,
        }
    }

    /// The server's data directory (on the SQL backends the timeline is in
    /// the database, not here).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The server's own database on the SQL backends.
    pub fn database(&self) -> Option<&TestDatabase> {
        self.db.as_deref()
    }

    pub fn app(&self) -> &Arc<tokenim_server::state::AppState> {
        &self.server.as_ref().expect("running").app
    }

    /// Stops gracefully (as SIGTERM would).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
    }

    /// Stops gracefully and starts again on the same data directory (or
    /// database) and port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut cfg = self.config.clone();
        cfg.listen = self.addr;
        let fresh = Self::start_in(self.dir.clone(), self.db.clone(), cfg).await;
        *self = fresh;
    }

    pub fn client(&self) -> Http {
        Http::new(&self.http)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.stopper().send(true);
        }
    }
}

/// A response: status and JSON body (`Value::Null` when there is none).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
}

impl Resp {
    /// The error code of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A small HTTP client with an optional bearer token.
#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub token: Option<String>,
    client: reqwest::Client,
}

impl Http {
    pub fn new(base: &str) -> Http {
        init_crypto();
        Http {
            base: base.to_owned(),
            token: None,
            client: reqwest::Client::new(),
        }
    }

    /// A client that trusts `ca_pem` (for TLS tests).
    pub fn with_ca(base: &str, ca_pem: &[u8]) -> Http {
        init_crypto();
        let cert = reqwest::Certificate::from_pem(ca_pem).expect("pem");
        Http {
            base: base.to_owned(),
            token: None,
            client: reqwest::Client::builder()
                .add_root_certificate(cert)
                .build()
                .expect("client"),
        }
    }

    pub fn with_token(&self, token: &str) -> Http {
        Http {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    pub async fn req(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.raw(method, path, body.map(|b| b.to_string().into_bytes()))
            .await
    }

    /// Sends raw bytes as the body.
    pub async fn raw(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut r = self.client.request(m, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        let resp = tokio::time::timeout(WAIT, r.send())
            .await
            .expect("HTTP response in time")
            .expect("HTTP request");
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        let bytes = resp.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Resp {
            status,
            body,
            retry_after,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.req("POST", path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Option<Value>) -> Resp {
        self.req("PUT", path, body).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.req("DELETE", path, None).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.req("PATCH", path, Some(body)).await
    }

    /// Registers `username` (password `password1`); answers the user ID.
    pub async fn register(&self, username: &str) -> String {
        let r = self
            .post(
                "/v1/accounts",
                json!({"username": username, "password": "password1"}),
            )
            .await;
        assert_eq!(r.status, 201, "register {username}: {:?}", r.body);
        r.body["user_id"].as_str().expect("user_id").to_owned()
    }

    /// Logs in; answers a client carrying the token.
    pub async fn login(&self, username: &str, device: &str) -> Http {
        let r = self
            .post(
                "/v1/sessions",
                json!({"username": username, "password": "password1",
                       "device_id": device, "platform": "cli"}),
            )
            .await;
        assert_eq!(r.status, 201, "login {username}: {:?}", r.body);
        self.with_token(r.body["token"].as_str().expect("token"))
    }

    pub fn token(&self) -> &str {
        self.token.as_deref().expect("logged in")
    }

    /// Opens (or finds) the direct conversation with `peer`; answers its ID.
    pub async fn direct(&self, peer: &str) -> String {
        let r = self
            .post("/v1/conversations", json!({"type": "direct", "peer": peer}))
            .await;
        assert!(r.status == 201 || r.status == 200, "{:?}", r.body);
        r.body["conv_id"].as_str().expect("conv_id").to_owned()
    }
}

/// A user with an HTTP client and an ID, for tests.
#[derive(Clone)]
pub struct User {
    pub id: String,
    pub name: String,
    pub http: Http,
}

impl User {
    /// Registers and logs in on `device`.
    pub async fn new(server: &TestServer, name: &str, device: &str) -> User {
        let c = server.client();
        let id = c.register(name).await;
        let http = c.login(name, device).await;
        User {
            id,
            name: name.to_owned(),
            http,
        }
    }

    /// Logs in on another device.
    pub async fn device(&self, server: &TestServer, device: &str) -> User {
        User {
            http: server.client().login(&self.name, device).await,
            ..self.clone()
        }
    }

    pub async fn ws(&self, server: &TestServer) -> Ws {
        Ws::connect_auth(&server.ws, self.http.token()).await
    }

    /// Opens (or finds) the direct conversation with `peer`.
    pub async fn direct(&self, peer: &User) -> String {
        self.http.direct(&peer.id).await
    }

    pub async fn group(&self, title: &str, members: &[&User]) -> String {
        let ids: Vec<&str> = members.iter().map(|u| u.id.as_str()).collect();
        let r = self
            .http
            .post(
                "/v1/conversations",
                json!({"type": "group", "title": title, "members": ids}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["conv_id"].as_str().expect("conv_id").to_owned()
    }
}

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw WebSocket client that speaks JSON frames.
pub struct Ws {
    pub stream: WsStream,
    /// Frames read while waiting for another one, handed out first.
    backlog: std::collections::VecDeque<Value>,
}

/// How a socket ended, as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    NoCode,
}

impl Ws {
    /// Wraps a socket opened by the test itself (e.g. with extra headers).
    pub fn from_stream(stream: WsStream) -> Ws {
        Ws {
            stream,
            backlog: Default::default(),
        }
    }

    pub async fn connect(url: &str) -> Ws {
        init_crypto();
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        Ws {
            stream,
            backlog: Default::default(),
        }
    }

    /// Connects with a tiny kernel receive buffer, authenticates, and then
    /// lets the caller not read: a slow consumer.
    pub async fn connect_slow(addr: std::net::SocketAddr, url: &str, token: &str) -> Ws {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let tcp = sock.connect(addr).await.expect("connect");
        let (stream, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .expect("handshake");
        let mut ws = Ws {
            stream,
            backlog: Default::default(),
        };
        ws.send(json!({"type": "auth", "token": token})).await;
        assert_eq!(ws.recv().await["type"], "auth_ok");
        ws
    }

    /// Connects with a TLS configuration (for TLS tests).
    pub async fn connect_tls(url: &str, tls: Arc<rustls::ClientConfig>) -> Ws {
        init_crypto();
        let (stream, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async_tls_with_config(
                url,
                None,
                false,
                Some(tokio_tungstenite::Connector::Rustls(tls)),
            ),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        Ws {
            stream,
            backlog: Default::default(),
        }
    }

    /// Connects and authenticates; panics unless `auth_ok` comes back.
    pub async fn connect_auth(url: &str, token: &str) -> Ws {
        let mut ws = Ws::connect(url).await;
        ws.send(json!({"type": "auth", "token": token})).await;
        let ok = ws.recv().await;
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        ws
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    pub async fn send_text(&mut self, t: String) {
        self.stream
            .send(Message::Text(t.into()))
            .await
            .expect("send frame");
    }

    /// The next JSON frame (panics on timeout or close).
    pub async fn recv(&mut self) -> Value {
        match self.try_recv(WAIT).await {
            Ok(v) => v,
            Err(e) => panic!("expected a frame: {e}"),
        }
    }

    /// The next JSON frame, or why there is none.
    pub async fn try_recv(&mut self, wait: Duration) -> anyhow::Result<Value> {
        if let Some(v) = self.backlog.pop_front() {
            return Ok(v);
        }
        loop {
            let m = tokio::time::timeout(wait, self.stream.next())
                .await
                .context("timed out waiting for a frame")?;
            match m {
                None => bail!("socket ended"),
                Some(Err(e)) => bail!("socket error: {e}"),
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
                Some(Ok(Message::Close(c))) => {
                    bail!("closed with {:?}", c.map(|c| u16::from(c.code)))
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads until a frame of type `ty` (others are kept for later `recv`s).
    pub async fn expect(&mut self, ty: &str) -> Value {
        self.expect_where(|v| v["type"] == ty).await
    }

    /// Reads until a frame matching `pred`; other frames are kept in order.
    pub async fn expect_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(pos) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(pos).expect("position is valid");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = tokio::time::timeout(left, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("timed out; kept frames: {:?}", self.backlog));
            let v: Value = match m {
                Some(Ok(Message::Text(t))) => serde_json::from_str(&t).expect("JSON frame"),
                Some(Ok(Message::Close(c))) => panic!("closed: {c:?}; kept {:?}", self.backlog),
                None | Some(Err(_)) => panic!("socket ended; kept {:?}", self.backlog),
                Some(Ok(_)) => continue,
            };
            if pred(&v) {
                return v;
            }
            self.backlog.push_back(v);
        }
    }

    /// Takes the frames kept while waiting for others, oldest first.
    pub fn take_kept(&mut self) -> Vec<Value> {
        self.backlog.drain(..).collect()
    }

    /// Drops kept frames.
    pub fn clear(&mut self) {
        self.backlog.clear();
    }

    /// Reads until the server closes; answers the close code. Text frames
    /// read meanwhile are kept.
    pub async fn closed(&mut self) -> Closed {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Err(_) => panic!("the socket was not closed in time"),
                Ok(None) | Ok(Some(Err(_))) => return Closed::NoCode,
                Ok(Some(Ok(Message::Close(c)))) => {
                    return c
                        .map(|c| Closed::Code(c.code.into()))
                        .unwrap_or(Closed::NoCode);
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Ok(v) = serde_json::from_str(&t) {
                        self.backlog.push_back(v);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Sends a text message and waits for its `send_ack` (or error).
    pub async fn send_msg(&mut self, conv: &str, cmid: &str, text: &str) -> Value {
        self.send(json!({"type": "send", "id": cmid, "conv_id": conv,
                         "client_msg_id": cmid, "content": {"type": "text", "text": text}}))
            .await;
        self.expect_where(|v| v["id"] == cmid && (v["type"] == "send_ack" || v["type"] == "error"))
            .await
    }

    /// Syncs (following `has_more`) and answers every event returned, per
    /// conversation, ascending, starting from `cursors`.
    pub async fn sync_all(
        &mut self,
        cursors: &mut std::collections::BTreeMap<String, u64>,
    ) -> Vec<Value> {
        let mut all = Vec::new();
        for round in 0..1000 {
            let cs: Vec<Value> = cursors
                .iter()
                .map(|(c, s)| json!({"conv_id": c, "after_seq": s}))
                .collect();
            let id = format!("sync-{round}");
            self.send(json!({"type": "sync", "id": id, "limit": 500, "cursors": cs}))
                .await;
            let r = self
                .expect_where(|v| v["type"] == "sync_result" && v["id"] == id)
                .await;
            for c in r["conversations"].as_array().expect("conversations") {
                let conv = c["conv_id"].as_str().expect("conv_id").to_owned();
                for e in c["events"].as_array().expect("events") {
                    cursors.insert(conv.clone(), e["seq"].as_u64().expect("seq"));
                    all.push(e.clone());
                }
            }
            if r["has_more"] != true {
                break;
            }
        }
        all
    }
}

/// Waits for a `tokenim serve` child (started with standard output piped)
/// to log that it is listening, then keeps draining its log so it never
/// blocks on a full pipe. Panics when it exits first or takes over [`WAIT`].
pub async fn wait_listening(child: &mut tokio::process::Child) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let out = child.stdout.take().expect("the child's stdout is piped");
    let mut lines = BufReader::new(out).lines();
    let ready = tokio::time::timeout(WAIT, async {
        while let Some(l) = lines.next_line().await.expect("read the log") {
            if l.contains("listening") {
                return true;
            }
        }
        false
    })
    .await
    .expect("the server started in time");
    assert!(ready, "the server exited before listening");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}
