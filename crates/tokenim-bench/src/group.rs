//! `bench group`: G groups of K members, a fraction of them online, S
//! senders per group each keeping W messages in flight. Measures
//! deliveries per second (events pushed to online members) and the
//! send->receive latency; every online non-sender member must receive
//! every acked message of its group once and in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::client::{Conn, In};
use super::hist::Hist;
use super::net::{CpuProbe, now_us};
use super::setup::{Ctx, Target};
use super::{Common, Counters, SeqTrack, fd_budget, result_head, round3};

#[derive(Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    pub c: Common,
    /// Groups.
    #[arg(long, short = 'g', default_value_t = 10)]
    pub groups: usize,
    /// Members per group (senders included).
    #[arg(long, short = 'k', default_value_t = 100)]
    pub members: usize,
    /// Fraction of the non-sender members that are online.
    #[arg(long, default_value_t = 1.0)]
    pub online: f64,
    /// Senders per group.
    #[arg(long, short = 's', default_value_t = 1)]
    pub senders: usize,
    /// Messages each sender keeps in flight.
    #[arg(long, short = 'w', default_value_t = 8)]
    pub window: u64,
    /// Messages in total over all senders of all groups.
    #[arg(long, short = 'm', default_value_t = 1000)]
    pub messages: u64,
}

struct Shared {
    recv: Hist,
    ack: Hist,
    n: Counters,
    deliveries: AtomicU64,
    last_delivery_us: AtomicU64,
}

struct Out {
    acked: u64,
    track: Option<SeqTrack>,
    group: usize,
    failure: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn member(
    mut c: Conn,
    group: usize,
    send: u64,
    window: u64,
    size: usize,
    expect_recv: u64,
    track_seqs: bool,
    sh: Arc<Shared>,
    mut go: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
) -> Out {
    let _ = go.wait_for(|g| *g).await;
    let mut out = Out {
        acked: 0,
        track: track_seqs.then(|| SeqTrack::new(expect_recv + 2)),
        group,
        failure: None,
    };
    let mut received = 0u64;
    let mut sent = 0u64;
    let mut errors = 0u64;
    let r: anyhow::Result<()> = async {
        while sent < send.min(window) {
            c.send(sent, now_us(), size);
            sent += 1;
        }
        c.flush().await?;
        let stop = tokio::time::sleep_until(deadline);
        tokio::pin!(stop);
        while out.acked + errors < send || received < expect_recv {
            tokio::select! {
                biased;
                _ = &mut stop => anyhow::bail!("timed out"),
                r = c.recv() => {
                    let mut refill = false;
                    match r.context("member")? {
                        In::Ack { sent_us, .. } => {
                            sh.ack.record(now_us().saturating_sub(sent_us));
                            out.acked += 1;
                            Counters::add(&sh.n.acked, 1);
                            refill = true;
                        }
                        In::SendErr => {
                            errors += 1;
                            Counters::add(&sh.n.errors, 1);
                            refill = true;
                        }
                        In::Msg { sent_us, order } => {
                            let now = now_us();
                            sh.recv.record(now.saturating_sub(sent_us));
                            sh.deliveries.fetch_add(1, Ordering::Relaxed);
                            sh.last_delivery_us.fetch_max(now, Ordering::Relaxed);
                            received += 1;
                            if let Some(t) = &mut out.track {
                                t.see(order);
                                received = t.distinct;
                            }
                        }
                        In::Other => {}
                    }
                    if refill && sent < send {
                        c.send(sent, now_us(), size);
                        sent += 1;
                    }
                }
            }
            if c.pending() {
                c.flush().await?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = r {
        out.failure = Some(format!("{e:#}"));
    }
    c.close().await;
    out
}

pub async fn run(a: GroupArgs) -> anyhow::Result<(Vec<String>, Map<String, Value>)> {
    anyhow::ensure!(
        a.c.target == Target::Tokenim,
        "the group scenario runs against tokenim only"
    );
    anyhow::ensure!(
        a.groups > 0 && a.senders > 0 && a.members > a.senders,
        "need groups > 0 and members > senders > 0"
    );
    let ctx = Arc::new(Ctx::new(&a.c).await?);
    let k = a.members;
    let s = a.senders;
    let online_rcv = (((k - s) as f64) * a.online.clamp(0.0, 1.0)).round() as usize;
    let online_per_group = s + online_rcv;
    fd_budget(&ctx, a.groups * online_per_group + a.c.setup_concurrency)?;
    let per_sender = a.messages.div_ceil((a.groups * s) as u64);
    let total = per_sender * (a.groups * s) as u64;
    let per_group = per_sender * s as u64;

    // user g*k + j is member j of group g; members 0..s send, s..s+online_rcv are online
    let ids = ctx
        .idents(ctx.names("g", a.groups * k), |i| i % k < online_per_group)
        .await?;
    let convs = ctx
        .conversations(a.groups, |g| {
            let members: Vec<&str> = ids[g * k..(g + 1) * k]
                .iter()
                .map(|i| i.user_id.as_str())
                .collect();
            (
                ids[g * k].token.clone(),
                json!({"type": "group", "title": format!("bench {g}"), "members": members}),
            )
        })
        .await?;
    let online: Vec<_> = (0..a.groups)
        .flat_map(|g| (0..online_per_group).map(move |j| g * k + j))
        .map(|i| ids[i].clone())
        .collect();
    let conns = ctx
        .open_all("group: members", &online, |_| false, 0)
        .await?;

    let sh = Arc::new(Shared {
        recv: Hist::default(),
        ack: Hist::default(),
        n: Counters::default(),
        deliveries: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
    });
    let (go, go_rx) = watch::channel(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(a.c.timeout);
    let mut tasks = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let g = i / online_per_group;
        let j = i % online_per_group;
        let sender = j < s;
        if let Conn::Tim(t) = &mut c {
            t.set_conv(&convs[g]);
        }
        let (send, expect, track) = if sender {
            (per_sender, per_sender * (s as u64 - 1), false)
        } else {
            (0, per_group, true)
        };
        tasks.push(tokio::spawn(member(
            c,
            g,
            send,
            a.window,
            a.c.size,
            expect,
            track,
            sh.clone(),
            go_rx.clone(),
            deadline,
        )));
    }
    let expect_deliveries = total * (online_per_group as u64 - 1);
    let quiet = a.c.quiet;
    let shp = sh.clone();
    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = 0;
        loop {
            tick.tick().await;
            let d = shp.deliveries.load(Ordering::Relaxed);
            if !quiet {
                eprintln!(
                    "group: {} acked, {d}/{expect_deliveries} deliveries ({}/s)",
                    Counters::get(&shp.n.acked),
                    d - last
                );
            }
            last = d;
        }
    });
    let t0 = now_us();
    let probe = CpuProbe::start(&a.c.server_pid).with_aux(&a.c.aux_procs);
    let _ = go.send(true);
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await?);
    }
    progress.abort();
    let mut cpu = Map::new();
    let cpu_line = probe.finish(&mut cpu);

    let mut acked_by_group = vec![0u64; a.groups];
    for o in &outs {
        acked_by_group[o.group] += o.acked;
    }
    let (mut lost, mut dup, mut ooo) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    for o in &outs {
        if let Some(t) = &o.track {
            lost += acked_by_group[o.group].saturating_sub(t.distinct);
            dup += t.duplicated;
            ooo += t.out_of_order;
        }
        if let Some(f) = &o.failure {
            failures.push(f.clone());
        }
    }
    let deliveries = sh.deliveries.load(Ordering::Relaxed);
    let last = sh.last_delivery_us.load(Ordering::Relaxed).max(t0 + 1);
    let secs = (last - t0) as f64 / 1e6;
    let dps = deliveries as f64 / secs;
    let acked: u64 = acked_by_group.iter().sum();
    let mut m = result_head("group", &a.c);
    m.insert("deliveries_per_sec".into(), round3(dps));
    m.insert("msgs_per_sec".into(), round3(acked as f64 / secs));
    sh.recv.json("", &mut m);
    sh.ack.json("ack_", &mut m);
    m.insert("groups".into(), json!(a.groups));
    m.insert("members".into(), json!(k));
    m.insert("online_per_group".into(), json!(online_per_group));
    m.insert("senders".into(), json!(s));
    m.insert("window".into(), json!(a.window));
    m.insert("sent".into(), json!(total));
    m.insert("acked".into(), json!(acked));
    m.insert("deliveries".into(), json!(deliveries));
    m.insert("errors".into(), json!(Counters::get(&sh.n.errors)));
    m.insert("lost".into(), json!(lost));
    m.insert("duplicated".into(), json!(dup));
    m.insert("out_of_order".into(), json!(ooo));
    m.insert("failed_members".into(), json!(failures.len()));
    m.insert("secs".into(), round3(secs));
    m.extend(cpu);
    let mut summary = vec![
        format!(
            "group: {} groups x {k} members, {online_per_group} online each ({s} senders), {total} messages",
            a.groups
        ),
        format!(
            "{deliveries} deliveries of {expect_deliveries} expected in {secs:.2} s: {dps:.0} deliveries/s ({:.0} msgs/s acked)",
            acked as f64 / secs
        ),
        format!("send -> receive: {}", sh.recv.human()),
        format!("send -> send_ack: {}", sh.ack.human()),
        format!("lost {lost}, duplicated {dup}, out of order {ooo}"),
        cpu_line,
    ];
    if let Some(f) = failures.first() {
        summary.push(format!("{} members failed, first: {f}", failures.len()));
    }
    Ok((summary, m))
}
