//! engine-trial: compare embedded storage engines for tokenim's durable
//! message timeline on *this* machine.
//!
//! Engines (same write-path shape for all):
//!   * fjall 3 (LSM): `db.batch()` + N inserts + `commit()` + `db.persist(PersistMode::SyncData)`
//!   * redb 3 (B-tree): one write transaction per batch, default durability (fsync at commit)
//!   * SQLite (rusqlite, bundled): WAL, synchronous=FULL, one transaction per batch, prepared INSERT
//!
//! Workload: key = conv_id (16 bytes) ++ seq (u64 big-endian); 1000 conversations
//! round-robin; 200-byte values; batch sizes 1/16/256; each run writes for
//! `--seconds` (default 3) or `--max-msgs` (default 200k) messages, whichever
//! comes first, into a fresh directory. Each configuration is run `--runs`
//! times (default 3), interleaved round-robin over configurations, and the
//! median msgs/s is reported together with commit latency p50/p99 (from the
//! median run) and the median point-read latency of a random recent key.
//!
//! Usage: see README.md. Options:
//!   --seconds F     time budget per run (default 3)
//!   --max-msgs N    message cap per run (default 200000)
//!   --runs N        repetitions per configuration (default 3)
//!   --batches LIST  comma-separated batch sizes (default 1,16,256)
//!   --engines LIST  comma-separated subset of fjall,redb,sqlite (default all)
//!   --dir PATH      scratch directory (default ./trial-data, deleted afterwards)
//!   --reads N       point reads after each run (default 2000)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CONVS: usize = 1000;
const VALUE_LEN: usize = 200;
const KEY_LEN: usize = 24;
/// "Recent" keys for the read test = the last this-many keys written.
const RECENT_WINDOW: usize = 10_000;

type DynErr = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, DynErr>;

// ---------------------------------------------------------------- utilities

/// xorshift64* — deterministic, dependency-free PRNG.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Generates the (key, value) stream: round-robin over CONVS conversations,
/// each with its own monotonically increasing sequence number.
struct Workload {
    conv_ids: Vec<[u8; 16]>,
    seqs: Vec<u64>,
    next_conv: usize,
    rng: Rng,
}

impl Workload {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed | 1);
        let conv_ids = (0..CONVS)
            .map(|_| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&rng.next().to_le_bytes());
                id[8..].copy_from_slice(&rng.next().to_le_bytes());
                id
            })
            .collect();
        Self { conv_ids, seqs: vec![0; CONVS], next_conv: 0, rng }
    }

    /// Produces the next message: returns (conv index, seq), fills key/value.
    fn next(&mut self, key: &mut [u8; KEY_LEN], value: &mut [u8; VALUE_LEN]) -> (usize, u64) {
        let c = self.next_conv;
        self.next_conv = (self.next_conv + 1) % CONVS;
        self.seqs[c] += 1;
        let seq = self.seqs[c];
        key[..16].copy_from_slice(&self.conv_ids[c]);
        key[16..].copy_from_slice(&seq.to_be_bytes());
        // Printable ASCII "text": roughly message-like, not trivially compressible.
        for chunk in value.chunks_mut(8) {
            let r = self.rng.next().to_le_bytes();
            for (b, rb) in chunk.iter_mut().zip(r) {
                *b = b' ' + (rb % 95);
            }
        }
        (c, seq)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

// ---------------------------------------------------------------- engine trait

/// One engine instance living in one fresh directory.
trait Engine {
    /// Writes one batch atomically and durably. Returns the latency of the
    /// commit + sync part only (batch building excluded).
    fn write_batch(&mut self, items: &[([u8; KEY_LEN], [u8; VALUE_LEN])]) -> Res<Duration>;
    /// Point read; returns value length (to keep the read from being optimised away).
    fn get(&mut self, key: &[u8; KEY_LEN]) -> Res<Option<usize>>;
    /// Reads the newest `limit` messages of a conversation (reverse prefix scan).
    fn tail(&mut self, conv: &[u8; 16], limit: usize) -> Res<usize>;
}

// ---- fjall 3

struct FjallEngine {
    db: fjall::Database,
    events: fjall::Keyspace,
}

impl FjallEngine {
    fn open(dir: &Path) -> Res<Self> {
        let db = fjall::Database::builder(dir).open()?;
        let events = db.keyspace("events", fjall::KeyspaceCreateOptions::default)?;
        Ok(Self { db, events })
    }
}

impl Engine for FjallEngine {
    fn write_batch(&mut self, items: &[([u8; KEY_LEN], [u8; VALUE_LEN])]) -> Res<Duration> {
        let mut batch = self.db.batch();
        for (k, v) in items {
            batch.insert(&self.events, k.as_slice(), v.as_slice());
        }
        let t = Instant::now();
        batch.commit()?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(t.elapsed())
    }

    fn get(&mut self, key: &[u8; KEY_LEN]) -> Res<Option<usize>> {
        Ok(self.events.get(key)?.map(|v| v.len()))
    }

    fn tail(&mut self, conv: &[u8; 16], limit: usize) -> Res<usize> {
        let mut n = 0;
        for guard in self.events.prefix(conv).rev().take(limit) {
            // Guard::into_inner() -> Result<(UserKey, UserValue)>; both deref to [u8].
            let (k, v) = guard.into_inner()?;
            debug_assert_eq!(&k[..16], conv);
            n += v.len();
        }
        Ok(n)
    }
}

// ---- redb 3

const REDB_EVENTS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("events");

struct RedbEngine {
    db: redb::Database,
}

impl RedbEngine {
    fn open(dir: &Path) -> Res<Self> {
        let db = redb::Database::create(dir.join("events.redb"))?;
        // Create the table up front so the first timed batch does not pay for it.
        let tx = db.begin_write()?;
        tx.open_table(REDB_EVENTS)?;
        tx.commit()?;
        Ok(Self { db })
    }
}

impl Engine for RedbEngine {
    fn write_batch(&mut self, items: &[([u8; KEY_LEN], [u8; VALUE_LEN])]) -> Res<Duration> {
        let tx = self.db.begin_write()?; // default durability = Immediate (fsync on commit)
        {
            let mut table = tx.open_table(REDB_EVENTS)?;
            for (k, v) in items {
                table.insert(k.as_slice(), v.as_slice())?;
            }
        }
        let t = Instant::now();
        tx.commit()?;
        Ok(t.elapsed())
    }

    fn get(&mut self, key: &[u8; KEY_LEN]) -> Res<Option<usize>> {
        use redb::ReadableDatabase as _;
        let tx = self.db.begin_read()?;
        let table = tx.open_table(REDB_EVENTS)?;
        Ok(table.get(key.as_slice())?.map(|g| g.value().len()))
    }

    fn tail(&mut self, conv: &[u8; 16], limit: usize) -> Res<usize> {
        use redb::ReadableDatabase as _;
        let tx = self.db.begin_read()?;
        let table = tx.open_table(REDB_EVENTS)?;
        let mut lo = [0u8; KEY_LEN];
        lo[..16].copy_from_slice(conv);
        let mut hi = [0xffu8; KEY_LEN];
        hi[..16].copy_from_slice(conv);
        let mut n = 0;
        for item in table.range(lo.as_slice()..=hi.as_slice())?.rev().take(limit) {
            let (_k, v) = item?;
            n += v.value().len();
        }
        Ok(n)
    }
}

// ---- SQLite

struct SqliteEngine {
    conn: rusqlite::Connection,
}

impl SqliteEngine {
    fn open(dir: &Path) -> Res<Self> {
        let conn = rusqlite::Connection::open(dir.join("events.sqlite"))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        assert_eq!(mode.to_lowercase(), "wal");
        conn.execute_batch(
            "PRAGMA synchronous=FULL;
             CREATE TABLE events (
                 conv BLOB NOT NULL,
                 seq  INTEGER NOT NULL,
                 body BLOB NOT NULL,
                 PRIMARY KEY (conv, seq)
             ) WITHOUT ROWID;",
        )?;
        Ok(Self { conn })
    }
}

impl Engine for SqliteEngine {
    fn write_batch(&mut self, items: &[([u8; KEY_LEN], [u8; VALUE_LEN])]) -> Res<Duration> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO events (conv, seq, body) VALUES (?1, ?2, ?3)")?;
            for (k, v) in items {
                let seq = u64::from_be_bytes(k[16..].try_into().unwrap()) as i64;
                stmt.execute(rusqlite::params![&k[..16], seq, v.as_slice()])?;
            }
        }
        let t = Instant::now();
        tx.commit()?;
        Ok(t.elapsed())
    }

    fn get(&mut self, key: &[u8; KEY_LEN]) -> Res<Option<usize>> {
        use rusqlite::OptionalExtension as _;
        let seq = u64::from_be_bytes(key[16..].try_into().unwrap()) as i64;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT length(body) FROM events WHERE conv = ?1 AND seq = ?2")?;
        let len: Option<i64> = stmt
            .query_row(rusqlite::params![&key[..16], seq], |r| r.get(0))
            .optional()?;
        Ok(len.map(|l| l as usize))
    }

    fn tail(&mut self, conv: &[u8; 16], limit: usize) -> Res<usize> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT body FROM events WHERE conv = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let mut rows = stmt.query(rusqlite::params![conv.as_slice(), limit as i64])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            n += row.get_ref(0)?.as_blob()?.len();
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------- runner

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Fjall,
    Redb,
    Sqlite,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Fjall => "fjall",
            Kind::Redb => "redb",
            Kind::Sqlite => "sqlite",
        }
    }
    fn open(self, dir: &Path) -> Res<Box<dyn Engine>> {
        Ok(match self {
            Kind::Fjall => Box::new(FjallEngine::open(dir)?),
            Kind::Redb => Box::new(RedbEngine::open(dir)?),
            Kind::Sqlite => Box::new(SqliteEngine::open(dir)?),
        })
    }
}

struct RunResult {
    msgs: usize,
    batches: usize,
    elapsed: Duration,
    commit_p50: Duration,
    commit_p99: Duration,
    read_p50: Duration,
    tail_p50: Duration,
    /// On-disk size of the engine directory after close.
    disk_bytes: u64,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.msgs as f64 / self.elapsed.as_secs_f64()
    }
}

fn run_one(
    kind: Kind,
    batch: usize,
    dir: &Path,
    seconds: f64,
    max_msgs: usize,
    reads: usize,
    seed: u64,
) -> Res<RunResult> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;

    let mut engine = kind.open(dir)?;
    let mut wl = Workload::new(seed);
    let mut items = vec![([0u8; KEY_LEN], [0u8; VALUE_LEN]); batch];
    let mut recent: Vec<[u8; KEY_LEN]> = Vec::with_capacity(RECENT_WINDOW);
    let mut recent_pos = 0usize;
    let mut commits = Vec::with_capacity(1 << 16);
    let budget = Duration::from_secs_f64(seconds);

    let start = Instant::now();
    let mut msgs = 0usize;
    while msgs < max_msgs && start.elapsed() < budget {
        let n = batch.min(max_msgs - msgs);
        for (k, v) in items[..n].iter_mut() {
            wl.next(k, v);
            if recent.len() < RECENT_WINDOW {
                recent.push(*k);
            } else {
                recent[recent_pos] = *k;
                recent_pos = (recent_pos + 1) % RECENT_WINDOW;
            }
        }
        commits.push(engine.write_batch(&items[..n])?);
        msgs += n;
    }
    let elapsed = start.elapsed();
    commits.sort_unstable();

    // Point reads of random recent keys.
    let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut read_lat = Vec::with_capacity(reads);
    for _ in 0..reads {
        let k = recent[rng.below(recent.len())];
        let t = Instant::now();
        let got = engine.get(&k)?;
        read_lat.push(t.elapsed());
        if got != Some(VALUE_LEN) {
            return Err(format!("{}: key not found / wrong length after write", kind.name()).into());
        }
    }
    read_lat.sort_unstable();

    // Newest-50 of a random conversation (timeline "load latest page").
    let mut tail_lat = Vec::with_capacity(reads / 4);
    for _ in 0..(reads / 4).max(1) {
        let k = recent[rng.below(recent.len())];
        let conv: [u8; 16] = k[..16].try_into().unwrap();
        let t = Instant::now();
        let n = engine.tail(&conv, 50)?;
        tail_lat.push(t.elapsed());
        if n == 0 {
            return Err(format!("{}: tail scan returned nothing", kind.name()).into());
        }
    }
    tail_lat.sort_unstable();

    drop(engine);
    let disk_bytes = dir_size(dir)?;
    std::fs::remove_dir_all(dir)?;

    Ok(RunResult {
        msgs,
        batches: commits.len(),
        elapsed,
        commit_p50: percentile(&commits, 0.50),
        commit_p99: percentile(&commits, 0.99),
        read_p50: percentile(&read_lat, 0.50),
        tail_p50: percentile(&tail_lat, 0.50),
        disk_bytes,
    })
}

/// Raw device baseline: append 4 KiB + fdatasync, `n` times; returns (p50, p99).
fn fsync_baseline(dir: &Path, n: usize) -> Res<(Duration, Duration)> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fsync-baseline.bin");
    let mut f = std::fs::File::create(&path)?;
    let buf = [0x5au8; 4096];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        f.write_all(&buf)?;
        let t = Instant::now();
        f.sync_data()?;
        lat.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path)?;
    lat.sort_unstable();
    Ok((percentile(&lat, 0.5), percentile(&lat, 0.99)))
}

fn dir_size(dir: &Path) -> Res<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let md = entry.metadata()?;
        total += if md.is_dir() { dir_size(&entry.path())? } else { md.len() };
    }
    Ok(total)
}

fn parse_list<T>(s: &str, f: impl Fn(&str) -> T) -> Vec<T> {
    s.split(',').filter(|x| !x.is_empty()).map(|x| f(x.trim())).collect()
}

fn main() -> Res<()> {
    let mut seconds = 3.0f64;
    let mut max_msgs = 200_000usize;
    let mut runs = 3usize;
    let mut batches = vec![1usize, 16, 256];
    let mut kinds = vec![Kind::Fjall, Kind::Redb, Kind::Sqlite];
    let mut dir = PathBuf::from("trial-data");
    let mut reads = 2000usize;

    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("missing value for {a}"));
        match a.as_str() {
            "--seconds" => seconds = val()?.parse()?,
            "--max-msgs" => max_msgs = val()?.parse()?,
            "--runs" => runs = val()?.parse()?,
            "--reads" => reads = val()?.parse()?,
            "--dir" => dir = PathBuf::from(val()?),
            "--batches" => batches = parse_list(&val()?, |x| x.parse().expect("batch size")),
            "--engines" => {
                kinds = parse_list(&val()?, |x| match x {
                    "fjall" => Kind::Fjall,
                    "redb" => Kind::Redb,
                    "sqlite" => Kind::Sqlite,
                    other => panic!("unknown engine {other}"),
                })
            }
            "-h" | "--help" => {
                println!(
                    "engine-trial [--seconds F] [--max-msgs N] [--runs N] [--batches 1,16,256] \
                     [--engines fjall,redb,sqlite] [--dir PATH] [--reads N]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }

    eprintln!(
        "engine-trial: {} engines x {:?} batch sizes x {runs} runs, {seconds}s / {max_msgs} msgs cap, dir={}",
        kinds.len(),
        batches,
        dir.display()
    );

    let (fs50, fs99) = fsync_baseline(&dir, 500)?;
    eprintln!(
        "  baseline: 4 KiB append + fdatasync on {}: p50 {:.3} ms  p99 {:.3} ms",
        dir.display(),
        ms(fs50),
        ms(fs99)
    );

    let configs: Vec<(Kind, usize)> =
        kinds.iter().flat_map(|&k| batches.iter().map(move |&b| (k, b))).collect();
    let mut results: Vec<Vec<RunResult>> = configs.iter().map(|_| Vec::new()).collect();

    // Interleave repetitions so slow drift of the disk/VM affects all configs alike.
    for r in 0..runs {
        for (i, &(kind, batch)) in configs.iter().enumerate() {
            let sub = dir.join(format!("{}-b{}-r{}", kind.name(), batch, r));
            let res = run_one(kind, batch, &sub, seconds, max_msgs, reads, 0xC0FFEE + r as u64)?;
            eprintln!(
                "  run {r} {:<6} batch {:>3}: {:>9.0} msg/s  {:>6} msgs in {:>5} batches  commit p50 {:.3} ms p99 {:.3} ms  get p50 {:.1} us  tail50 p50 {:.1} us  disk {:.1} MB",
                kind.name(),
                batch,
                res.rate(),
                res.msgs,
                res.batches,
                ms(res.commit_p50),
                ms(res.commit_p99),
                us(res.read_p50),
                us(res.tail_p50),
                res.disk_bytes as f64 / 1e6,
            );
            results[i].push(res);
        }
    }
    let _ = std::fs::remove_dir(&dir);

    println!();
    println!(
        "raw 4 KiB append + fdatasync baseline: p50 {:.3} ms, p99 {:.3} ms",
        ms(fs50),
        ms(fs99)
    );
    println!();
    println!(
        "| engine | batch | msgs/s (median of {runs}) | msgs/s min..max | commit p50 ms | commit p99 ms | get p50 us | newest-50 scan p50 us |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, &(kind, batch)) in configs.iter().enumerate() {
        let rs = &mut results[i];
        rs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let med = &rs[rs.len() / 2];
        println!(
            "| {} | {} | {:.0} | {:.0}..{:.0} | {:.3} | {:.3} | {:.1} | {:.1} |",
            kind.name(),
            batch,
            med.rate(),
            rs.first().unwrap().rate(),
            rs.last().unwrap().rate(),
            ms(med.commit_p50),
            ms(med.commit_p99),
            us(med.read_p50),
            us(med.tail_p50),
        );
    }
    Ok(())
}
