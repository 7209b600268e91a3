//! Setting up a run over HTTP: bulk account creation through the admin API,
//! logins and conversations for tokenim, in-band registration for XMPP, and
//! opening authenticated connections of either kind. None of this is on
//! the measured path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::Common;
use super::client::{Conn, Tim};
use super::xmpp::Xmpp;

pub const PASSWORD: &str = "bench-password";

/// How long opening one connection (TCP, upgrade or stream, auth) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which server the run loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Tokenim,
    Xmpp,
}

/// Someone a connection can log in as.
#[derive(Clone, Debug)]
pub struct Ident {
    pub name: String,
    /// tokenim: the user id and a session token for device `d1`.
    pub user_id: String,
    pub token: String,
}

/// One tokenim server (a node of a cluster, or the only one).
pub struct Node {
    pub addr: SocketAddr,
    /// The Host header value.
    pub host: String,
    /// The base URL, without a trailing slash.
    pub url: String,
}

/// Everything a scenario needs to reach the server.
pub struct Ctx {
    pub c: Common,
    /// The servers given with --url; connection i goes to node i % len.
    pub nodes: Vec<Node>,
    pub xmpp_addr: SocketAddr,
    pub sources: Vec<IpAddr>,
    pub http: reqwest::Client,
    /// Distinguishes this run's usernames from earlier runs'.
    pub prefix: String,
}

impl Ctx {
    pub async fn new(c: &Common) -> anyhow::Result<Ctx> {
        if c.url.is_empty() {
            bail!("--url: no server given");
        }
        let mut nodes = Vec::new();
        for url in &c.url {
            let (addr, host) = super::net::resolve_url(url).await?;
            nodes.push(Node {
                addr,
                host,
                url: url.trim_end_matches('/').to_string(),
            });
        }
        let xmpp_addr: SocketAddr = tokio::net::lookup_host(&c.xmpp_addr)
            .await
            .with_context(|| format!("resolving {}", c.xmpp_addr))?
            .find(|a| a.is_ipv4())
            .context("--xmpp-addr has no IPv4 address")?;
        if !xmpp_addr.ip().is_loopback() {
            bail!("--xmpp-addr must be a loopback address");
        }
        let sources = super::net::parse_sources(&c.source_addrs)?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(c.setup_concurrency)
            .timeout(Duration::from_secs(120))
            .build()?;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let prefix = format!("b{}", radix36(ms as u64 ^ std::process::id() as u64));
        Ok(Ctx {
            c: c.clone(),
            nodes,
            xmpp_addr,
            sources,
            http,
            prefix,
        })
    }

    pub fn source(&self, i: usize) -> IpAddr {
        self.sources[i % self.sources.len()]
    }

    /// The URL of `path` on node `i % nodes`.
    fn url(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.nodes[i % self.nodes.len()].url)
    }

    /// Usernames `{prefix}{role}{i}` for i in 0..n.
    pub fn names(&self, role: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{}{role}{i}", self.prefix))
            .collect()
    }

    /// Creates the accounts and logs each in (tokenim), or registers them
    /// in band (XMPP). `login` says which of them need a session.
    pub async fn idents(
        &self,
        names: Vec<String>,
        login: impl Fn(usize) -> bool,
    ) -> anyhow::Result<Vec<Ident>> {
        let mut out: Vec<Ident> = names
            .into_iter()
            .map(|name| Ident {
                name,
                user_id: String::new(),
                token: String::new(),
            })
            .collect();
        let t = std::time::Instant::now();
        match self.c.target {
            Target::Tokenim => {
                self.create_users(&mut out).await?;
                let created = t.elapsed();
                let wanted: Vec<usize> = (0..out.len()).filter(|&i| login(i)).collect();
                self.login_all(&mut out, &wanted).await?;
                self.note(format!(
                    "setup: {} accounts created in {:.2} s, {} logged in in {:.2} s",
                    out.len(),
                    created.as_secs_f64(),
                    wanted.len(),
                    (t.elapsed() - created).as_secs_f64()
                ));
            }
            Target::Xmpp => {
                self.register_xmpp(&out).await?;
                self.note(format!(
                    "setup: {} xmpp accounts registered in {:.2} s",
                    out.len(),
                    t.elapsed().as_secs_f64()
                ));
            }
        }
        Ok(out)
    }

    pub fn note(&self, s: String) {
        if !self.c.quiet {
            eprintln!("{s}");
        }
    }

    async fn create_users(&self, ids: &mut [Ident]) -> anyhow::Result<()> {
        let admin = self
            .c
            .admin_token
            .as_deref()
            .context("--admin-token is needed to create the bench's users")?;
        for chunk in ids.chunks_mut(50_000) {
            let users: Vec<Value> = chunk
                .iter()
                .map(|i| json!({"username": i.name, "password": PASSWORD}))
                .collect();
            let r = self
                .http
                .post(self.url(0, "/v1/admin/users"))
                .bearer_auth(admin)
                .json(&json!({ "users": users }))
                .send()
                .await
                .context("POST /v1/admin/users")?;
            let status = r.status();
            let body: Value = r.json().await.context("admin users reply")?;
            if !status.is_success() {
                bail!("POST /v1/admin/users: {status} {body}");
            }
            let got = body["user_ids"].as_array().context("no user_ids")?;
            if got.len() != chunk.len() {
                bail!("asked for {} users, got {} ids", chunk.len(), got.len());
            }
            for (i, id) in chunk.iter_mut().zip(got) {
                i.user_id = id
                    .as_str()
                    .with_context(|| format!("user {} was not created", i.name))?
                    .to_string();
            }
        }
        Ok(())
    }

    /// POSTs to node `node % nodes`, with retries on 429 (after
    /// `retry_after_ms`) and on transport errors.
    async fn post(
        &self,
        node: usize,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut req = self.http.post(self.url(node, path)).json(body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            match req.send().await {
                Ok(r) => {
                    let status = r.status();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    if status.is_success() {
                        return Ok(v);
                    }
                    if status.as_u16() == 429 && tries < 20 {
                        let ms = v["error"]["retry_after_ms"].as_u64().unwrap_or(100);
                        tokio::time::sleep(Duration::from_millis(ms.min(2000))).await;
                        continue;
                    }
                    bail!("POST {path}: {status} {v}");
                }
                Err(e) if tries < 5 => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("POST {path}")),
            }
        }
    }

    async fn login_all(&self, ids: &mut [Ident], which: &[usize]) -> anyhow::Result<()> {
        let done = Arc::new(AtomicU64::new(0));
        let progress = self.progress("setup: logins", which.len() as u64, done.clone());
        let results: Vec<anyhow::Result<(usize, String, String)>> =
            futures_util::stream::iter(which.iter().copied())
                .map(|i| {
                    let name = ids[i].name.clone();
                    let done = done.clone();
                    async move {
                        let body = json!({"username": name, "password": PASSWORD,
                                          "device_id": "d1", "platform": "bot"});
                        let v = self.post(i, "/v1/sessions", None, &body).await?;
                        done.fetch_add(1, Ordering::Relaxed);
                        let token = v["token"].as_str().context("no token")?.to_string();
                        let uid = v["user_id"].as_str().context("no user_id")?.to_string();
                        Ok((i, token, uid))
                    }
                })
                .buffer_unordered(self.c.setup_concurrency)
                .collect()
                .await;
        progress.abort();
        for r in results {
            let (i, token, uid) = r?;
            ids[i].token = token;
            ids[i].user_id = uid;
        }
        Ok(())
    }

    async fn register_xmpp(&self, ids: &[Ident]) -> anyhow::Result<()> {
        let done = Arc::new(AtomicU64::new(0));
        let progress = self.progress("setup: xmpp registrations", ids.len() as u64, done.clone());
        let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(ids.iter().enumerate())
            .map(|(i, id)| {
                let done = done.clone();
                async move {
                    let reg = Xmpp::register(
                        self.xmpp_addr,
                        self.source(i),
                        &self.c.xmpp_host,
                        &id.name,
                        PASSWORD,
                    );
                    tokio::time::timeout(CONNECT_TIMEOUT, reg)
                        .await
                        .map_err(|_| anyhow::anyhow!("registering {}: no answer", id.name))??;
                    done.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            })
            .buffer_unordered(self.c.setup_concurrency)
            .collect()
            .await;
        progress.abort();
        results.into_iter().collect()
    }

    /// Creates conversations concurrently: `make(i)` gives the creator's
    /// token and the request body of conversation i. Returns the conv_ids.
    pub async fn conversations(
        &self,
        n: usize,
        make: impl Fn(usize) -> (String, Value),
    ) -> anyhow::Result<Vec<String>> {
        let t = std::time::Instant::now();
        let done = Arc::new(AtomicU64::new(0));
        let progress = self.progress("setup: conversations", n as u64, done.clone());
        let results: Vec<anyhow::Result<String>> = futures_util::stream::iter(0..n)
            .map(|i| {
                let (token, body) = make(i);
                let done = done.clone();
                async move {
                    let v = self
                        .post(i, "/v1/conversations", Some(&token), &body)
                        .await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    Ok(v["conv_id"].as_str().context("no conv_id")?.to_string())
                }
            })
            .buffered(self.c.setup_concurrency.min(32))
            .collect()
            .await;
        progress.abort();
        let out = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        self.note(format!(
            "setup: {n} conversations created in {:.2} s",
            t.elapsed().as_secs_f64()
        ));
        Ok(out)
    }

    /// Opens an authenticated connection as `id` (the i-th connection of
    /// the run, which picks its source address and its node, i % nodes).
    /// `sm`: for XMPP, enable stream-management acks (senders).
    pub async fn open(&self, id: &Ident, i: usize, sm: bool, rcap: usize) -> anyhow::Result<Conn> {
        self.open_on(i, id, i, sm, rcap).await
    }

    /// `open`, on node `node % nodes`.
    pub async fn open_on(
        &self,
        node: usize,
        id: &Ident,
        i: usize,
        sm: bool,
        rcap: usize,
    ) -> anyhow::Result<Conn> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.open_now(node, id, i, sm, rcap))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?} while connecting"))?
    }

    async fn open_now(
        &self,
        node: usize,
        id: &Ident,
        i: usize,
        sm: bool,
        rcap: usize,
    ) -> anyhow::Result<Conn> {
        match self.c.target {
            Target::Tokenim => {
                let n = &self.nodes[node % self.nodes.len()];
                Ok(Conn::Tim(
                    Tim::open(n.addr, self.source(i), &n.host, &id.token, rcap).await?,
                ))
            }
            Target::Xmpp => Ok(Conn::Xmpp(
                Xmpp::open(
                    self.xmpp_addr,
                    self.source(i),
                    &self.c.xmpp_host,
                    &id.name,
                    PASSWORD,
                    sm,
                )
                .await?,
            )),
        }
    }

    /// Opens connections for all `ids` (connection index = base +
    /// position, which also picks the node) with `connect_concurrency` in
    /// flight; tokenim connections also wait for an empty `sync` so the
    /// server has registered them for pushes.
    pub async fn open_all(
        &self,
        what: &str,
        ids: &[Ident],
        sm: impl Fn(usize) -> bool,
        base: usize,
    ) -> anyhow::Result<Vec<Conn>> {
        self.open_all_on(what, ids, sm, base, |i| base + i).await
    }

    /// `open_all`, with the i-th of `ids` on node `node(i) % nodes`.
    pub async fn open_all_on(
        &self,
        what: &str,
        ids: &[Ident],
        sm: impl Fn(usize) -> bool,
        base: usize,
        node: impl Fn(usize) -> usize,
    ) -> anyhow::Result<Vec<Conn>> {
        let t = std::time::Instant::now();
        let done = Arc::new(AtomicU64::new(0));
        let progress = self.progress(what, ids.len() as u64, done.clone());
        let results: Vec<anyhow::Result<Conn>> = futures_util::stream::iter(ids.iter().enumerate())
            .map(|(i, id)| {
                let done = done.clone();
                let sm = sm(i);
                let node = node(i);
                async move {
                    let mut c = self.open_on(node, id, base + i, sm, 4096).await?;
                    if let Conn::Tim(t) = &mut c {
                        t.sync(None, |_| {}).await?;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    Ok(c)
                }
            })
            .buffered(self.c.connect_concurrency)
            .collect()
            .await;
        progress.abort();
        let out = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        self.note(format!(
            "{what}: {} connected in {:.2} s",
            out.len(),
            t.elapsed().as_secs_f64()
        ));
        Ok(out)
    }

    /// Prints `label: done/total` to stderr every second until aborted.
    pub fn progress(
        &self,
        label: &str,
        total: u64,
        done: Arc<AtomicU64>,
    ) -> tokio::task::JoinHandle<()> {
        let label = label.to_string();
        let quiet = self.c.quiet;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                if !quiet {
                    eprintln!("{label}: {}/{total}", done.load(Ordering::Relaxed));
                }
            }
        })
    }
}

fn radix36(mut v: u64) -> String {
    let mut s = Vec::new();
    while v > 0 {
        s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(v % 36) as usize]);
        v /= 36;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}
