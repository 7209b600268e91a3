//! The storage backend the tests run against, and a fresh database per test
//! server on the SQL backends.
//!
//! `TOKENIM_TEST_DATABASE` chooses the backend: `embedded` (the default: the
//! fjall engine in the server's temporary data directory), `postgres` or
//! `mysql`. On the SQL backends every [`TestDatabase`] is a database of its
//! own, created through an administrative connection
//! (`TOKENIM_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`;
//! `TOKENIM_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/mysql`) and
//! dropped when the guard is dropped, which also happens while a failing test
//! unwinds. So tests run in parallel without seeing each other's data.
//!
//! Databases are named `tokenim_t_<pid>_<unix seconds>_<counter>`. A
//! process whose guards never ran (killed, aborted) leaves its databases
//! behind; the first database a process creates first sweeps every
//! `tokenim_t_…` database whose process is gone or that is older than
//! [`STALE_AFTER`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use sqlx::Connection;

/// Where the data of a test server lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Postgres,
    Mysql,
}

impl Backend {
    /// Every backend, for tests that exercise the SQL ones explicitly.
    pub const ALL: [Backend; 3] = [Backend::Embedded, Backend::Postgres, Backend::Mysql];

    /// The name `TOKENIM_TEST_DATABASE` takes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }

    /// Parses a `TOKENIM_TEST_DATABASE` value.
    pub fn parse(s: &str) -> anyhow::Result<Backend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "embedded" => Ok(Backend::Embedded),
            "postgres" | "postgresql" | "pg" => Ok(Backend::Postgres),
            "mysql" | "mariadb" => Ok(Backend::Mysql),
            other => bail!("TOKENIM_TEST_DATABASE={other:?}: expected embedded, postgres or mysql"),
        }
    }

    /// The administrative URL test databases are created through.
    pub fn admin_url(self) -> Option<String> {
        let (var, default) = match self {
            Backend::Embedded => return None,
            Backend::Postgres => (
                "TOKENIM_TEST_PG_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            Backend::Mysql => (
                "TOKENIM_TEST_MYSQL_URL",
                "mysql://root@127.0.0.1:3306/mysql",
            ),
        };
        Some(
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned()),
        )
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The backend of this test run, from `TOKENIM_TEST_DATABASE` (panics on a
/// value it does not know rather than quietly testing another backend).
pub fn backend() -> Backend {
    let v = std::env::var("TOKENIM_TEST_DATABASE").unwrap_or_default();
    Backend::parse(&v).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Connections a test server opens to its database: small, since many test
/// servers run at once (MariaDB allows 151 connections, PostgreSQL 100).
pub const TEST_POOL: u32 = 4;

/// Test databases older than this are dropped by the sweep even when a
/// process with their pid is alive (the pid was reused).
pub const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

/// Every test database's name starts with this.
pub const PREFIX: &str = "tokenim_t_";

/// A database of its own for one test, dropped with the guard.
#[derive(Debug)]
pub struct TestDatabase {
    backend: Backend,
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// A fresh database on the run's backend, or `None` on the embedded one.
    pub async fn for_run() -> Option<TestDatabase> {
        match backend() {
            Backend::Embedded => None,
            b => Some(
                TestDatabase::create(b)
                    .await
                    .unwrap_or_else(|e| panic!("creating a {b} test database: {e:#}")),
            ),
        }
    }

    /// Creates a fresh database on `backend` (Postgres or Mysql).
    pub async fn create(backend: Backend) -> anyhow::Result<TestDatabase> {
        let Some(admin_url) = backend.admin_url() else {
            bail!("the embedded backend has no databases");
        };
        sweep_once(backend, &admin_url).await;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{PREFIX}{}_{}_{}",
            std::process::id(),
            unix_now(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let url = with_database(&admin_url, &name)?;
        match backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .with_context(|| format!("connecting to {admin_url}"))?;
                sqlx::query(&format!("CREATE DATABASE \"{name}\" ENCODING 'UTF8'"))
                    .execute(&mut c)
                    .await
                    .with_context(|| format!("CREATE DATABASE {name}"))?;
                let _ = c.close().await;
            }
            Backend::Mysql => {
                let mut c = sqlx::MySqlConnection::connect(&admin_url)
                    .await
                    .with_context(|| format!("connecting to {admin_url}"))?;
                sqlx::query(&format!(
                    "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                ))
                .execute(&mut c)
                .await
                .with_context(|| format!("CREATE DATABASE {name}"))?;
                let _ = c.close().await;
            }
            Backend::Embedded => unreachable!("checked above"),
        }
        Ok(TestDatabase {
            backend,
            admin_url,
            name,
            url,
        })
    }

    /// The URL a server (or `tokenim serve --database-url`) opens.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many tables the database holds (a server that keeps its data
    /// here has created its schema).
    pub async fn table_count(&self) -> anyhow::Result<i64> {
        Ok(match self.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await?;
                let n = sqlx::query_scalar(
                    "SELECT count(*) FROM information_schema.tables \
                     WHERE table_catalog = current_database() AND table_schema = 'public'",
                )
                .fetch_one(&mut c)
                .await?;
                let _ = c.close().await;
                n
            }
            Backend::Mysql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await?;
                let n = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()",
                )
                .fetch_one(&mut c)
                .await?;
                let _ = c.close().await;
                n
            }
            Backend::Embedded => bail!("the embedded backend has no databases"),
        })
    }
}

impl Drop for TestDatabase {
    /// Drops the database on a thread of its own with its own runtime:
    /// `Drop` is synchronous and may run inside the test's runtime.
    fn drop(&mut self) {
        let (backend, admin_url, name) = (self.backend, self.admin_url.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    drop_database(backend, &admin_url, &name),
                )
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
            })
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!(
                "tokenim-testkit: could not drop test database {} ({e:#}); a later run sweeps it",
                self.name
            ),
            Err(_) => eprintln!(
                "tokenim-testkit: dropping test database {} panicked; a later run sweeps it",
                self.name
            ),
        }
    }
}

/// Drops `name`, first ending every connection still using it (a server
/// that was only told to stop may still hold some).
pub async fn drop_database(backend: Backend, admin_url: &str, name: &str) -> anyhow::Result<()> {
    if !name.starts_with(PREFIX) || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        bail!("refusing to drop {name:?}: not a test database");
    }
    match backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(admin_url).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut c)
                .await?;
            let _ = c.close().await;
        }
        Backend::Mysql => {
            let mut c = sqlx::MySqlConnection::connect(admin_url).await?;
            sqlx::query("SET SESSION lock_wait_timeout = 20")
                .execute(&mut c)
                .await?;
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(ID AS CHAR) FROM information_schema.PROCESSLIST WHERE DB = ?",
            )
            .bind(name)
            .fetch_all(&mut c)
            .await?;
            for id in ids {
                if let Ok(id) = id.parse::<u64>() {
                    // It may have ended meanwhile.
                    let _ = sqlx::query(&format!("KILL CONNECTION {id}"))
                        .execute(&mut c)
                        .await;
                }
            }
            sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                .execute(&mut c)
                .await?;
            let _ = c.close().await;
        }
        Backend::Embedded => bail!("the embedded backend has no databases"),
    }
    Ok(())
}

/// The names of every test database on `backend`'s server.
pub async fn list_test_databases(backend: Backend, admin_url: &str) -> anyhow::Result<Vec<String>> {
    let like = format!("{}%", PREFIX.replace('_', "\\_"));
    let names: Vec<String> = match backend {
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(admin_url).await?;
            let n =
                sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
                    .bind(&like)
                    .fetch_all(&mut c)
                    .await?;
            let _ = c.close().await;
            n
        }
        Backend::Mysql => {
            let mut c = sqlx::MySqlConnection::connect(admin_url).await?;
            let n = sqlx::query_scalar(
                "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA \
                 WHERE SCHEMA_NAME LIKE ?",
            )
            .bind(&like)
            .fetch_all(&mut c)
            .await?;
            let _ = c.close().await;
            n
        }
        Backend::Embedded => Vec::new(),
    };
    Ok(names)
}

/// Whether a test database is left over: its process is gone, or it is
/// older than [`STALE_AFTER`]. Names not of the form this module makes are
/// never stale (they are someone else's).
pub fn is_stale(name: &str, now: u64, pid_alive: impl Fn(u32) -> bool) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('_').collect();
    let [pid, created, counter] = parts[..] else {
        return false;
    };
    let (Ok(pid), Ok(created), Ok(_)) = (
        pid.parse::<u32>(),
        created.parse::<u64>(),
        counter.parse::<u32>(),
    ) else {
        return false;
    };
    now.saturating_sub(created) > STALE_AFTER.as_secs() || !pid_alive(pid)
}

/// Whether a process with this pid exists (always "yes" where there is no
/// /proc to ask, so only age decides there).
pub fn pid_alive(pid: u32) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Drops the stale test databases on `backend`'s server; answers their
/// names.
pub async fn sweep(backend: Backend, admin_url: &str) -> anyhow::Result<Vec<String>> {
    let now = unix_now();
    let mut dropped = Vec::new();
    for name in list_test_databases(backend, admin_url).await? {
        if is_stale(&name, now, pid_alive) {
            drop_database(backend, admin_url, &name).await?;
            dropped.push(name);
        }
    }
    Ok(dropped)
}

/// Sweeps once per process and backend, before its first database.
async fn sweep_once(backend: Backend, admin_url: &str) {
    static PG: AtomicBool = AtomicBool::new(false);
    static MY: AtomicBool = AtomicBool::new(false);
    let flag = match backend {
        Backend::Postgres => &PG,
        Backend::Mysql => &MY,
        Backend::Embedded => return,
    };
    if flag.swap(true, Ordering::SeqCst) {
        return;
    }
    match sweep(backend, admin_url).await {
        Ok(d) if !d.is_empty() => {
            eprintln!("tokenim-testkit: dropped {} stale test databases", d.len())
        }
        Ok(_) => {}
        Err(e) => eprintln!("tokenim-testkit: sweeping stale test databases failed: {e:#}"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `url` with its database (the path) replaced by `db`, keeping any query.
pub fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .with_context(|| format!("{url:?} is not a URL"))?
        + 3;
    let authority_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names() {
        assert_eq!(Backend::parse("").unwrap(), Backend::Embedded);
        assert_eq!(Backend::parse("embedded").unwrap(), Backend::Embedded);
        assert_eq!(Backend::parse("Postgres").unwrap(), Backend::Postgres);
        assert_eq!(Backend::parse("mariadb").unwrap(), Backend::Mysql);
        assert!(Backend::parse("sqlite").is_err());
        for b in Backend::ALL {
            assert_eq!(Backend::parse(b.name()).unwrap(), b);
        }
    }

    #[test]
    fn urls_get_the_database_replaced() {
        let u = |a, d| with_database(a, d).unwrap();
        assert_eq!(
            u("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(u("mysql://root@h:3306", "x"), "mysql://root@h:3306/x");
        assert_eq!(
            u("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert!(with_database("nope", "x").is_err());
    }

    #[test]
    fn staleness() {
        let now = 1_000_000;
        let alive = |_| true;
        let dead = |_| false;
        assert!(!is_stale("tokenim_t_12_999999_0", now, alive));
        assert!(is_stale("tokenim_t_12_999999_0", now, dead));
        assert!(is_stale("tokenim_t_12_1_0", now, alive), "too old");
        assert!(!is_stale("tokenim_t_other", now, dead), "not ours");
        assert!(!is_stale("tokenim_t_1_2_3_4", now, dead), "not ours");
        assert!(!is_stale("postgres", now, dead));
    }

    /// A test server on the run's backend keeps its data in a database of
    /// its own (on the SQL backends), the same one across a restart, and
    /// the database is gone once the server is dropped.
    #[tokio::test]
    async fn test_servers_use_their_own_database() {
        let mut s = crate::TestServer::start().await;
        let alice = crate::User::new(&s, "alice", "d").await;
        let name = match (backend(), s.database()) {
            (Backend::Embedded, None) => {
                assert!(s.config.database_url.is_none());
                None
            }
            (b, Some(db)) => {
                assert_eq!(db.backend(), b);
                assert_eq!(s.config.database_url.as_deref(), Some(db.url()));
                assert_eq!(s.config.database_pool, TEST_POOL);
                assert!(db.table_count().await.unwrap() > 0, "{b}: schema created");
                Some((b, db.name().to_owned()))
            }
            (b, db) => panic!("backend {b} with database {db:?}"),
        };
        s.restart().await;
        assert_eq!(
            s.database().map(|d| d.name().to_owned()),
            name.as_ref().map(|n| n.1.clone())
        );
        // The account survived the restart: it is the same data.
        s.client().login(&alice.name, "d2").await;
        drop(s);
        if let Some((b, name)) = name {
            let admin = b.admin_url().unwrap();
            assert!(
                !list_test_databases(b, &admin)
                    .await
                    .unwrap()
                    .contains(&name)
            );
        }
    }

    /// On both SQL servers (whatever the run's backend): a test database
    /// is usable under its URL, has the expected character set, and is gone
    /// once its guard drops, even with a connection still open; the sweep
    /// drops databases of dead processes and leaves live ones alone.
    #[tokio::test]
    async fn sql_databases_are_created_and_dropped() {
        for b in [Backend::Postgres, Backend::Mysql] {
            let admin = b.admin_url().unwrap();
            let db = TestDatabase::create(b).await.expect("create");
            let name = db.name().to_owned();
            assert!(
                list_test_databases(b, &admin)
                    .await
                    .unwrap()
                    .contains(&name)
            );
            let held = match b {
                Backend::Postgres => {
                    let mut c = sqlx::PgConnection::connect(db.url()).await.unwrap();
                    sqlx::query("CREATE TABLE t (v TEXT)")
                        .execute(&mut c)
                        .await
                        .unwrap();
                    sqlx::query("INSERT INTO t VALUES ('héllo 👋')")
                        .execute(&mut c)
                        .await
                        .unwrap();
                    let v: String = sqlx::query_scalar("SELECT v FROM t")
                        .fetch_one(&mut c)
                        .await
                        .unwrap();
                    assert_eq!(v, "héllo 👋");
                    Box::new(c) as Box<dyn std::any::Any + Send>
                }
                _ => {
                    let mut c = sqlx::MySqlConnection::connect(db.url()).await.unwrap();
                    let coll: String = sqlx::query_scalar(
                        "SELECT CAST(DEFAULT_COLLATION_NAME AS CHAR) \
                         FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = DATABASE()",
                    )
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                    assert_eq!(coll, "utf8mb4_bin");
                    sqlx::query("CREATE TABLE t (v TEXT)")
                        .execute(&mut c)
                        .await
                        .unwrap();
                    sqlx::query("INSERT INTO t VALUES ('héllo 👋')")
                        .execute(&mut c)
                        .await
                        .unwrap();
                    // A `_bin` collation marks text as binary on the wire.
                    let v: Vec<u8> = sqlx::query_scalar("SELECT v FROM t")
                        .fetch_one(&mut c)
                        .await
                        .unwrap();
                    assert_eq!(String::from_utf8(v).unwrap(), "héllo 👋");
                    Box::new(c)
                }
            };
            assert_eq!(db.table_count().await.unwrap(), 1, "{b}");
            drop(db);
            assert!(
                !list_test_databases(b, &admin)
                    .await
                    .unwrap()
                    .contains(&name),
                "{b}: {name} dropped"
            );
            drop(held);

            // A database of a process that is gone (pids never reach 2^23)
            // is swept; this process's fresh one is not.
            let orphan = format!("{PREFIX}8388607_{}_0", unix_now());
            let live = TestDatabase::create(b).await.unwrap();
            match b {
                Backend::Postgres => {
                    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
                    sqlx::query(&format!("CREATE DATABASE \"{orphan}\""))
                        .execute(&mut c)
                        .await
                        .unwrap();
                }
                _ => {
                    let mut c = sqlx::MySqlConnection::connect(&admin).await.unwrap();
                    sqlx::query(&format!("CREATE DATABASE `{orphan}`"))
                        .execute(&mut c)
                        .await
                        .unwrap();
                }
            }
            let dropped = sweep(b, &admin).await.unwrap();
            assert!(dropped.contains(&orphan), "{b}: {dropped:?}");
            assert!(!dropped.contains(&live.name().to_owned()));
            let names = list_test_databases(b, &admin).await.unwrap();
            assert!(!names.contains(&orphan));
            assert!(names.contains(&live.name().to_owned()));
        }
    }
}
