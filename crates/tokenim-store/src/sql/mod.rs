//! The SQL engines: PostgreSQL and MySQL/MariaDB behind one implementation
//! (sqlx's `Any` driver with runtime queries; the few differences between
//! the dialects are in [`Dialect`]).
//!
//! Timeline writes go through writer tasks ("shards", by conversation) that
//! group queued appends into one transaction each: the conversations' rows
//! are locked (`SELECT … FOR UPDATE`, in ID order), seqs are assigned from
//! `last_seq` under that lock, and the events, dedup records, members and
//! new positions are written before one `COMMIT`. Nodes sharing the
//! database therefore serialise per conversation: when seq N+1 commits, seq
//! N has committed, so a conversation's seqs stay gap-free and unique
//! whichever nodes write. Everything else is a plain statement or a short
//! transaction on the pool.
//!
//! long: the one `Store` impl for both SQL dialects: every read, and the
//! account and device writes that are one statement or one short
//! transaction. The timeline writer is apart (`writer.rs`), and so are the
//! multi-step writes of the server API (`users.rs`) and push registrations
//! (`push.rs`); splitting the rest by table would scatter one trait impl
//! over files.

mod push;
mod schema;
mod users;
mod writer;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use tokenim_core::Error;
use tokenim_proto::{ConvType, Event, Role, decode_event};
use tokio::sync::{mpsc, oneshot};

use crate::*;

pub use schema::latest as latest_schema;

/// The SQL dialect of a database URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    MySql,
}

impl Dialect {
    /// The dialect of `url` and the URL as sqlx takes it.
    pub fn of(url: &str) -> StoreResult<(Dialect, String)> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            StoreError::Engine("a database URL looks like postgres://… or mysql://…".into())
        })?;
        match scheme {
            "postgres" | "postgresql" => Ok((Dialect::Postgres, url.to_owned())),
            "mysql" | "mariadb" => Ok((Dialect::MySql, format!("mysql://{rest}"))),
            other => Err(StoreError::Engine(format!(
                "unsupported database {other:?}: use postgres://… or mysql://…"
            ))),
        }
    }

    /// `sql` with its `?` placeholders written as the dialect wants them.
    pub(crate) fn sql(self, sql: &str) -> String {
        match self {
            Dialect::MySql => sql.to_owned(),
            Dialect::Postgres => {
                let mut out = String::with_capacity(sql.len() + 16);
                let mut n = 0;
                for ch in sql.chars() {
                    if ch == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(ch);
                    }
                }
                out
            }
        }
    }

    /// `INSERT INTO table (cols) VALUES (?, …), … ` for `rows` rows, updating
    /// `update` columns when the key exists (or ignoring the row when
    /// `update` is empty).
    pub(crate) fn upsert(
        self,
        table: &str,
        cols: &[&str],
        key: &[&str],
        update: &[&str],
        rows: usize,
    ) -> String {
        let one = format!("({})", vec!["?"; cols.len()].join(", "));
        let values = vec![one; rows].join(", ");
        let cols_s = cols.join(", ");
        match self {
            Dialect::Postgres => {
                let action = if update.is_empty() {
                    "DO NOTHING".to_owned()
                } else {
                    let sets: Vec<String> = update
                        .iter()
                        .map(|c| format!("{c} = EXCLUDED.{c}"))
                        .collect();
                    format!("DO UPDATE SET {}", sets.join(", "))
                };
                self.sql(&format!(
                    "INSERT INTO {table} ({cols_s}) VALUES {values} ON CONFLICT ({}) {action}",
                    key.join(", ")
                ))
            }
            Dialect::MySql => {
                if update.is_empty() {
                    format!("INSERT IGNORE INTO {table} ({cols_s}) VALUES {values}")
                } else {
                    let sets: Vec<String> = update
                        .iter()
                        .map(|c| format!("{c} = VALUES({c})"))
                        .collect();
                    format!(
                        "INSERT INTO {table} ({cols_s}) VALUES {values} ON DUPLICATE KEY UPDATE {}",
                        sets.join(", ")
                    )
                }
            }
        }
    }
}

/// A database URL with its password hidden, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub(crate) fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// `?, ?, …` with `n` placeholders.
pub(crate) fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

pub(crate) fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

pub(crate) fn enum_parse<T: DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| engine(format!("unknown stored value {s:?}")))
}

/// A text column that may be NULL. MySQL reports `TEXT` columns as BLOBs
/// (sqlx's `Any` then refuses `String`): those are read as bytes.
pub(crate) fn opt_text(r: &AnyRow, i: usize) -> StoreResult<Option<String>> {
    match r.try_get::<Option<String>, _>(i) {
        Ok(v) => Ok(v),
        Err(_) => match r.try_get::<Option<Vec<u8>>, _>(i).map_err(engine)? {
            Some(b) => String::from_utf8(b).map(Some).map_err(engine),
            None => Ok(None),
        },
    }
}

/// The first column of every row, as text IDs.
pub(super) fn first_strings(rows: &[AnyRow]) -> StoreResult<Vec<String>> {
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(engine))
        .collect()
}

pub(crate) fn text(r: &AnyRow, i: usize) -> StoreResult<String> {
    opt_text(r, i)?.ok_or_else(|| engine(format!("column {i} is NULL")))
}

/// Most rows in one multi-row statement (stays far below both engines'
/// limit of 65,535 bound parameters).
pub(crate) const CHUNK: usize = 500;

/// Joins a conversation `c` to its last event `e`.
pub(crate) const LAST_EVENT: &str =
    "LEFT JOIN events e ON e.conv_id = c.conv_id AND e.seq = c.last_seq";

/// Columns of a conversation row, then the body of its last event.
pub(crate) const CONV_COLS: &str = "c.conv_id, c.ty, c.title, c.created_at, \
    c.only_admins_send, c.pair_a, c.pair_b, c.last_seq, c.last_ts, c.msg_count, \
    c.member_count, c.members_ver";

pub(crate) const MEMBER_COLS: &str = "m.user_id, m.role, m.muted_until, m.joined_after, \
    m.read_seq, m.read_count, m.notify_level, m.notify_until";

/// A conversation from `CONV_COLS` at `at` (and, when `with_last`, the last
/// event's body right after them).
pub(crate) fn conv_from_row(r: &AnyRow, at: usize, with_last: bool) -> StoreResult<ConvMeta> {
    let g = |i: usize| r.try_get::<i64, _>(at + i).map_err(engine);
    let pair_a: Option<String> = r.try_get(at + 5).map_err(engine)?;
    let pair_b: Option<String> = r.try_get(at + 6).map_err(engine)?;
    let last_event = if with_last {
        let body = opt_text(r, at + 12)?;
        match body {
            Some(b) => Some(Arc::new(decode_event(b.as_bytes()).map_err(engine)?)),
            None => None,
        }
    } else {
        None
    };
    Ok(ConvMeta {
        conv_id: r.try_get(at).map_err(engine)?,
        ty: enum_parse::<ConvType>(&r.try_get::<String, _>(at + 1).map_err(engine)?)?,
        title: opt_text(r, at + 2)?,
        created_at: g(3)?,
        only_admins_send: g(4)? != 0,
        pair: pair_a.zip(pair_b),
        last_seq: g(7)? as u64,
        last_ts: g(8)?,
        msg_count: g(9)? as u64,
        member_count: g(10)? as u64,
        last_event,
    })
}

pub(crate) fn member_from_row(r: &AnyRow, at: usize) -> StoreResult<Member> {
    let g = |i: usize| r.try_get::<i64, _>(at + i).map_err(engine);
    Ok(Member {
        user_id: r.try_get(at).map_err(engine)?,
        role: enum_parse::<Role>(&r.try_get::<String, _>(at + 1).map_err(engine)?)?,
        muted_until: r.try_get(at + 2).map_err(engine)?,
        joined_after: g(3)? as u64,
        read_seq: g(4)? as u64,
        read_count: g(5)? as u64,
        notify_level: match r.try_get::<Option<String>, _>(at + 6).map_err(engine)? {
            Some(l) => enum_parse(&l)?,
            None => Default::default(),
        },
        notify_until: r.try_get(at + 7).map_err(engine)?,
    })
}

pub(super) fn user_from_row(r: &AnyRow) -> StoreResult<User> {
    Ok(User {
        user_id: r.try_get(0).map_err(engine)?,
        username: r.try_get(1).map_err(engine)?,
        display_name: text(r, 2)?,
        password_hash: opt_text(r, 3)?,
        created_at: r.try_get(4).map_err(engine)?,
        avatar_url: opt_text(r, 5)?,
        metadata: opt_text(r, 6)?,
        deactivated: r.try_get::<i64, _>(7).map_err(engine)? != 0,
    })
}

fn session_from_row(r: &AnyRow) -> StoreResult<Session> {
    Ok(Session {
        session_id: r.try_get(0).map_err(engine)?,
        user_id: r.try_get(1).map_err(engine)?,
        device_id: r.try_get(2).map_err(engine)?,
        created_at: r.try_get(3).map_err(engine)?,
        expires_at: r.try_get(4).map_err(engine)?,
    })
}

fn device_from_row(r: &AnyRow) -> StoreResult<Device> {
    let provider: Option<String> = r.try_get(5).map_err(engine)?;
    let token = opt_text(r, 6)?;
    let environment: Option<String> = r.try_get(7).map_err(engine)?;
    let p256dh = opt_text(r, 8)?;
    let auth = opt_text(r, 9)?;
    Ok(Device {
        user_id: r.try_get(0).map_err(engine)?,
        device_id: r.try_get(1).map_err(engine)?,
        platform: r.try_get(2).map_err(engine)?,
        last_seen: r.try_get(3).map_err(engine)?,
        synced_before: r.try_get::<i64, _>(4).map_err(engine)? != 0,
        push: provider.zip(token).map(|(provider, token)| PushTarget {
            provider,
            token,
            environment,
            p256dh,
            auth,
        }),
        push_last: None,
    })
}

pub(super) const USER_SELECT: &str = "SELECT user_id, username, display_name, password_hash, created_at, \
     avatar_url, metadata, deactivated FROM users";

const DEVICE_COLS: &str = "user_id, device_id, platform, last_seen, synced_before, \
    push_provider, push_token, push_environment, push_p256dh, push_auth";

/// Opens a pool on `url` (MySQL sessions run at READ COMMITTED, as
/// PostgreSQL does by default, so a locked re-read sees the latest commit).
async fn pool(url: &str, size: u32) -> StoreResult<(Dialect, AnyPool)> {
    sqlx::any::install_default_drivers();
    let (dialect, url) = Dialect::of(url)?;
    let mut opts = AnyPoolOptions::new()
        .max_connections(size.max(1))
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(10));
    if dialect == Dialect::MySql {
        opts = opts.after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await?;
                Ok(())
            })
        });
    }
    let pool = opts.connect(&url).await.map_err(engine)?;
    Ok((dialect, pool))
}

/// Applies the migrations `url`'s database lacks; answers the versions
/// applied now. Safe to run from several nodes at once.
pub async fn migrate(url: &str) -> StoreResult<Vec<i64>> {
    let (d, pool) = pool(url, 2).await?;
    let out = migrate_pool(d, &pool).await;
    pool.close().await;
    out
}

async fn migrate_pool(d: Dialect, pool: &AnyPool) -> StoreResult<Vec<i64>> {
    let mut conn = pool.acquire().await.map_err(engine)?;
    // A session-level lock: one node migrates, the others wait and find
    // nothing left to do.
    let lock = match d {
        Dialect::Postgres => "SELECT pg_advisory_lock(7406253841)",
        Dialect::MySql => "SELECT GET_LOCK('tokenim_migrate', 120)",
    };
    conn.execute(lock).await.map_err(engine)?;
    let result = async {
        conn.execute(
            "CREATE TABLE IF NOT EXISTS tokenim_migrations (
                version BIGINT NOT NULL PRIMARY KEY,
                name VARCHAR(200) NOT NULL,
                applied_at BIGINT NOT NULL)",
        )
        .await
        .map_err(engine)?;
        let rows = sqlx::query("SELECT version FROM tokenim_migrations")
            .fetch_all(&mut *conn)
            .await
            .map_err(engine)?;
        let mut have = Vec::new();
        for r in rows {
            have.push(r.try_get::<i64, _>(0).map_err(engine)?);
        }
        if let Some(newest) = have.iter().max()
            && *newest > schema::latest()
        {
            return Err(engine(format!(
                "the database schema is version {newest}, newer than this binary's {}; \
                 upgrade tokenim",
                schema::latest()
            )));
        }
        let mut applied = Vec::new();
        for m in schema::MIGRATIONS {
            if have.contains(&m.version) {
                continue;
            }
            for stmt in m.statements(d) {
                conn.execute(*stmt)
                    .await
                    .map_err(|e| engine(format!("migration {} ({}): {e}", m.version, m.name)))?;
            }
            sqlx::query(&d.sql(
                "INSERT INTO tokenim_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            ))
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms())
            .execute(&mut *conn)
            .await
            .map_err(engine)?;
            tracing::info!(
                version = m.version,
                name = m.name,
                "schema migration applied"
            );
            applied.push(m.version);
        }
        Ok(applied)
    }
    .await;
    let unlock = match d {
        Dialect::Postgres => "SELECT pg_advisory_unlock(7406253841)",
        Dialect::MySql => "SELECT RELEASE_LOCK('tokenim_migrate')",
    };
    if let Err(e) = conn.execute(unlock).await {
        // The lock is the session's: closing the connection releases it.
        tracing::warn!(error = %e, "releasing the migration lock");
        conn.close_on_drop();
    }
    result
}

use tokenim_core::clock::now_ms;

/// A conversation's member list as last read, with the version it had.
pub(crate) type MemberCache = HashMap<String, (i64, Arc<[String]>)>;

/// Remembers a member list (dropping everything when full).
pub(crate) fn remember(cache: &Mutex<MemberCache>, conv_id: &str, ver: i64, ids: Arc<[String]>) {
    let mut c = cache.lock();
    if c.len() >= MEMBER_CACHE && !c.contains_key(conv_id) {
        c.clear();
    }
    c.insert(conv_id.to_owned(), (ver, ids));
}

/// The PostgreSQL / MySQL store.
pub struct SqlStore {
    d: Dialect,
    pool: AnyPool,
    shards: RwLock<Vec<mpsc::UnboundedSender<writer::Job>>>,
    shard_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    sink: Arc<Mutex<Option<Arc<dyn EventSink>>>>,
    forwarder: Mutex<Option<std::thread::JoinHandle<()>>>,
    members: Arc<Mutex<MemberCache>>,
}

/// Most conversations whose member lists are cached.
const MEMBER_CACHE: usize = 10_000;

impl SqlStore {
    /// Connects (at most `pool` connections), applies pending migrations and
    /// starts the writers.
    pub async fn connect(url: &str, pool_size: u32) -> StoreResult<Arc<dyn Store>> {
        Ok(Arc::new(Self::open(url, pool_size).await?))
    }

    pub async fn open(url: &str, pool_size: u32) -> StoreResult<SqlStore> {
        let (d, pool) = pool(url, pool_size).await?;
        migrate_pool(d, &pool).await?;
        let sink: Arc<Mutex<Option<Arc<dyn EventSink>>>> = Arc::new(Mutex::new(None));
        // Committed batches reach the sink from one plain thread (the sink
        // may block), in each writer's commit order; a writer answers its
        // batch only once the sink has taken it, as the embedded engine does,
        // so an acknowledged event is already on its way to the pushers.
        let (ctx, crx) = std::sync::mpsc::channel::<writer::Handoff>();
        let forwarder = {
            let sink = sink.clone();
            std::thread::Builder::new()
                .name("tokenim-sql-sink".into())
                .spawn(move || {
                    for (batch, taken) in crx {
                        let s = sink.lock().clone();
                        if let Some(s) = s {
                            s.committed(batch);
                        }
                        let _ = taken.send(());
                    }
                })
                .map_err(engine)?
        };
        // Writers: a quarter of the pool, so reads always find connections.
        let n = (pool_size / 4).clamp(1, 8) as usize;
        let members = Arc::new(Mutex::new(HashMap::new()));
        let mut shards = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let w = writer::Shard::new(d, pool.clone(), ctx.clone(), members.clone());
            tasks.push(tokio::spawn(w.run(rx)));
            shards.push(tx);
        }
        Ok(SqlStore {
            d,
            pool,
            shards: RwLock::new(shards),
            shard_tasks: Mutex::new(tasks),
            sink,
            forwarder: Mutex::new(Some(forwarder)),
            members,
        })
    }

    fn q(&self, sql: &str) -> String {
        self.d.sql(sql)
    }

    /// Queues `job` on the writer of its conversation; `false` once the
    /// store is shutting down.
    fn submit(&self, conv_id: &str, job: writer::Job) -> bool {
        let shards = self.shards.read();
        if shards.is_empty() {
            return false;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        conv_id.hash(&mut h);
        let i = (h.finish() % shards.len() as u64) as usize;
        shards[i].send(job).is_ok()
    }

    fn run_job(&self, conv_id: &str, reqs: Vec<Append>, create: Option<ConvMeta>) -> AppendFuture {
        let (tx, rx) = oneshot::channel();
        let sent = self.submit(
            conv_id,
            writer::Job {
                reqs,
                create,
                reply: tx,
            },
        );
        Box::pin(async move {
            if !sent {
                return Err(StoreError::Engine("the store is shutting down".into()));
            }
            rx.await
                .map_err(|_| StoreError::Engine("the writer dropped a job".into()))?
        })
    }

    async fn fetch_conv(&self, conv_id: &str) -> StoreResult<Option<ConvMeta>> {
        let sql =
            format!("SELECT {CONV_COLS}, e.body FROM convs c {LAST_EVENT} WHERE c.conv_id = ?");
        let row = self.row(&sql, &[conv_id]).await?;
        row.map(|r| conv_from_row(&r, 0, true)).transpose()
    }
}

#[async_trait]
impl Store for SqlStore {
    // jobs: stub until the outbound queue lands (branch `jobs`).
    fn set_planner(&self, _planner: Arc<dyn JobPlanner>) {}
    async fn add_jobs(&self, _jobs: Vec<NewJob>, _now_ms: i64) -> StoreResult<Vec<Added>> {
        Err(StoreError::Engine("jobs are not built yet".into()))
    }
    async fn claim_jobs(
        &self,
        _kinds: &[JobKind],
        _owner: &str,
        _now_ms: i64,
        _lease_ms: i64,
        _limit: usize,
    ) -> StoreResult<Vec<Job>> {
        Ok(Vec::new())
    }
    async fn finish_job(
        &self,
        _id: u64,
        _owner: &str,
        _version: u32,
        _outcome: JobOutcome,
        _now_ms: i64,
    ) -> StoreResult<()> {
        Ok(())
    }
    async fn job(&self, _id: u64) -> StoreResult<Option<Job>> {
        Ok(None)
    }
    async fn jobs(
        &self,
        _kind: JobKind,
        _status: JobStatus,
        _after: Option<u64>,
        _limit: usize,
    ) -> StoreResult<Vec<Job>> {
        Ok(Vec::new())
    }
    async fn retry_job(
        &self,
        _id: u64,
        _kind: JobKind,
        _now_ms: i64,
        _expires_at: i64,
    ) -> StoreResult<bool> {
        Ok(false)
    }
    async fn drop_jobs(&self, _kind: JobKind, _keep: &[String]) -> StoreResult<u64> {
        Ok(0)
    }
    async fn purge_failed_jobs(&self, _before_ms: i64) -> StoreResult<u64> {
        Ok(0)
    }
    async fn set_push_result(
        &self,
        _user_id: &str,
        _device_id: &str,
        _attempt: PushAttempt,
    ) -> StoreResult<()> {
        Ok(())
    }
    fn set_sink(&self, sink: Arc<dyn EventSink>) {
        *self.sink.lock() = Some(sink);
    }

    async fn ready(&self) -> bool {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(
            tokio::time::timeout(Duration::from_secs(2), ping).await,
            Ok(Ok(_))
        ) && !self.shards.read().is_empty()
    }

    async fn create_users(&self, users: Vec<NewUser>) -> StoreResult<Vec<StoreResult<User>>> {
        let mut out: Vec<Option<StoreResult<User>>> = Vec::with_capacity(users.len());
        let mut fresh: Vec<(usize, User)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for u in users {
            if !seen.insert(u.username.clone()) {
                out.push(Some(Err(Error::conflict("username is taken").into())));
                continue;
            }
            out.push(None);
            fresh.push((
                out.len() - 1,
                User {
                    user_id: ids::user_id(u.now_ms),
                    username: Some(u.username),
                    display_name: u.display_name,
                    password_hash: Some(u.password_hash),
                    avatar_url: None,
                    metadata: None,
                    deactivated: false,
                    created_at: u.now_ms,
                },
            ));
        }
        for chunk in fresh.chunks(CHUNK) {
            let sql = self.d.upsert(
                "users",
                &[
                    "user_id",
                    "username",
                    "display_name",
                    "password_hash",
                    "created_at",
                ],
                &["username"],
                &[],
                chunk.len(),
            );
            let mut q = sqlx::query(&sql);
            for (_, u) in chunk {
                q = q
                    .bind(u.user_id.clone())
                    .bind(u.username.clone())
                    .bind(u.display_name.clone())
                    .bind(u.password_hash.clone())
                    .bind(u.created_at);
            }
            q.execute(&self.pool).await.map_err(engine)?;
            // Which rows are ours: a name taken before keeps its old ID.
            let sql = self.q(&format!(
                "SELECT user_id, username FROM users WHERE username IN ({})",
                marks(chunk.len())
            ));
            let mut q = sqlx::query(&sql);
            for (_, u) in chunk {
                q = q.bind(u.username.clone());
            }
            let rows = q.fetch_all(&self.pool).await.map_err(engine)?;
            let mut owner = HashMap::with_capacity(rows.len());
            for r in rows {
                let id: String = r.try_get(0).map_err(engine)?;
                let name: String = r.try_get(1).map_err(engine)?;
                owner.insert(name, id);
            }
            for (i, u) in chunk {
                let name = u.username.as_deref().unwrap_or_default();
                out[*i] = Some(if owner.get(name) == Some(&u.user_id) {
                    Ok(u.clone())
                } else {
                    Err(Error::conflict("username is taken").into())
                });
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(engine("user not written"))))
            .collect())
    }

    async fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        let sql = format!("{USER_SELECT} WHERE user_id = ?");
        let r = self.row(&sql, &[user_id]).await?;
        r.map(|r| user_from_row(&r)).transpose()
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let sql = format!("{USER_SELECT} WHERE username = ?");
        let r = self.row(&sql, &[username]).await?;
        r.map(|r| user_from_row(&r)).transpose()
    }

    async fn put_user(&self, put: PutUser) -> StoreResult<(User, bool)> {
        users::put(self.d, &self.pool, &put).await
    }

    async fn deactivate_user(&self, user_id: &str) -> StoreResult<Option<Vec<String>>> {
        users::deactivate(self.d, &self.pool, user_id).await
    }

    async fn create_session(&self, session: Session, device: Device) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(engine)?;
        // A known device keeps its sync flag and push target.
        let sql = self.d.upsert(
            "devices",
            &[
                "user_id",
                "device_id",
                "platform",
                "last_seen",
                "synced_before",
                "push_provider",
                "push_token",
            ],
            &["user_id", "device_id"],
            &["platform", "last_seen"],
            1,
        );
        let (provider, token) = match device.push {
            Some(p) => (Some(p.provider), Some(p.token)),
            None => (None, None),
        };
        sqlx::query(&sql)
            .bind(device.user_id)
            .bind(device.device_id)
            .bind(device.platform)
            .bind(device.last_seen)
            .bind(device.synced_before as i64)
            .bind(provider)
            .bind(token)
            .execute(&mut *tx)
            .await
            .map_err(engine)?;
        let sql = self.q(
            "INSERT INTO sessions (session_id, user_id, device_id, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(session.session_id)
            .bind(session.user_id)
            .bind(session.device_id)
            .bind(session.created_at)
            .bind(session.expires_at)
            .execute(&mut *tx)
            .await
            .map_err(engine)?;
        tx.commit().await.map_err(engine)
    }

    async fn session(&self, session_id: &str) -> StoreResult<Option<Session>> {
        let sql = "SELECT session_id, user_id, device_id, created_at, expires_at \
                   FROM sessions WHERE session_id = ?";
        let r = self.row(sql, &[session_id]).await?;
        r.map(|r| session_from_row(&r)).transpose()
    }

    async fn delete_session(&self, session_id: &str) -> StoreResult<()> {
        self.exec("DELETE FROM sessions WHERE session_id = ?", &[session_id])
            .await
    }

    async fn remove_device(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StoreResult<Option<Vec<String>>> {
        let mut tx = self.pool.begin().await.map_err(engine)?;
        let exists = sqlx::query(
            &self.q("SELECT device_id FROM devices WHERE user_id = ? AND device_id = ? FOR UPDATE"),
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(engine)?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(&self.q(
            "SELECT session_id FROM sessions WHERE user_id = ? AND device_id = ? \
             ORDER BY session_id",
        ))
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(engine)?;
        let ids = first_strings(&rows)?;
        for table in ["sessions", "acks", "devices"] {
            sqlx::query(&self.q(&format!(
                "DELETE FROM {table} WHERE user_id = ? AND device_id = ?"
            )))
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await
            .map_err(engine)?;
        }
        tx.commit().await.map_err(engine)?;
        Ok(Some(ids))
    }

    async fn devices(&self, user_id: &str) -> StoreResult<Vec<Device>> {
        let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE user_id = ? ORDER BY device_id");
        let rows = self.rows(&sql, &[user_id]).await?;
        rows.iter().map(device_from_row).collect()
    }

    async fn device(&self, user_id: &str, device_id: &str) -> StoreResult<Option<Device>> {
        let sql = format!("SELECT {DEVICE_COLS} FROM devices WHERE user_id = ? AND device_id = ?");
        let r = self.row(&sql, &[user_id, device_id]).await?;
        r.map(|r| device_from_row(&r)).transpose()
    }

    async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        last_seen: i64,
        synced: bool,
    ) -> StoreResult<()> {
        let sql = self.q("UPDATE devices SET last_seen = GREATEST(last_seen, ?), \
             synced_before = GREATEST(synced_before, ?) \
             WHERE user_id = ? AND device_id = ?");
        sqlx::query(&sql)
            .bind(last_seen)
            .bind(synced as i64)
            .bind(user_id)
            .bind(device_id)
            .execute(&self.pool)
            .await
            .map_err(engine)?;
        Ok(())
    }

    async fn set_push_token(
        &self,
        user_id: &str,
        device_id: &str,
        token: Option<PushTarget>,
    ) -> StoreResult<()> {
        push::set(self.d, &self.pool, user_id, device_id, token).await
    }

    async fn push_device(
        &self,
        provider: &str,
        token: &str,
    ) -> StoreResult<Option<(String, String)>> {
        let sql = "SELECT user_id, device_id FROM devices WHERE push_key = ?";
        let key = crate::token_key(provider, token);
        match self.row(sql, &[&key]).await? {
            Some(r) => Ok(Some((
                r.try_get(0).map_err(engine)?,
                r.try_get(1).map_err(engine)?,
            ))),
            None => Ok(None),
        }
    }

    async fn set_contact(&self, user_id: &str, other: &str, on: bool) -> StoreResult<()> {
        self.set_pair("contacts", user_id, other, on).await
    }

    async fn contacts(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let sql = "SELECT other FROM contacts WHERE user_id = ? ORDER BY other";
        let rows = self.rows(sql, &[user_id]).await?;
        rows.iter().map(|r| text(r, 0)).collect()
    }

    async fn set_block(&self, user_id: &str, other: &str, on: bool) -> StoreResult<()> {
        self.set_pair("blocks", user_id, other, on).await
    }

    async fn is_blocked(&self, blocker: &str, blocked: &str) -> StoreResult<bool> {
        let sql = "SELECT other FROM blocks WHERE user_id = ? AND other = ?";
        Ok(self.row(sql, &[blocker, blocked]).await?.is_some())
    }

    async fn open_direct(
        &self,
        a: &str,
        b: &str,
        conv_id: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<(ConvMeta, bool)> {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        let pair = (x.to_owned(), y.to_owned());
        let by_pair = format!(
            "SELECT {CONV_COLS}, e.body FROM convs c {LAST_EVENT} \
             WHERE c.pair_a = ? AND c.pair_b = ?"
        );
        // A lost race (another node created the pair or took the ID
        // between the reads and the insert) is decided on the next round,
        // which sees the winner.
        for _ in 0..3 {
            let found = match self.row(&by_pair, &[x, y]).await? {
                Some(r) => Some(conv_from_row(&r, 0, true)?),
                None => match conv_id {
                    Some(id) => self.fetch_conv(id).await?,
                    None => None,
                },
            };
            if let Some(meta) = found {
                rules::existing_direct(&meta, &pair, conv_id)?;
                return Ok((meta, false));
            }
            let meta = rules::new_direct(pair.clone(), conv_id, now_ms);
            let mut tx = self.pool.begin().await.map_err(engine)?;
            if !writer::insert_conv(self.d, &mut tx, &meta).await? {
                tx.rollback().await.map_err(engine)?;
                continue;
            }
            let mut users = vec![x];
            if y != x {
                users.push(y);
            }
            let members: Vec<Member> = users
                .iter()
                .map(|u| crate::rules::new_member(u, Role::Member, 0, 0))
                .collect();
            writer::put_members(self.d, &mut tx, &meta.conv_id, &members).await?;
            tx.commit().await.map_err(engine)?;
            return Ok((meta, true));
        }
        Err(engine("the direct conversation kept changing"))
    }

    async fn create_group(&self, req: NewGroup) -> StoreResult<(ConvMeta, bool)> {
        if let Some(id) = &req.conv_id
            && let Some(meta) = self.fetch_conv(id).await?
        {
            rules::existing_group(&meta)?;
            return Ok((meta, false));
        }
        let conv_id = req.conv_id.unwrap_or_else(|| ids::conv_id(req.now_ms));
        let meta = rules::new_group(conv_id.clone(), req.title.clone(), req.now_ms);
        let mut all = vec![req.owner.clone()];
        all.extend(req.members.iter().filter(|m| **m != req.owner).cloned());
        let append = Append {
            conv_id: conv_id.clone(),
            actor: req.by,
            client_msg_id: None,
            op: Op::AddMembers {
                user_ids: all,
                max_members: u64::MAX,
            },
            origin: req.origin,
            now_ms: req.now_ms,
        };
        let mut out = self.run_job(&conv_id, vec![append], Some(meta)).await?;
        let taken = match out.pop() {
            Some(Ok(_)) => false,
            Some(Err(StoreError::Rejected(e))) if e.code == tokenim_proto::ErrorCode::Conflict => {
                true
            }
            Some(Err(e)) => return Err(e),
            None => return Err(engine("no result for the group")),
        };
        // Created here, or by another request since the read above.
        let meta = self
            .fetch_conv(&conv_id)
            .await?
            .ok_or_else(|| engine("the new group is missing"))?;
        if taken {
            rules::existing_group(&meta)?;
        }
        Ok((meta, !taken))
    }

    async fn conv(&self, conv_id: &str) -> StoreResult<Option<ConvMeta>> {
        self.fetch_conv(conv_id).await
    }

    async fn member(&self, conv_id: &str, user_id: &str) -> StoreResult<Option<Member>> {
        let sql =
            format!("SELECT {MEMBER_COLS} FROM members m WHERE m.conv_id = ? AND m.user_id = ?");
        let r = self.row(&sql, &[conv_id, user_id]).await?;
        r.map(|r| member_from_row(&r, 0)).transpose()
    }

    async fn membership(
        &self,
        conv_id: &str,
        user_id: &str,
    ) -> StoreResult<Option<(ConvMeta, Member)>> {
        let sql = format!(
            "SELECT {CONV_COLS}, e.body, {MEMBER_COLS} FROM convs c \
             JOIN members m ON m.conv_id = c.conv_id AND m.user_id = ? {LAST_EVENT} \
             WHERE c.conv_id = ?"
        );
        let row = self.row(&sql, &[user_id, conv_id]).await?;
        row.map(|r| Ok((conv_from_row(&r, 0, true)?, member_from_row(&r, 13)?)))
            .transpose()
    }

    async fn members_page(
        &self,
        conv_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Member>> {
        let sql = self.q(&format!(
            "SELECT {MEMBER_COLS} FROM members m WHERE m.conv_id = ? AND m.user_id > ? \
             ORDER BY m.user_id LIMIT ?"
        ));
        let rows = sqlx::query(&sql)
            .bind(conv_id)
            .bind(after.unwrap_or(""))
            .bind(limit.min(100_000) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(engine)?;
        rows.iter().map(|r| member_from_row(r, 0)).collect()
    }

    async fn member_ids(&self, conv_id: &str) -> StoreResult<Arc<[String]>> {
        // The list is cached by the conversation's membership version, so a
        // big group costs one key lookup per push, not a scan of its members.
        let row = sqlx::query(&self.q("SELECT members_ver FROM convs WHERE conv_id = ?"))
            .bind(conv_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(engine)?;
        let Some(row) = row else {
            return Ok(Arc::from(Vec::new()));
        };
        let ver: i64 = row.try_get(0).map_err(engine)?;
        if let Some((v, ids)) = self.members.lock().get(conv_id)
            && *v == ver
        {
            return Ok(ids.clone());
        }
        let mut tx = self.pool.begin().await.map_err(engine)?;
        // Re-read the version in the same transaction as the list so the
        // pair is consistent (the list may be newer than `ver`).
        let ver: i64 = sqlx::query(&self.q("SELECT members_ver FROM convs WHERE conv_id = ?"))
            .bind(conv_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(engine)?
            .try_get(0)
            .map_err(engine)?;
        let rows =
            sqlx::query(&self.q("SELECT user_id FROM members WHERE conv_id = ? ORDER BY user_id"))
                .bind(conv_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(engine)?;
        tx.commit().await.map_err(engine)?;
        let ids = first_strings(&rows)?;
        let ids: Arc<[String]> = ids.into();
        remember(&self.members, conv_id, ver, ids.clone());
        Ok(ids)
    }

    async fn user_convs(&self, user_id: &str) -> StoreResult<Vec<(ConvMeta, Member)>> {
        let sql = format!(
            "SELECT {CONV_COLS}, e.body, {MEMBER_COLS} FROM members m \
             JOIN convs c ON c.conv_id = m.conv_id {LAST_EVENT} WHERE m.user_id = ?"
        );
        let rows = self.rows(&sql, &[user_id]).await?;
        rows.iter()
            .map(|r| Ok((conv_from_row(r, 0, true)?, member_from_row(r, 13)?)))
            .collect()
    }

    async fn set_mute(&self, conv_id: &str, user_id: &str, until: Option<i64>) -> StoreResult<()> {
        if self.member(conv_id, user_id).await?.is_none() {
            return Err(Error::not_found("no such member").into());
        }
        sqlx::query(
            &self.q("UPDATE members SET muted_until = ? WHERE conv_id = ? AND user_id = ?"),
        )
        .bind(until)
        .bind(conv_id)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(engine)?;
        Ok(())
    }

    async fn set_notifications(
        &self,
        conv_id: &str,
        user_id: &str,
        level: tokenim_proto::NotifyLevel,
        until: Option<i64>,
    ) -> StoreResult<()> {
        let sql = self.q("UPDATE members SET notify_level = ?, notify_until = ? \
             WHERE conv_id = ? AND user_id = ?");
        let done = sqlx::query(&sql)
            .bind(enum_str(&level))
            .bind(until)
            .bind(conv_id)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(engine)?;
        // MySQL counts changed rows: the same level again changes none.
        if done.rows_affected() == 0 && self.member(conv_id, user_id).await?.is_none() {
            return Err(Error::not_found("no such member").into());
        }
        Ok(())
    }

    async fn set_read(&self, conv_id: &str, user_id: &str, seq: u64) -> StoreResult<Option<u64>> {
        let sql = self.q("SELECT c.last_seq, c.msg_count, m.read_seq FROM convs c \
             JOIN members m ON m.conv_id = c.conv_id AND m.user_id = ? WHERE c.conv_id = ?");
        let row = sqlx::query(&sql)
            .bind(user_id)
            .bind(conv_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(engine)?;
        let Some(row) = row else {
            return Err(Error::no_conversation().into());
        };
        let last_seq = row.try_get::<i64, _>(0).map_err(engine)? as u64;
        let msg_count: i64 = row.try_get(1).map_err(engine)?;
        let read_seq = row.try_get::<i64, _>(2).map_err(engine)? as u64;
        let seq = seq.min(last_seq);
        if seq <= read_seq {
            return Ok(None);
        }
        let count = if seq == last_seq {
            msg_count
        } else {
            let r =
                sqlx::query(&self.q("SELECT msg_count FROM events WHERE conv_id = ? AND seq = ?"))
                    .bind(conv_id)
                    .bind(seq as i64)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(engine)?;
            match r {
                Some(r) => r.try_get(0).map_err(engine)?,
                None => 0,
            }
        };
        // Only forward: a concurrent marker that got further wins.
        let done = sqlx::query(&self.q("UPDATE members SET read_seq = ?, read_count = ? \
             WHERE conv_id = ? AND user_id = ? AND read_seq < ?"))
        .bind(seq as i64)
        .bind(count)
        .bind(conv_id)
        .bind(user_id)
        .bind(seq as i64)
        .execute(&self.pool)
        .await
        .map_err(engine)?;
        Ok((done.rows_affected() > 0).then_some(seq))
    }

    fn append(&self, reqs: Vec<Append>) -> AppendFuture {
        let Some(first) = reqs.first() else {
            return Box::pin(async { Ok(Vec::new()) });
        };
        let conv = first.conv_id.clone();
        self.run_job(&conv, reqs, None)
    }

    async fn dedup(&self, sender: &str, client_msg_id: &str) -> StoreResult<Option<DedupRecord>> {
        let sql = "SELECT conv_id, kind, msg_id, seq, ts FROM dedup \
                   WHERE sender = ? AND client_msg_id = ?";
        let r = self.row(sql, &[sender, client_msg_id]).await?;
        r.map(|r| writer::dedup_from_row(&r, 0)).transpose()
    }

    async fn events(
        &self,
        conv_id: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&self.q(
            "SELECT body FROM events WHERE conv_id = ? AND seq >= ? AND seq <= ? \
             ORDER BY seq LIMIT ?",
        ))
        .bind(conv_id)
        .bind(from.min(i64::MAX as u64) as i64)
        .bind(to.min(i64::MAX as u64) as i64)
        .bind(limit.min(1_000_000) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(engine)?;
        rows.iter()
            .map(|r| decode_event(text(r, 0)?.as_bytes()).map_err(engine))
            .collect()
    }

    async fn record_acks(&self, acks: Vec<AckRecord>) -> StoreResult<()> {
        if acks.is_empty() {
            return Ok(());
        }
        // Only a member's existing device keeps an ack; never moves back.
        let (insert, conflict) = match self.d {
            Dialect::Postgres => (
                "INSERT INTO acks (user_id, device_id, conv_id, seq) \
                 SELECT m.user_id, d.device_id, m.conv_id, ? FROM members m \
                 JOIN devices d ON d.user_id = m.user_id AND d.device_id = ? \
                 WHERE m.conv_id = ? AND m.user_id = ?",
                " ON CONFLICT (user_id, device_id, conv_id) \
                 DO UPDATE SET seq = GREATEST(acks.seq, EXCLUDED.seq)",
            ),
            Dialect::MySql => (
                "INSERT INTO acks (user_id, device_id, conv_id, seq) \
                 SELECT m.user_id, d.device_id, m.conv_id, ? FROM members m \
                 JOIN devices d ON d.user_id = m.user_id AND d.device_id = ? \
                 WHERE m.conv_id = ? AND m.user_id = ?",
                " ON DUPLICATE KEY UPDATE seq = GREATEST(acks.seq, VALUES(seq))",
            ),
        };
        let sql = self.q(&format!("{insert}{conflict}"));
        let mut acks = acks;
        // One lock order for every writer of acks.
        acks.sort_by(|a, b| {
            (&a.user_id, &a.device_id, &a.conv_id).cmp(&(&b.user_id, &b.device_id, &b.conv_id))
        });
        let mut attempt = 0;
        loop {
            let r = async {
                let mut tx = self.pool.begin().await?;
                for a in &acks {
                    sqlx::query(&sql)
                        .bind(a.seq.min(i64::MAX as u64) as i64)
                        .bind(&a.device_id)
                        .bind(&a.conv_id)
                        .bind(&a.user_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }
            .await;
            match r {
                Ok(()) => return Ok(()),
                Err(e) if writer::retryable(&e) && attempt < 5 => attempt += 1,
                Err(e) => return Err(engine(e)),
            }
        }
    }

    async fn ack_seq(
        &self,
        user_id: &str,
        device_id: &str,
        conv_id: &str,
    ) -> StoreResult<Option<u64>> {
        let sql = "SELECT seq FROM acks WHERE user_id = ? AND device_id = ? AND conv_id = ?";
        let r = self.row(sql, &[user_id, device_id, conv_id]).await?;
        r.map(|r| r.try_get::<i64, _>(0).map(|s| s as u64).map_err(engine))
            .transpose()
    }

    async fn shutdown(&self) {
        // Writers finish the jobs queued so far, then stop.
        self.shards.write().clear();
        let tasks = std::mem::take(&mut *self.shard_tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
        let fwd = self.forwarder.lock().take();
        if let Some(h) = fwd {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.pool.close().await;
    }
}

impl SqlStore {
    async fn set_pair(&self, table: &str, user_id: &str, other: &str, on: bool) -> StoreResult<()> {
        if on {
            let sql = self
                .d
                .upsert(table, &["user_id", "other"], &["user_id", "other"], &[], 1);
            self.exec_prepared(&sql, &[user_id, other]).await
        } else {
            let sql = format!("DELETE FROM {table} WHERE user_id = ? AND other = ?");
            self.exec(&sql, &[user_id, other]).await
        }
    }

    /// One row (or none) of `sql` (`?` placeholders) with text arguments.
    async fn row(&self, sql: &str, args: &[&str]) -> StoreResult<Option<AnyRow>> {
        let sql = self.q(sql);
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(*a);
        }
        q.fetch_optional(&self.pool).await.map_err(engine)
    }

    /// Every row of `sql` (`?` placeholders) with text arguments.
    async fn rows(&self, sql: &str, args: &[&str]) -> StoreResult<Vec<AnyRow>> {
        let sql = self.q(sql);
        let mut q = sqlx::query(&sql);
        for a in args {
            q = q.bind(*a);
        }
        q.fetch_all(&self.pool).await.map_err(engine)
    }

    /// Runs `sql` (`?` placeholders) with text arguments.
    async fn exec(&self, sql: &str, args: &[&str]) -> StoreResult<()> {
        self.exec_prepared(&self.q(sql), args).await
    }

    /// Runs `sql`, already in the dialect's placeholders.
    async fn exec_prepared(&self, sql: &str, args: &[&str]) -> StoreResult<()> {
        let mut q = sqlx::query(sql);
        for a in args {
            q = q.bind(*a);
        }
        q.execute(&self.pool).await.map_err(engine)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect() {
        assert_eq!(
            Dialect::Postgres.sql("a = ? AND b = ?"),
            "a = $1 AND b = $2"
        );
        assert_eq!(Dialect::MySql.sql("a = ?"), "a = ?");
        assert!(
            Dialect::MySql
                .upsert("t", &["a", "b"], &["a"], &["b"], 2)
                .ends_with("VALUES (?, ?), (?, ?) ON DUPLICATE KEY UPDATE b = VALUES(b)")
        );
        assert!(
            Dialect::Postgres
                .upsert("t", &["a", "b"], &["a"], &[], 1)
                .ends_with("VALUES ($1, $2) ON CONFLICT (a) DO NOTHING")
        );
    }

    #[test]
    fn urls_pick_the_dialect_and_hide_passwords() {
        assert_eq!(Dialect::of("postgres://x/y").unwrap().0, Dialect::Postgres);
        assert_eq!(
            Dialect::of("mariadb://root@h/db").unwrap(),
            (Dialect::MySql, "mysql://root@h/db".to_owned())
        );
        assert!(Dialect::of("sqlite://x").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
