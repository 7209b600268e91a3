//! `bench pairs` (closed loop: each sender keeps W messages in flight) and
//! `bench rate` (open loop: a fixed total rate for D seconds; sends never
//! wait for acks, so a slow server cannot slow the offered load down, and
//! the sender's lateness against its schedule is reported separately).
//! Each pair is a sender and a receiver in one direct conversation, driven
//! by one task that owns both sockets.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::client::{Conn, In};
use super::conns::IdleSet;
use super::hist::Hist;
use super::net::{CpuProbe, now_us};
use super::setup::{Ctx, Target};
use super::{Common, Counters, SeqTrack, fd_budget, result_head, round3};

#[derive(Args, Debug)]
pub struct PairsArgs {
    #[command(flatten)]
    pub c: Common,
    /// Sender->receiver pairs.
    #[arg(long, short = 'p', default_value_t = 16)]
    pub pairs: usize,
    /// Messages each sender keeps in flight (sent, not yet acked).
    #[arg(long, short = 'w', default_value_t = 1)]
    pub window: u64,
    /// Messages in total, spread evenly over the pairs.
    #[arg(long, short = 'm', default_value_t = 10_000)]
    pub messages: u64,
    /// Stop sending after this many seconds even if messages are left
    /// (0: no limit); what was sent is still awaited and checked.
    #[arg(long, short = 'd', default_value_t = 0.0)]
    pub duration: f64,
}

#[derive(Args, Debug)]
pub struct RateArgs {
    #[command(flatten)]
    pub c: Common,
    /// Sender->receiver pairs sharing the rate.
    #[arg(long, short = 'p', default_value_t = 64)]
    pub pairs: usize,
    /// Messages per second, all pairs together.
    #[arg(long, short = 'r', default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    /// Extra idle connected clients held during the run.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
}

/// How one pair sends.
#[derive(Clone, Copy)]
struct Plan {
    /// Messages this pair sends.
    m: u64,
    /// Closed loop: messages in flight; 0 for open loop.
    window: u64,
    /// Open loop: microseconds between messages, and the first one's time.
    interval_us: f64,
    first_us: u64,
    size: usize,
    /// Closed loop: no new message after this.
    send_until: Option<tokio::time::Instant>,
    deadline: tokio::time::Instant,
}

struct PairOut {
    sent: u64,
    acked: u64,
    errors: u64,
    track: SeqTrack,
    done_us: u64,
    failure: Option<String>,
}

struct Shared {
    ack: Hist,
    recv: Hist,
    /// Open loop: how late each send was against its schedule.
    lag: Hist,
    n: Counters,
}

fn at_us(us: u64) -> tokio::time::Instant {
    let now = now_us();
    let now_i = tokio::time::Instant::now();
    if us >= now {
        now_i + Duration::from_micros(us - now)
    } else {
        now_i - Duration::from_micros(now - us)
    }
}

async fn pair(mut snd: Conn, mut rcv: Conn, plan: Plan, sh: Arc<Shared>) -> PairOut {
    let mut out = PairOut {
        sent: 0,
        acked: 0,
        errors: 0,
        track: SeqTrack::new(plan.m + 1),
        done_us: 0,
        failure: None,
    };
    let r = drive(&mut snd, &mut rcv, plan, &sh, &mut out).await;
    if let Err(e) = r {
        out.failure = Some(format!("{e:#}"));
    }
    out.done_us = now_us();
    snd.close().await;
    rcv.close().await;
    out
}

async fn drive(
    snd: &mut Conn,
    rcv: &mut Conn,
    plan: Plan,
    sh: &Shared,
    o: &mut PairOut,
) -> anyhow::Result<()> {
    let open_loop = plan.window == 0;
    let due = |k: u64| plan.first_us + (k as f64 * plan.interval_us) as u64;
    if !open_loop {
        while o.sent < plan.window.min(plan.m) {
            snd.send(o.sent, now_us(), plan.size);
            o.sent += 1;
        }
        snd.flush().await?;
    }
    let timer = tokio::time::sleep_until(at_us(due(0)));
    tokio::pin!(timer);
    let stop = tokio::time::sleep_until(plan.deadline);
    tokio::pin!(stop);
    let mut m = plan.m;
    loop {
        if let Some(t) = plan.send_until
            && m > o.sent
            && tokio::time::Instant::now() >= t
        {
            m = o.sent;
        }
        if o.sent == m && o.acked + o.errors == o.sent && o.track.distinct >= o.acked {
            return Ok(());
        }
        tokio::select! {
            biased;
            _ = &mut stop => anyhow::bail!("timed out"),
            _ = &mut timer, if open_loop && o.sent < plan.m => {
                let now = now_us();
                while o.sent < plan.m && due(o.sent) <= now {
                    // latency counts from the moment the frame is written;
                    // how late that is against the schedule is kept apart
                    // (a client that falls behind shows there, not hidden)
                    sh.lag.record(now - due(o.sent));
                    snd.send(o.sent, now, plan.size);
                    o.sent += 1;
                }
                timer.as_mut().reset(at_us(due(o.sent)));
            }
            r = snd.recv() => {
                match r.context("sender")? {
                    In::Ack { sent_us, .. } => {
                        sh.ack.record(now_us().saturating_sub(sent_us));
                        o.acked += 1;
                        Counters::add(&sh.n.acked, 1);
                    }
                    In::SendErr => {
                        o.errors += 1;
                        Counters::add(&sh.n.errors, 1);
                    }
                    _ => continue,
                }
                if !open_loop && o.sent < m {
                    snd.send(o.sent, now_us(), plan.size);
                    o.sent += 1;
                }
            }
            r = rcv.recv() => {
                if let In::Msg { sent_us, order } = r.context("receiver")? {
                    sh.recv.record(now_us().saturating_sub(sent_us));
                    o.track.see(order);
                    Counters::add(&sh.n.received, 1);
                }
            }
        }
        if snd.pending() {
            snd.flush().await?;
        }
        if rcv.pending() {
            rcv.flush().await?;
        }
    }
}

/// Sets up P pairs (accounts, direct conversations, connections).
async fn setup_pairs(ctx: &Arc<Ctx>, p: usize) -> anyhow::Result<Vec<(Conn, Conn)>> {
    let senders = ctx.idents(ctx.names("s", p), |_| true).await?;
    let receivers = ctx.idents(ctx.names("r", p), |_| true).await?;
    let convs = match ctx.c.target {
        Target::Tokenim => {
            ctx.conversations(p, |i| {
                (
                    senders[i].token.clone(),
                    json!({"type": "direct", "peer": receivers[i].user_id}),
                )
            })
            .await?
        }
        Target::Xmpp => receivers.iter().map(|r| r.name.clone()).collect(),
    };
    // with several nodes, sender i is on node i and its receiver on the
    // next one, so every message crosses the cluster bus
    let mut snd = ctx
        .open_all_on("pairs: senders", &senders, |_| true, 0, |i| i)
        .await?;
    let rcv = ctx
        .open_all_on("pairs: receivers", &receivers, |_| false, p, |i| i + 1)
        .await?;
    if ctx.nodes.len() > 1 {
        ctx.note(format!(
            "pairs: {p} senders and {p} receivers over {} nodes, each receiver on another node than its sender",
            ctx.nodes.len()
        ));
    }
    for (c, conv) in snd.iter_mut().zip(&convs) {
        match c {
            Conn::Tim(t) => t.set_conv(conv),
            Conn::Xmpp(x) => x.set_peer(conv),
        }
    }
    Ok(snd.into_iter().zip(rcv).collect())
}

struct Run {
    outs: Vec<PairOut>,
    sh: Arc<Shared>,
    t0_us: u64,
    cpu: Map<String, Value>,
    cpu_line: String,
}

async fn run_all(
    ctx: &Arc<Ctx>,
    conns: Vec<(Conn, Conn)>,
    plan: impl Fn(usize, u64) -> Plan,
    label: &'static str,
    expect: u64,
) -> anyhow::Result<Run> {
    let sh = Arc::new(Shared {
        ack: Hist::default(),
        recv: Hist::default(),
        lag: Hist::default(),
        n: Counters::default(),
    });
    let (go, go_rx) = watch::channel(false);
    let t0_us = now_us() + 20_000;
    let mut tasks = Vec::new();
    for (i, (s, r)) in conns.into_iter().enumerate() {
        let plan = plan(i, t0_us);
        let sh = sh.clone();
        let mut go_rx = go_rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = go_rx.wait_for(|g| *g).await;
            pair(s, r, plan, sh).await
        }));
    }
    tokio::time::sleep_until(at_us(t0_us)).await;
    let probe = CpuProbe::start(&ctx.c.server_pid).with_aux(&ctx.c.aux_procs);
    let _ = go.send(true);
    let quiet = ctx.c.quiet;
    let shp = sh.clone();
    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = 0;
        loop {
            tick.tick().await;
            let a = Counters::get(&shp.n.acked);
            if !quiet {
                eprintln!(
                    "{label}: {a}/{expect} acked ({}/s), {} received, {} errors",
                    a - last,
                    Counters::get(&shp.n.received),
                    Counters::get(&shp.n.errors)
                );
            }
            last = a;
        }
    });
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await?);
    }
    progress.abort();
    let mut cpu = Map::new();
    let cpu_line = probe.finish(&mut cpu);
    Ok(Run {
        outs,
        sh,
        t0_us,
        cpu,
        cpu_line,
    })
}

/// Totals over all pairs, into the JSON result and the summary.
fn report(scenario: &str, c: &Common, run: &Run) -> (Vec<String>, Map<String, Value>) {
    let mut acked = 0;
    let mut errors = 0;
    let mut delivered = 0;
    let mut lost = 0;
    let mut dup = 0;
    let mut ooo = 0;
    let mut end = run.t0_us;
    let mut failures = Vec::new();
    let mut sent = 0;
    for o in &run.outs {
        sent += o.sent;
        acked += o.acked;
        errors += o.errors;
        delivered += o.track.distinct.min(o.acked);
        lost += o.acked.saturating_sub(o.track.distinct);
        dup += o.track.duplicated;
        ooo += o.track.out_of_order;
        end = end.max(o.done_us);
        if let Some(f) = &o.failure {
            failures.push(f.clone());
        }
    }
    let secs = (end - run.t0_us) as f64 / 1e6;
    let rate = delivered as f64 / secs.max(1e-9);
    let mut m = result_head(scenario, c);
    m.insert("msgs_per_sec".into(), round3(rate));
    run.sh.ack.json("", &mut m);
    run.sh.recv.json("recv_", &mut m);
    if run.sh.lag.count() > 0 {
        run.sh.lag.json("sched_lag_", &mut m);
    }
    m.insert("sent".into(), json!(sent));
    m.insert("acked".into(), json!(acked));
    m.insert("delivered".into(), json!(delivered));
    m.insert("errors".into(), json!(errors));
    m.insert("lost".into(), json!(lost));
    m.insert("duplicated".into(), json!(dup));
    m.insert("out_of_order".into(), json!(ooo));
    m.insert("failed_pairs".into(), json!(failures.len()));
    m.insert("secs".into(), round3(secs));
    m.extend(run.cpu.clone());
    let mut s = vec![
        format!(
            "{scenario} ({:?}): {acked} acked and {delivered} delivered of {sent} sent in {secs:.2} s: {rate:.0} msgs/s",
            c.target
        ),
        format!("send -> send_ack: {}", run.sh.ack.human()),
        format!("send -> receive:  {}", run.sh.recv.human()),
        if run.sh.lag.count() > 0 {
            format!("send lateness against the schedule: {}", run.sh.lag.human())
        } else {
            "closed loop: each send follows an ack".into()
        },
        format!("lost {lost}, duplicated {dup}, out of order {ooo}, errors {errors}"),
        run.cpu_line.clone(),
    ];
    if c.url.len() > 1 {
        s.push(format!(
            "{} nodes: senders spread round-robin, each receiver on another node than its sender",
            c.url.len()
        ));
    }
    if let Some(f) = failures.first() {
        s.push(format!("{} pairs failed, first: {f}", failures.len()));
    }
    (s, m)
}

pub async fn run_pairs(a: PairsArgs) -> anyhow::Result<(Vec<String>, Map<String, Value>)> {
    anyhow::ensure!(
        a.pairs > 0 && a.window > 0,
        "--pairs and --window must be positive"
    );
    let ctx = Arc::new(Ctx::new(&a.c).await?);
    fd_budget(&ctx, a.pairs * 2 + a.c.setup_concurrency)?;
    let conns = setup_pairs(&ctx, a.pairs).await?;
    let per = a.messages.div_ceil(a.pairs as u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.c.timeout);
    let (window, size) = (a.window, a.c.size);
    let send_until = (a.duration > 0.0)
        .then(|| tokio::time::Instant::now() + Duration::from_secs_f64(a.duration));
    let p = a.pairs as u64;
    let total = a.messages;
    let run = run_all(
        &ctx,
        conns,
        |i, _| Plan {
            // the first `total % p` pairs send one more
            m: per - u64::from((i as u64) >= total - (per - 1) * p),
            window,
            interval_us: 0.0,
            first_us: 0,
            size,
            send_until,
            deadline,
        },
        "pairs",
        total,
    )
    .await?;
    let (mut s, mut m) = report("pairs", &a.c, &run);
    m.insert("pairs".into(), json!(a.pairs));
    m.insert("window".into(), json!(a.window));
    s.insert(
        0,
        format!("{} pairs, window {}, {} messages", a.pairs, a.window, total),
    );
    Ok((s, m))
}

pub async fn run_rate(a: RateArgs) -> anyhow::Result<(Vec<String>, Map<String, Value>)> {
    anyhow::ensure!(
        a.pairs > 0 && a.rate > 0.0,
        "--pairs and --rate must be positive"
    );
    let ctx = Arc::new(Ctx::new(&a.c).await?);
    fd_budget(&ctx, a.pairs * 2 + a.idle + a.c.setup_concurrency)?;
    let idle = if a.idle > 0 {
        let ids = ctx.idents(ctx.names("i", a.idle), |_| true).await?;
        let set = IdleSet::open(&ctx, ids, 2 * a.pairs, "rate: idle clients").await;
        ctx.note(format!(
            "rate: {} idle clients connected ({} failed)",
            set.connected, set.failed
        ));
        Some(set)
    } else {
        None
    };
    let conns = setup_pairs(&ctx, a.pairs).await?;
    let per_pair_rate = a.rate / a.pairs as f64;
    let interval_us = 1e6 / per_pair_rate;
    let m = (per_pair_rate * a.duration).round().max(1.0) as u64;
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs_f64(a.duration)
        + Duration::from_secs(a.c.timeout);
    let size = a.c.size;
    let p = a.pairs;
    let total = m * p as u64;
    let run = run_all(
        &ctx,
        conns,
        |i, t0| Plan {
            m,
            window: 0,
            interval_us,
            // spread the pairs over one interval
            first_us: t0 + (interval_us * i as f64 / p as f64) as u64,
            size,
            send_until: None,
            deadline,
        },
        "rate",
        total,
    )
    .await?;
    let (mut s, mut mm) = report("rate", &a.c, &run);
    mm.insert("target_rate".into(), json!(a.rate));
    mm.insert("pairs".into(), json!(a.pairs));
    mm.insert("duration".into(), json!(a.duration));
    let mut idle_json = json!(0);
    if let Some(set) = idle {
        let dropped = set.dropped.load(std::sync::atomic::Ordering::Relaxed);
        idle_json = json!(set.connected);
        s.push(format!(
            "{} idle clients held, {dropped} dropped",
            set.connected
        ));
        mm.insert("idle_dropped".into(), json!(dropped));
        set.close().await;
    }
    mm.insert("idle".into(), idle_json);
    s.insert(
        0,
        format!(
            "target {} msgs/s over {} pairs for {} s, open loop",
            a.rate, a.pairs, a.duration
        ),
    );
    Ok((s, mm))
}
