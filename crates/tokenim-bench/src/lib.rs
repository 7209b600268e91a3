//! `tokenim bench`: the load generator and its scenarios (conns, pairs,
//! rate, group, storm) and `bench plot`, which draws their results as SVG.
//!
//! The generator is built not to be the bottleneck: a raw WebSocket client
//! (`wsc`) that frames into reused buffers and reads fields in place
//! (`scan`), one task driving both sockets of a pair, latencies in a shared
//! lock-free histogram (`hist`), timestamps carried inside the messages so
//! receivers need no shared state, and loopback source addresses to spread
//! connections over more ports. Setup (accounts, logins, conversations)
//! goes through the HTTP API in bulk and is not measured. Every scenario
//! prints progress on stderr, a human summary on stdout, and a one-line
//! JSON result as the last line of stdout.
//!
//! The same `conns`, `pairs` and `rate` scenarios run against an XMPP
//! server (`--target xmpp`) for comparison; see `xmpp.rs`.

use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

mod client;
mod conns;
mod frames;
mod group;
mod hist;
mod net;
mod pairs;
mod plot;
mod scan;
mod setup;
mod storm;
mod wsc;
mod xmpp;

pub use setup::Target;

#[derive(Parser)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand)]
pub enum Scenario {
    /// Open N authenticated connections and hold them idle: connect rate,
    /// failures, server memory per connection.
    Conns(conns::ConnsArgs),
    /// P sender->receiver pairs, each keeping W messages in flight.
    Pairs(pairs::PairsArgs),
    /// Pairs at a fixed open-loop rate R for D seconds.
    Rate(pairs::RateArgs),
    /// G groups of K members, a fraction online, S senders per group.
    Group(group::GroupArgs),
    /// N clients drop at once, reconnect and sync M missed messages each.
    Storm(storm::StormArgs),
    /// Draw results (JSON lines) as an SVG line chart.
    Plot(plot::PlotArgs),
}

/// Options every load scenario takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// The tokenim server (plain http; its WebSocket is /v1/ws). For a
    /// cluster, repeat it or give a comma-separated list of the nodes:
    /// connections, logins and conversation setup are spread round-robin
    /// over them (in `pairs` and `rate`, each receiver sits on another node
    /// than its sender, so every message crosses the cluster bus).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub url: Vec<String>,
    /// The server's admin token, for bulk account creation.
    #[arg(long, env = "TOKENIM_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// The server's process id, to read its memory (VmRSS) and CPU time.
    /// Repeat it (or a comma-separated list) for the nodes of a cluster:
    /// their figures are added up.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Names of other processes (e.g. postgres,redis-server) whose CPU is
    /// reported apart (`aux_cpu_pct`) instead of inside "rest of the
    /// machine": the database and Redis of a cluster run.
    #[arg(long, value_delimiter = ',')]
    pub aux_procs: Vec<String>,
    /// Loopback source addresses: a list or a range, e.g.
    /// 127.0.0.1-127.0.0.16 (each gives another ~28k ephemeral ports).
    #[arg(long, default_value = "127.0.0.1")]
    pub source_addrs: String,
    /// Which server to load.
    #[arg(long, value_enum, default_value = "tokenim")]
    pub target: Target,
    /// XMPP domain (with --target xmpp).
    #[arg(long, default_value = "localhost")]
    pub xmpp_host: String,
    /// XMPP c2s address (with --target xmpp).
    #[arg(long, default_value = "127.0.0.1:5222")]
    pub xmpp_addr: String,
    /// Concurrent HTTP requests during setup.
    #[arg(long, default_value_t = 64)]
    pub setup_concurrency: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Message text size in bytes.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Give up waiting for acks and deliveries after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// A name copied into the JSON result, to group repeated runs.
    #[arg(long)]
    pub label: Option<String>,
    /// Receivers ack cumulatively every 32 events, or once their socket is
    /// drained and the last ack is this many milliseconds old.
    #[arg(long, default_value_t = 20)]
    pub ack_ms: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let common = match &args.scenario {
        Scenario::Plot(_) => None,
        Scenario::Conns(a) => Some(&a.c),
        Scenario::Pairs(a) => Some(&a.c),
        Scenario::Rate(a) => Some(&a.c),
        Scenario::Group(a) => Some(&a.c),
        Scenario::Storm(a) => Some(&a.c),
    };
    if let Some(c) = common {
        client::set_ack_after(c.ack_ms);
    }
    let (summary, result) = match args.scenario {
        Scenario::Plot(a) => return plot::run(a),
        Scenario::Conns(a) => conns::run(a).await?,
        Scenario::Pairs(a) => pairs::run_pairs(a).await?,
        Scenario::Rate(a) => pairs::run_rate(a).await?,
        Scenario::Group(a) => group::run(a).await?,
        Scenario::Storm(a) => storm::run(a).await?,
    };
    for line in summary {
        println!("{line}");
    }
    println!("{}", Value::Object(result));
    Ok(())
}

/// Raises the fd limit and checks it covers `need` sockets.
fn fd_budget(ctx: &setup::Ctx, need: usize) -> anyhow::Result<()> {
    let limit = net::raise_fd_limit();
    ctx.note(format!("bench: file-descriptor limit {limit}"));
    if need as u64 + 256 > limit {
        anyhow::bail!(
            "this run needs about {need} sockets but the file-descriptor limit is {limit} \
             (raise the hard limit, or split the load over several bench processes)"
        );
    }
    Ok(())
}

/// The start of every result object.
fn result_head(scenario: &str, c: &Common) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("scenario".into(), json!(scenario));
    m.insert(
        "target".into(),
        json!(format!("{:?}", c.target).to_lowercase()),
    );
    if let Some(l) = &c.label {
        m.insert("label".into(), json!(l));
    }
    if c.url.len() > 1 {
        m.insert("nodes".into(), json!(c.url.len()));
    }
    m.insert("ack_ms".into(), json!(c.ack_ms));
    m
}

fn round3(x: f64) -> Value {
    json!((x * 1000.0).round() / 1000.0)
}

/// Receive-side bookkeeping for one conversation: which positions
/// (`seq`s) arrived, and how many arrived twice or behind a later one.
pub struct SeqTrack {
    bits: Vec<u64>,
    max: u64,
    pub distinct: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl SeqTrack {
    pub fn new(max_pos: u64) -> SeqTrack {
        SeqTrack {
            bits: vec![0; (max_pos as usize + 64) / 64 + 1],
            max: 0,
            distinct: 0,
            duplicated: 0,
            out_of_order: 0,
        }
    }

    pub fn see(&mut self, pos: u64) {
        let (w, b) = ((pos / 64) as usize, pos % 64);
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) != 0 {
            self.duplicated += 1;
            return;
        }
        self.bits[w] |= 1 << b;
        self.distinct += 1;
        if pos < self.max {
            self.out_of_order += 1;
        } else {
            self.max = pos;
        }
    }

    /// Whether every position in `from..=to` arrived.
    pub fn has_range(&self, from: u64, to: u64) -> bool {
        (from..=to).all(|p| {
            let (w, b) = ((p / 64) as usize, p % 64);
            self.bits.get(w).is_some_and(|x| x & (1 << b) != 0)
        })
    }
}

/// Counters shared by the tasks of a run, for progress and totals.
#[derive(Default)]
pub struct Counters {
    pub acked: AtomicU64,
    pub received: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_track() {
        let mut t = SeqTrack::new(10);
        for s in [1, 2, 4, 3, 4, 5] {
            t.see(s);
        }
        assert_eq!((t.distinct, t.duplicated, t.out_of_order), (5, 1, 1));
        assert!(t.has_range(1, 5));
        assert!(!t.has_range(1, 6));
        t.see(1000);
        assert_eq!(t.distinct, 6);
    }
}
