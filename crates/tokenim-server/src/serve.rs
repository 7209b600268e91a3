//! Listening (plain or TLS on one port), the background tasks, and graceful
//! shutdown: stop accepting, close every socket with a close frame, answer
//! the commits in flight, write the pending acks, stop the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokenim_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use crate::auth::Tokens;
use crate::config::Config;
use crate::delivery::cluster::Cluster;
use crate::delivery::dispatcher::{QUEUE, Sink};
use crate::delivery::outbox::Close;
use crate::state::AppState;

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<AppState>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Asks the server to stop (as SIGTERM does) and waits until it has.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task")?
    }

    /// Waits until the server stops by itself.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }

    /// A handle that can stop the server later (from a signal handler).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

fn tls_acceptor(cfg: &Config) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .context("reading the certificate chain")?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))
    .context("reading the private key")?
    .context("no private key in the key file")?;
    let mut sc = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("building the TLS configuration")?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(sc))))
}

/// Binds with a deep accept backlog (the default of 128 overflows when
/// thousands of clients reconnect at once; the kernel caps it at somaxconn).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(65_535)
}

/// Opens the store, binds, and serves until stopped.
pub async fn start(cfg: Config, store: Arc<dyn Store>) -> anyhow::Result<Server> {
    let tls = tls_acceptor(&cfg)?;
    let listener = bind(cfg.listen).with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let (cluster, tokens) = match &cfg.redis_url {
        Some(_) => {
            let c = Cluster::connect(&cfg).await?;
            let key = c.shared_token_key(&cfg.data_dir).await?;
            if cfg.database_url.is_none() {
                tracing::warn!(
                    "cluster mode with the embedded store: nodes do not share their timelines"
                );
            }
            tracing::info!(node_id = %c.node, prefix = %cfg.redis_prefix, "joining the cluster");
            (Some(c), Tokens::from_key(key))
        }
        None => (None, Tokens::load_or_create(&cfg.data_dir)?),
    };
    let app = AppState::new(cfg, store.clone(), cluster.clone(), tokens)?;

    let (ltx, lrx) = mpsc::channel(QUEUE);
    let (rtx, rrx) = mpsc::channel(QUEUE);
    store.set_sink(Arc::new(Sink(ltx)));
    app.outbound.install();
    let dispatcher = app.dispatcher.clone().spawn(lrx, rrx);
    let (stop_tx, stop_rx) = watch::channel(false);
    let cluster_tasks = match &cluster {
        Some(c) => {
            let tasks = c.spawn(app.hub.clone(), rtx, stop_rx.clone());
            // Listen only once other nodes' traffic reaches this one.
            if !c.wait_subscribed(Duration::from_secs(5)).await {
                tracing::warn!("not subscribed to the cluster bus yet; serving anyway");
            }
            tasks
        }
        None => {
            drop(rtx);
            Vec::new()
        }
    };
    let ticker = {
        let app = app.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                app.marks.flush().await;
                n += 1;
                if n.is_multiple_of(120) {
                    app.rate.prune();
                }
            }
        })
    };
    let outbound = app
        .outbound
        .active()
        .then(|| tokio::spawn(app.outbound.clone().run(stop_rx.clone())));
    let router = crate::api::router(app.clone());
    let task = {
        let app = app.clone();
        tokio::spawn(async move {
            accept_loop(listener, tls, router, stop_rx).await;
            // Stop: close every socket cleanly, let requests in flight finish.
            app.shutting_down.store(true, Ordering::Relaxed);
            app.hub.close_all(Close::Code(
                tokenim_proto::close::GOING_AWAY,
                "server shutting down",
            ));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while (app.hub.connections() > 0 || app.commits.in_flight() > 0)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = ticker.await;
            if let Some(o) = outbound {
                let _ = o.await;
            }
            app.marks.flush().await;
            app.store.shutdown().await;
            if let Some(c) = &app.cluster {
                c.leave().await;
            }
            for t in cluster_tasks {
                t.abort();
            }
            dispatcher.abort();
            tracing::info!("stopped");
            Ok(())
        })
    };
    tracing::info!(%addr, tls = app.cfg.tls_cert.is_some(), "listening");
    if !app.push.names().is_empty() {
        tracing::info!(providers = ?app.push.names(), "push providers configured");
    }
    Ok(Server {
        addr,
        app,
        stop: stop_tx,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let svc = router
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let svc = TowerToHyperService::new(svc);
        let builder = Builder::new(TokioExecutor::new());
        match &tls {
            None => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .into_owned();
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = fut.await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            _ => return,
                        };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

/// Opens the store the configuration names: PostgreSQL or MySQL when
/// `database_url` is set (migrating its schema), else the embedded engine in
/// `data_dir`.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &cfg.database_url {
        Some(url) => {
            let store = tokenim_store::sql::SqlStore::connect(url, cfg.database_pool)
                .await
                .with_context(|| {
                    format!("opening the database {}", tokenim_store::sql::redact(url))
                })?;
            Ok(store)
        }
        None => {
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
            let store = tokenim_store::embedded::EmbeddedStore::open(&cfg.data_dir)
                .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
            Ok(Arc::new(store))
        }
    }
}
