//! `bench conns`: open N authenticated connections, hold them idle, and
//! report the connect rate, failures and the server's memory per
//! connection (its VmRSS before and after, with `--server-pid`). The idle
//! set is also used by `rate --idle` to load the server with bystanders.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

use super::client::show_error_once;
use super::hist::Hist;
use super::net::{CpuProbe, kernel_tcp_bytes, now_us, rss_total};
use super::setup::{Ctx, Ident};
use super::{Common, fd_budget, result_head, round3};

#[derive(Args, Debug)]
pub struct ConnsArgs {
    #[command(flatten)]
    pub c: Common,
    /// Connections to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub conns: usize,
    /// Seconds to hold them idle before measuring memory.
    #[arg(long, default_value_t = 2.0)]
    pub hold: f64,
}

/// Idle authenticated connections, each held by its own small task that
/// answers pings and sends a heartbeat every 20 s until stopped.
pub struct IdleSet {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub connected: u64,
    pub failed: u64,
    pub dropped: Arc<AtomicU64>,
    pub latency: Arc<Hist>,
    pub elapsed: Duration,
}

impl IdleSet {
    /// Opens a connection for each of `ids` (connection numbers from
    /// `base`), returning once every attempt has finished.
    pub async fn open(ctx: &Arc<Ctx>, ids: Vec<Ident>, base: usize, label: &str) -> IdleSet {
        let n = ids.len();
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, mut done_rx) = mpsc::channel::<bool>(1024);
        let sem = Arc::new(Semaphore::new(ctx.c.connect_concurrency));
        let latency = Arc::new(Hist::default());
        let dropped = Arc::new(AtomicU64::new(0));
        let progress_n = Arc::new(AtomicU64::new(0));
        let progress = ctx.progress(label, n as u64, progress_n.clone());
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity(n);
        for (i, id) in ids.into_iter().enumerate() {
            let ctx = ctx.clone();
            let sem = sem.clone();
            let done_tx = done_tx.clone();
            let mut stop_rx = stop_rx.clone();
            let latency = latency.clone();
            let dropped = dropped.clone();
            tasks.push(tokio::spawn(async move {
                let permit = sem
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let t = now_us();
                let mut c = match ctx.open(&id, base + i, false, 1024).await {
                    Ok(c) => c,
                    Err(e) => {
                        show_error_once(&format!("connect: {e:#}"));
                        drop(permit);
                        let _ = done_tx.send(false).await;
                        return;
                    }
                };
                drop(id);
                latency.record(now_us() - t);
                drop(permit);
                let _ = done_tx.send(true).await;
                drop(done_tx);
                let mut beat = tokio::time::interval(Duration::from_secs(20));
                beat.tick().await;
                loop {
                    tokio::select! {
                        r = c.recv() => if r.is_err() {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        },
                        _ = stop_rx.changed() => {
                            c.close().await;
                            return;
                        }
                        _ = beat.tick() => c.ping(),
                    }
                    if c.pending() && c.flush().await.is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }));
        }
        drop(done_tx);
        let (mut connected, mut failed) = (0, 0);
        while let Some(ok) = done_rx.recv().await {
            if ok {
                connected += 1;
            } else {
                failed += 1;
            }
            progress_n.fetch_add(1, Ordering::Relaxed);
        }
        let elapsed = t0.elapsed();
        progress.abort();
        IdleSet {
            stop,
            tasks,
            connected,
            failed,
            dropped,
            latency,
            elapsed,
        }
    }

    /// Closes every connection and waits for the tasks.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub async fn run(a: ConnsArgs) -> anyhow::Result<(Vec<String>, Map<String, Value>)> {
    let ctx = Arc::new(Ctx::new(&a.c).await?);
    fd_budget(&ctx, a.conns)?;
    let ids = ctx.idents(ctx.names("c", a.conns), |_| true).await?;
    let rss0 = rss_total(&a.c.server_pid);
    let k0 = kernel_tcp_bytes();
    let probe = CpuProbe::start(&a.c.server_pid).with_aux(&a.c.aux_procs);
    let set = IdleSet::open(&ctx, ids, 0, "conns: connected").await;
    let mut cpu = Map::new();
    let cpu_line = probe.finish(&mut cpu);
    let conn_secs = set.elapsed.as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    let rss1 = rss_total(&a.c.server_pid);
    let k1 = kernel_tcp_bytes();
    let dropped = set.dropped.load(Ordering::Relaxed);
    let (connected, failed) = (set.connected, set.failed);
    let per = |b: Option<u64>, a: Option<u64>| match (b, a) {
        (Some(b), Some(a)) if connected > 0 => Some((a as f64 - b as f64) / connected as f64),
        _ => None,
    };
    let rss_per = per(rss0, rss1);
    let k_per = per(k0, k1);
    let rate = connected as f64 / conn_secs.max(1e-9);

    let mut m = result_head("conns", &a.c);
    m.insert("connections".into(), json!(connected));
    m.insert("failed".into(), json!(failed));
    m.insert("dropped".into(), json!(dropped));
    m.insert("connect_secs".into(), round3(conn_secs));
    m.insert("conns_per_sec".into(), round3(rate));
    m.insert("msgs_per_sec".into(), json!(0));
    set.latency.json("", &mut m);
    m.insert("server_rss_before".into(), json!(rss0));
    m.insert("server_rss_after".into(), json!(rss1));
    m.insert(
        "server_bytes_per_conn".into(),
        json!(rss_per.map(|x| x.round())),
    );
    m.insert(
        "kernel_tcp_bytes_per_conn".into(),
        json!(k_per.map(|x| x.round())),
    );
    m.insert("lost".into(), json!(0));
    m.insert("duplicated".into(), json!(0));
    m.insert("out_of_order".into(), json!(0));
    m.extend(cpu);
    let summary = vec![
        format!(
            "conns ({:?}): {connected} connected, {failed} failed, {dropped} dropped while idle",
            a.c.target
        ),
        format!(
            "connect: {rate:.0} conns/s over {conn_secs:.2} s; connect+auth latency {}",
            set.latency.human()
        ),
        match (rss0, rss1, rss_per) {
            (Some(b), Some(a), Some(p)) => format!(
                "server RSS {:.1} MiB -> {:.1} MiB: {p:.0} bytes per connection",
                b as f64 / 1048576.0,
                a as f64 / 1048576.0
            ),
            _ => "server RSS: not measured (pass --server-pid)".to_string(),
        },
        match k_per {
            Some(k) => format!("kernel TCP buffers (both ends): {k:.0} bytes per connection"),
            None => "kernel TCP buffers: unknown".into(),
        },
        format!("while connecting: {cpu_line}"),
    ];
    set.close().await;
    Ok((summary, m))
}
