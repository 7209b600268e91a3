//! `bench storm`: N connected clients (members of groups of K) all drop at
//! once; M messages are then sent to every group while they are away; then
//! all of them reconnect, authenticate and `sync` from their last seq at
//! once. Measures the time until every client has every missed message
//! (and the distribution of per-client catch-up times).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use super::client::{Conn, In, show_error_once};
use super::hist::Hist;
use super::net::{CpuProbe, now_us};
use super::setup::{Ctx, Ident, Target};
use super::{Common, SeqTrack, fd_budget, result_head, round3};

#[derive(Args, Debug)]
pub struct StormArgs {
    #[command(flatten)]
    pub c: Common,
    /// Clients that drop and come back.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub clients: usize,
    /// Messages each client misses.
    #[arg(long, short = 'm', default_value_t = 20)]
    pub missed: u64,
    /// Clients per group (the missed messages go to each group once).
    #[arg(long, default_value_t = 100)]
    pub group_size: usize,
}

struct Back {
    track: SeqTrack,
    done_us: u64,
    failure: Option<String>,
}

/// Reconnects as `id` and syncs `conv` after seq 1 until nothing is left.
async fn come_back(ctx: &Ctx, id: &Ident, i: usize, conv: &str, m: u64) -> Back {
    let mut back = Back {
        track: SeqTrack::new(m + 2),
        done_us: 0,
        failure: None,
    };
    let r: anyhow::Result<()> = async {
        let mut c = ctx.open(id, i, false, 8192).await?;
        if let Conn::Tim(t) = &mut c {
            t.sync(Some((conv, 1)), |seq| back.track.see(seq)).await?;
        }
        back.done_us = now_us();
        c.close().await;
        Ok(())
    }
    .await;
    if let Err(e) = r {
        show_error_once(&format!("storm reconnect: {e:#}"));
        back.failure = Some(format!("{e:#}"));
    }
    back
}

/// Sends `m` messages from `c` with 32 in flight and waits for their acks.
async fn send_all(mut c: Conn, m: u64, size: usize) -> anyhow::Result<u64> {
    let mut sent = 0;
    let mut done = 0;
    while sent < m.min(32) {
        c.send(sent, now_us(), size);
        sent += 1;
    }
    c.flush().await?;
    while done < m {
        if let In::Ack { .. } | In::SendErr = c.recv().await? {
            done += 1;
            if sent < m {
                c.send(sent, now_us(), size);
                sent += 1;
            }
        }
        if c.pending() {
            c.flush().await?;
        }
    }
    c.close().await;
    Ok(done)
}

pub async fn run(a: StormArgs) -> anyhow::Result<(Vec<String>, Map<String, Value>)> {
    anyhow::ensure!(
        a.c.target == Target::Tokenim,
        "the storm scenario runs against tokenim only"
    );
    anyhow::ensure!(
        a.clients > 0 && a.group_size > 0,
        "--clients and --group-size must be positive"
    );
    let ctx = Arc::new(Ctx::new(&a.c).await?);
    let n = a.clients;
    let k = a.group_size.min(n);
    let groups = n.div_ceil(k);
    fd_budget(&ctx, n + groups + a.c.setup_concurrency)?;
    let clients = ctx.idents(ctx.names("n", n), |_| true).await?;
    let owners = ctx.idents(ctx.names("o", groups), |_| true).await?;
    let convs = ctx
        .conversations(groups, |g| {
            let mut members: Vec<&str> = clients[g * k..((g + 1) * k).min(n)]
                .iter()
                .map(|i| i.user_id.as_str())
                .collect();
            members.push(&owners[g].user_id);
            (
                owners[g].token.clone(),
                json!({"type": "group", "title": format!("storm {g}"), "members": members}),
            )
        })
        .await?;

    // 1. everyone online and synced once (the sync registers the socket)
    let conns = ctx
        .open_all("storm: clients", &clients, |_| false, 0)
        .await?;
    // 2. all drop at once
    let t_drop = std::time::Instant::now();
    drop(conns);
    ctx.note(format!(
        "storm: {n} clients dropped in {:.3} s",
        t_drop.elapsed().as_secs_f64()
    ));
    // 3. each group gets M messages while they are away
    let t_send = std::time::Instant::now();
    let senders = ctx.open_all("storm: senders", &owners, |_| true, n).await?;
    let mut sends = Vec::new();
    for (mut c, conv) in senders.into_iter().zip(&convs) {
        if let Conn::Tim(t) = &mut c {
            t.set_conv(conv);
        }
        sends.push(tokio::spawn(send_all(c, a.missed, a.c.size)));
    }
    let mut acked = 0;
    for s in sends {
        acked += s.await??;
    }
    ctx.note(format!(
        "storm: {acked} messages sent and acked in {:.2} s",
        t_send.elapsed().as_secs_f64()
    ));

    // 4. everyone comes back at once
    let sem = Arc::new(Semaphore::new(a.c.connect_concurrency));
    let done = Arc::new(AtomicU64::new(0));
    let progress = ctx.progress("storm: caught up", n as u64, done.clone());
    let clients = Arc::new(clients);
    let convs = Arc::new(convs);
    let t0 = now_us();
    let probe = CpuProbe::start(&a.c.server_pid).with_aux(&a.c.aux_procs);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (ctx, sem, done) = (ctx.clone(), sem.clone(), done.clone());
        let (clients, convs) = (clients.clone(), convs.clone());
        let m = a.missed;
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("never closed");
            let b = come_back(&ctx, &clients[i], i, &convs[i / k], m).await;
            done.fetch_add(1, Ordering::Relaxed);
            b
        }));
    }
    let per_client = Hist::default();
    let (mut lost, mut dup, mut ooo, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut end = t0;
    let mut synced = 0u64;
    let mut first_failure = None;
    for t in tasks {
        let b = t.await?;
        if let Some(f) = b.failure {
            failed += 1;
            lost += a.missed;
            first_failure.get_or_insert(f);
            continue;
        }
        per_client.record(b.done_us - t0);
        end = end.max(b.done_us);
        // seq 1 is the group's member_joined; the missed messages are 2..=m+1
        let got = (2..=a.missed + 1)
            .filter(|&s| b.track.has_range(s, s))
            .count() as u64;
        synced += got;
        lost += a.missed - got;
        dup += b.track.duplicated;
        ooo += b.track.out_of_order;
    }
    progress.abort();
    let mut cpu = Map::new();
    let cpu_line = probe.finish(&mut cpu);
    let secs = (end - t0) as f64 / 1e6;
    let mut m = result_head("storm", &a.c);
    m.insert(
        "msgs_per_sec".into(),
        round3(synced as f64 / secs.max(1e-9)),
    );
    per_client.json("", &mut m);
    m.insert("all_caught_up_secs".into(), round3(secs));
    m.insert("clients".into(), json!(n));
    m.insert("missed".into(), json!(a.missed));
    m.insert("group_size".into(), json!(k));
    m.insert("synced".into(), json!(synced));
    m.insert("failed".into(), json!(failed));
    m.insert("lost".into(), json!(lost));
    m.insert("duplicated".into(), json!(dup));
    m.insert("out_of_order".into(), json!(ooo));
    m.extend(cpu);
    let mut s = vec![
        format!(
            "storm: {n} clients in {groups} groups of {k} reconnected and synced {} missed messages each",
            a.missed
        ),
        format!(
            "every client caught up after {secs:.3} s ({:.0} msgs/s synced); per client: {}",
            synced as f64 / secs.max(1e-9),
            per_client.human()
        ),
        format!("lost {lost}, duplicated {dup}, out of order {ooo}, failed clients {failed}"),
        cpu_line,
    ];
    if let Some(f) = first_failure {
        s.push(format!("first failure: {f}"));
    }
    Ok((s, m))
}
