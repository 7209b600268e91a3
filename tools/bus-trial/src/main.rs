//! bus-trial: Redis pub/sub vs NATS core pub/sub as the cross-node bus of a
//! tokenim cluster.
//!
//! Shape: N "nodes" (default 3), each with one publisher connection and one
//! subscriber connection to the broker; every subscriber subscribes to the
//! same channel/subject, so every message is broadcast to all N
//! subscribers. Payloads are `--size` bytes (default 300) and carry the
//! publisher, a sequence number and the send time, so a subscriber computes
//! publish->receive latency without shared state.
//!
//! Two measurements:
//! * `throughput`: closed loop. Each publisher keeps at most `--window`
//!   messages "in flight" (published but not yet received by every
//!   subscriber), so the rate settles where the slowest subscriber keeps up
//!   (nothing is dropped, no output buffer grows without bound).
//! * `latency`: open loop at `--rate` messages/s in total (split over the
//!   publishers), publishes never wait on anything.
//!
//! Every run counts losses (published but never received) and the broker
//! process's CPU time over the measured window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use redis::AsyncCommands;
use tokio::sync::{Notify, watch};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bus {
    /// One PUBLISH command (and reply) per message, concurrent over a
    /// multiplexed connection.
    Redis,
    /// The messages due at once go out as one pipeline of PUBLISHes.
    RedisPipe,
    Nats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Throughput,
    Latency,
}

#[derive(Clone, Debug)]
struct Args {
    buses: Vec<Bus>,
    modes: Vec<Mode>,
    runs: usize,
    seconds: f64,
    warmup: f64,
    rate: f64,
    size: usize,
    window: u64,
    nodes: usize,
    threads: usize,
    redis_url: String,
    nats_url: String,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            buses: vec![Bus::Redis, Bus::RedisPipe, Bus::Nats],
            modes: vec![Mode::Throughput, Mode::Latency],
            runs: 3,
            seconds: 5.0,
            warmup: 1.0,
            rate: 5000.0,
            size: 300,
            window: 1000,
            nodes: 3,
            threads: 2,
            redis_url: "redis://127.0.0.1:6379/".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
        }
    }
}

const USAGE: &str = "bus-trial [--bus redis,redis-pipe,nats] [--mode throughput,latency] [--runs 3] \
[--seconds 5] [--warmup 1] [--rate 5000] [--size 300] [--window 1000] [--nodes 3] \
[--threads 2] [--redis-url redis://127.0.0.1:6379/] [--nats-url nats://127.0.0.1:4222]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "-h" || k == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it.next().ok_or(format!("{k} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--bus" => {
                a.buses = v
                    .split(',')
                    .map(|b| match b {
                        "redis" => Ok(Bus::Redis),
                        "redis-pipe" => Ok(Bus::RedisPipe),
                        "nats" => Ok(Bus::Nats),
                        _ => Err(format!("unknown bus {b}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--mode" => {
                a.modes = v
                    .split(',')
                    .map(|m| match m {
                        "throughput" => Ok(Mode::Throughput),
                        "latency" => Ok(Mode::Latency),
                        _ => Err(format!("unknown mode {m}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--runs" => a.runs = num(&v)? as usize,
            "--seconds" => a.seconds = num(&v)?,
            "--warmup" => a.warmup = num(&v)?,
            "--rate" => a.rate = num(&v)?,
            "--size" => a.size = (num(&v)? as usize).max(24),
            "--window" => a.window = (num(&v)? as u64).max(1),
            "--nodes" => a.nodes = (num(&v)? as usize).max(1),
            "--threads" => a.threads = (num(&v)? as usize).max(1),
            "--redis-url" => a.redis_url = v,
            "--nats-url" => a.nats_url = v,
            _ => return Err(format!("unknown option {k}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn clock() -> &'static Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    clock().elapsed().as_micros() as u64
}

/// State shared by the tasks of one run.
struct Shared {
    nodes: usize,
    /// recv[sub * nodes + pub]: messages of publisher `pub` seen by `sub`.
    recv: Vec<AtomicU64>,
    /// Wakes publisher p when one of its messages arrived somewhere.
    wake: Vec<Notify>,
    /// Latency samples are kept for messages sent in [from, to).
    sample_from: AtomicU64,
    sample_to: AtomicU64,
    stop_sending: AtomicBool,
    /// Subscriber s has seen a probe: its subscription is live.
    ready: Vec<AtomicBool>,
}

/// The publisher field of a probe message (not counted).
const PROBE: u64 = u64::MAX;

impl Shared {
    fn min_recv(&self, p: usize) -> u64 {
        (0..self.nodes)
            .map(|s| self.recv[s * self.nodes + p].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    fn total_recv(&self) -> u64 {
        self.recv.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

enum PubConn {
    Redis(redis::aio::MultiplexedConnection, bool),
    Nats(async_nats::Client),
}

enum SubConn {
    Redis(redis::aio::PubSubStream),
    Nats(async_nats::Subscriber),
}

async fn connect(a: &Args, bus: Bus, chan: &str) -> Result<(Vec<PubConn>, Vec<SubConn>), String> {
    let mut pubs = Vec::new();
    let mut subs = Vec::new();
    match bus {
        Bus::Redis | Bus::RedisPipe => {
            let client = redis::Client::open(a.redis_url.as_str()).map_err(|e| e.to_string())?;
            for _ in 0..a.nodes {
                let c = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| format!("redis: {e}"))?;
                pubs.push(PubConn::Redis(c, bus == Bus::RedisPipe));
                let mut ps = client
                    .get_async_pubsub()
                    .await
                    .map_err(|e| format!("redis: {e}"))?;
                ps.subscribe(chan).await.map_err(|e| e.to_string())?;
                subs.push(SubConn::Redis(ps.into_on_message()));
            }
        }
        Bus::Nats => {
            for _ in 0..a.nodes {
                let c = async_nats::connect(a.nats_url.as_str())
                    .await
                    .map_err(|e| format!("nats: {e}"))?;
                pubs.push(PubConn::Nats(c));
                let c = async_nats::connect(a.nats_url.as_str())
                    .await
                    .map_err(|e| format!("nats: {e}"))?;
                let s = c
                    .subscribe(chan.to_string())
                    .await
                    .map_err(|e| e.to_string())?;
                // the SUB must have reached the server before anyone publishes
                c.flush().await.map_err(|e| e.to_string())?;
                subs.push(SubConn::Nats(s));
            }
        }
    }
    Ok((pubs, subs))
}

fn payload(p: usize, seq: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(&(p as u64).to_le_bytes());
    finish_payload(v, seq, size)
}

fn finish_payload(mut v: Vec<u8>, seq: u64, size: usize) -> Vec<u8> {
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&now_us().to_le_bytes());
    v.resize(size, b'x');
    v
}

/// Futures publishing `bodies`: one per message, or one for a Redis
/// pipeline of them all.
fn publish_many(
    c: &PubConn,
    chan: &Arc<str>,
    bodies: Vec<Vec<u8>>,
) -> Vec<BoxFuture<'static, Result<(), String>>> {
    match c {
        PubConn::Redis(c, true) if bodies.len() > 1 => {
            let mut c = c.clone();
            let mut pipe = redis::pipe();
            for b in bodies {
                pipe.publish(&**chan, b).ignore();
            }
            vec![Box::pin(async move {
                pipe.query_async::<()>(&mut c)
                    .await
                    .map_err(|e| e.to_string())
            })]
        }
        _ => bodies.into_iter().map(|b| publish(c, chan, b)).collect(),
    }
}

fn publish(c: &PubConn, chan: &Arc<str>, body: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
    match c {
        PubConn::Redis(c, _) => {
            let mut c = c.clone();
            let chan = chan.clone();
            Box::pin(async move {
                c.publish::<_, _, i64>(&*chan, body)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        }
        PubConn::Nats(c) => {
            let c = c.clone();
            let subj = chan.to_string();
            Box::pin(async move {
                c.publish(subj, bytes::Bytes::from(body))
                    .await
                    .map_err(|e| e.to_string())
            })
        }
    }
}

/// Publisher p: closed loop (window) or open loop (interval_us > 0).
/// Returns (messages published, publish errors).
async fn publisher(
    p: usize,
    conn: PubConn,
    chan: Arc<str>,
    sh: Arc<Shared>,
    window: u64,
    interval_us: f64,
    size: usize,
) -> (u64, u64, PubConn) {
    let mut pending = FuturesUnordered::new();
    let mut sent = 0u64;
    let mut errors = 0u64;
    let open_loop = interval_us > 0.0;
    let first = now_us();
    let due = |k: u64| first + (k as f64 * interval_us) as u64;
    // Redis replies are awaited, but never more than this many at once.
    const MAX_PENDING: usize = 1024;
    loop {
        if sh.stop_sending.load(Ordering::Relaxed) {
            break;
        }
        if open_loop {
            let now = now_us();
            let mut batch = Vec::new();
            while due(sent) <= now {
                batch.push(payload(p, sent, size));
                sent += 1;
            }
            pending.extend(publish_many(&conn, &chan, batch));
            let wait = Duration::from_micros(due(sent).saturating_sub(now_us()));
            tokio::select! {
                Some(r) = pending.next(), if !pending.is_empty() => {
                    if r.is_err() { errors += 1; }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        } else {
            let in_flight = sent - sh.min_recv(p);
            let room = window.saturating_sub(in_flight) as usize;
            let room = room.min(MAX_PENDING.saturating_sub(pending.len()));
            let mut batch = Vec::new();
            for _ in 0..room.min(64) {
                batch.push(payload(p, sent, size));
                sent += 1;
            }
            pending.extend(publish_many(&conn, &chan, batch));
            if room > 0 {
                // let the other tasks run between bursts
                while let Some(Some(r)) = futures_util::FutureExt::now_or_never(pending.next()) {
                    if r.is_err() {
                        errors += 1;
                    }
                }
                if room >= 64 {
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            tokio::select! {
                Some(r) = pending.next(), if !pending.is_empty() => {
                    if r.is_err() { errors += 1; }
                }
                _ = sh.wake[p].notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
    while let Some(r) = pending.next().await {
        if r.is_err() {
            errors += 1;
        }
    }
    if let PubConn::Nats(c) = &conn {
        let _ = c.flush().await;
    }
    // the connection is dropped only after the drain, so nothing still in
    // its socket is cut off
    (sent, errors, conn)
}

/// Subscriber s: counts per publisher, keeps latency samples.
async fn subscriber(
    s: usize,
    conn: SubConn,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Vec<u32> {
    let mut samples = Vec::with_capacity(1 << 16);
    let mut see = |b: &[u8]| {
        let now = now_us();
        if b.len() < 24 {
            return;
        }
        let p = u64::from_le_bytes(b[0..8].try_into().unwrap());
        let ts = u64::from_le_bytes(b[16..24].try_into().unwrap());
        if p == PROBE {
            sh.ready[s].store(true, Ordering::Relaxed);
            return;
        }
        let p = p as usize;
        if p >= sh.nodes {
            return;
        }
        if ts >= sh.sample_from.load(Ordering::Relaxed) && ts < sh.sample_to.load(Ordering::Relaxed)
        {
            samples.push(now.saturating_sub(ts).min(u32::MAX as u64) as u32);
        }
        sh.recv[s * sh.nodes + p].fetch_add(1, Ordering::Relaxed);
        sh.wake[p].notify_one();
    };
    match conn {
        SubConn::Redis(mut st) => loop {
            tokio::select! {
                m = st.next() => match m {
                    Some(m) => see(m.get_payload_bytes()),
                    None => break,
                },
                _ = stop.changed() => break,
            }
        },
        SubConn::Nats(mut st) => loop {
            tokio::select! {
                m = st.next() => match m {
                    Some(m) => see(&m.payload),
                    None => break,
                },
                _ = stop.changed() => break,
            }
        },
    }
    samples
}

/// utime+stime of a process, in microseconds (from /proc).
fn cpu_us(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux
    Some(ticks * 10_000)
}

/// Busy CPU time of the whole machine (all cores), in microseconds.
fn machine_busy_us() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    Some((v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7)?) * 10_000)
}

/// The pid of the first process whose name is `comm`.
fn find_pid(comm: &str) -> Option<String> {
    let mut pids: Vec<u64> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u64| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect();
    pids.sort();
    pids.first().map(|p| p.to_string())
}

#[derive(Clone, Debug, Default)]
struct Outcome {
    /// Messages per second delivered to every subscriber (deliveries / N).
    rate: f64,
    /// Deliveries per second, all subscribers together.
    deliveries: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    lost: u64,
    errors: u64,
    broker_cpu_pct: f64,
    /// Broker CPU per delivered message (one publish, N deliveries).
    broker_us_per_msg: f64,
    self_cpu_pct: f64,
    /// This process's CPU (3 publishers + 3 subscribers, the share a
    /// tokenim node would pay) per delivered message.
    self_us_per_msg: f64,
    /// CPU of everything else on the machine (noise), % of one core.
    other_cpu_pct: f64,
}

fn pct(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn run_once(a: &Args, bus: Bus, mode: Mode, run: usize) -> Result<Outcome, String> {
    let chan: Arc<str> = format!("bus-trial.{}.{run}.{mode:?}", std::process::id()).into();
    let (pubs, subs) = connect(a, bus, &chan).await?;
    let n = a.nodes;
    let sh = Arc::new(Shared {
        nodes: n,
        recv: (0..n * n).map(|_| AtomicU64::new(0)).collect(),
        wake: (0..n).map(|_| Notify::new()).collect(),
        sample_from: AtomicU64::new(u64::MAX),
        sample_to: AtomicU64::new(u64::MAX),
        stop_sending: AtomicBool::new(false),
        ready: (0..n).map(|_| AtomicBool::new(false)).collect(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(s, c)| tokio::spawn(subscriber(s, c, sh.clone(), stop_rx.clone())))
        .collect();
    // A NATS client's flush() only writes its buffer out; the server may
    // not have processed a SUB yet when another connection publishes. So
    // probe until every subscriber has seen a message.
    let probe_until = Instant::now() + Duration::from_secs(5);
    while !sh.ready.iter().all(|r| r.load(Ordering::Relaxed)) {
        if Instant::now() > probe_until {
            return Err("subscribers did not see the probe within 5 s".into());
        }
        let body = finish_payload(PROBE.to_le_bytes().to_vec(), 0, a.size);
        publish(&pubs[0], &chan, body).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (window, interval_us) = match mode {
        Mode::Throughput => (a.window, 0.0),
        Mode::Latency => (0, 1e6 * n as f64 / a.rate),
    };
    let pub_tasks: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(p, c)| {
            tokio::spawn(publisher(
                p,
                c,
                chan.clone(),
                sh.clone(),
                window,
                interval_us,
                a.size,
            ))
        })
        .collect();

    let broker = find_pid(match bus {
        Bus::Redis | Bus::RedisPipe => "redis-server",
        Bus::Nats => "nats-server",
    });
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let t0 = now_us();
    let d0 = sh.total_recv();
    let b0 = broker.as_deref().and_then(cpu_us);
    let s0 = cpu_us("self");
    let m0 = machine_busy_us();
    sh.sample_from.store(t0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(a.seconds)).await;
    let t1 = now_us();
    sh.sample_to.store(t1, Ordering::Relaxed);
    let d1 = sh.total_recv();
    let b1 = broker.as_deref().and_then(cpu_us);
    let s1 = cpu_us("self");
    let m1 = machine_busy_us();
    sh.stop_sending.store(true, Ordering::Relaxed);

    let mut sent = vec![0u64; n];
    let mut errors = 0;
    let mut keep = Vec::new();
    for (p, t) in pub_tasks.into_iter().enumerate() {
        let (s, e, c) = t.await.map_err(|e| e.to_string())?;
        sent[p] = s;
        errors += e;
        keep.push(c);
    }
    // drain: wait until everything published has arrived everywhere
    let expect: u64 = sent.iter().sum::<u64>() * n as u64;
    let drain_until = Instant::now() + Duration::from_secs(10);
    while sh.total_recv() < expect && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = sh.total_recv();
    if got < expect {
        eprintln!(
            "{bus:?} {mode:?}: {} of {expect} deliveries missing after 10 s",
            expect - got
        );
    }
    let _ = stop_tx.send(true);
    drop(keep);
    let mut samples = Vec::new();
    for t in sub_tasks {
        samples.extend(t.await.map_err(|e| e.to_string())?);
    }
    samples.sort_unstable();
    let secs = (t1 - t0) as f64 / 1e6;
    let deliveries = (d1 - d0) as f64 / secs;
    let rate = deliveries / n as f64;
    let broker_cpu = match (b0, b1) {
        (Some(a), Some(b)) => (b - a) as f64,
        _ => f64::NAN,
    };
    let self_cpu = match (s0, s1) {
        (Some(a), Some(b)) => (b - a) as f64,
        _ => f64::NAN,
    };
    Ok(Outcome {
        rate,
        deliveries,
        p50_ms: pct(&samples, 0.50),
        p99_ms: pct(&samples, 0.99),
        max_ms: samples.last().map_or(f64::NAN, |&m| m as f64 / 1000.0),
        lost: expect.saturating_sub(got),
        errors,
        broker_cpu_pct: broker_cpu / (t1 - t0) as f64 * 100.0,
        broker_us_per_msg: broker_cpu / secs / rate,
        self_cpu_pct: self_cpu / (t1 - t0) as f64 * 100.0,
        self_us_per_msg: self_cpu / secs / rate,
        other_cpu_pct: match (m0, m1) {
            (Some(a), Some(b)) => {
                ((b - a) as f64 - broker_cpu - self_cpu).max(0.0) / (t1 - t0) as f64 * 100.0
            }
            _ => f64::NAN,
        },
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()
        .expect("runtime");
    clock();
    let code = rt.block_on(async move {
        eprintln!(
            "bus-trial: {} nodes, {} B payloads, {} s measured after {} s warm-up, {} runs, \
             window {}, latency rate {}/s, {} runtime threads",
            a.nodes, a.size, a.seconds, a.warmup, a.runs, a.window, a.rate, a.threads
        );
        let mut results: Vec<(Bus, Mode, Vec<Outcome>)> = Vec::new();
        for &mode in &a.modes {
            for &bus in &a.buses {
                results.push((bus, mode, Vec::new()));
            }
        }
        for run in 0..a.runs {
            for (bus, mode, outs) in results.iter_mut() {
                match run_once(&a, *bus, *mode, run).await {
                    Ok(o) => {
                        println!(
                            "run {} {:?} {:?}: {:.0} msgs/s to all ({:.0} deliveries/s), \
                             p50 {:.3} ms p99 {:.3} ms max {:.1} ms, lost {}, errors {}, \
                             broker cpu {:.0}% ({:.1} us/msg), bench cpu {:.0}% ({:.1} us/msg), \
                             rest of machine {:.0}%",
                            run + 1,
                            bus,
                            mode,
                            o.rate,
                            o.deliveries,
                            o.p50_ms,
                            o.p99_ms,
                            o.max_ms,
                            o.lost,
                            o.errors,
                            o.broker_cpu_pct,
                            o.broker_us_per_msg,
                            o.self_cpu_pct,
                            o.self_us_per_msg,
                            o.other_cpu_pct
                        );
                        outs.push(o);
                    }
                    Err(e) => {
                        eprintln!("run {} {bus:?} {mode:?}: {e}", run + 1);
                        return 1;
                    }
                }
            }
        }
        println!();
        println!(
            "| bus | mode | msgs/s to all {n} | deliveries/s | p50 ms | p99 ms | lost | broker CPU % | broker us/msg | client us/msg | other CPU % |",
            n = a.nodes
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (bus, mode, outs) in &results {
            let m = |f: fn(&Outcome) -> f64| median(outs.iter().map(f).collect());
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.3} | {:.3} | {} | {:.0} | {:.1} | {:.1} | {:.0} |",
                match bus {
                    Bus::Redis => "redis",
                    Bus::RedisPipe => "redis (pipelined)",
                    Bus::Nats => "nats",
                },
                match mode {
                    Mode::Throughput => format!("max (window {})", a.window),
                    Mode::Latency => format!("{:.0}/s", a.rate),
                },
                m(|o| o.rate),
                m(|o| o.deliveries),
                m(|o| o.p50_ms),
                m(|o| o.p99_ms),
                outs.iter().map(|o| o.lost).sum::<u64>(),
                m(|o| o.broker_cpu_pct),
                m(|o| o.broker_us_per_msg),
                m(|o| o.self_us_per_msg),
                m(|o| o.other_cpu_pct),
            );
        }
        0
    });
    std::process::exit(code);
}
