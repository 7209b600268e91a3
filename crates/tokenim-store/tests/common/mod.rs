//! Opening the store under test: the engine named by `TOKENIM_TEST_DATABASE`
//! (`embedded`, the default, `postgres` or `mysql`), each test in a database
//! of its own that is dropped afterwards.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Executor;
use tokenim_store::Store;
use tokenim_store::embedded::EmbeddedStore;
use tokenim_store::sql::SqlStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Postgres,
    MySql,
}

pub fn backend() -> Backend {
    match std::env::var("TOKENIM_TEST_DATABASE").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("mysql") => Backend::MySql,
        Ok("embedded") | Err(_) => Backend::Embedded,
        Ok(other) => panic!("TOKENIM_TEST_DATABASE={other}: use embedded, postgres or mysql"),
    }
}

fn admin_url(b: Backend) -> String {
    match b {
        Backend::Postgres => std::env::var("TOKENIM_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        Backend::MySql => std::env::var("TOKENIM_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
        Backend::Embedded => unreachable!(),
    }
}

/// A database of one test's own on a SQL server; dropped with the value.
pub struct TempDb {
    pub backend: Backend,
    pub name: String,
    pub url: String,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl TempDb {
    pub async fn create(backend: Backend) -> TempDb {
        sqlx::any::install_default_drivers();
        let name = format!(
            "tokenim_st_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand_suffix()
        );
        let admin = admin_url(backend);
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("the test database server answers");
        let create = match backend {
            Backend::MySql => {
                format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            }
            _ => format!("CREATE DATABASE {name}"),
        };
        conn.execute(create.as_str())
            .await
            .expect("create database");
        let base = admin.rsplit_once('/').expect("a URL with a database").0;
        TempDb {
            backend,
            url: format!("{base}/{name}"),
            name,
        }
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let admin = admin_url(self.backend);
        let name = self.name.clone();
        let backend = self.backend;
        // Drop runs outside any runtime's control: a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await
                else {
                    return;
                };
                let sql = match backend {
                    Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    _ => format!("DROP DATABASE IF EXISTS {name}"),
                };
                let _ = conn.execute(sql.as_str()).await;
            });
        })
        .join();
    }
}

/// Where a test's store lives, so it can be opened again.
pub enum Place {
    Dir(tempfile::TempDir),
    Db(TempDb),
}

impl Place {
    pub async fn new() -> Place {
        match backend() {
            Backend::Embedded => Place::Dir(tempfile::tempdir().expect("temp dir")),
            b => Place::Db(TempDb::create(b).await),
        }
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        match self {
            Place::Dir(d) => Arc::new(EmbeddedStore::open(d.path()).expect("open embedded")),
            Place::Db(db) => SqlStore::connect(&db.url, 8).await.expect("open sql store"),
        }
    }
}
