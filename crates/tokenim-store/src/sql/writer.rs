//! A writer of the SQL engine: group commit of timeline appends.
//!
//! Each batch is one transaction: lock the conversations' rows (in ID order,
//! so two writers never wait on each other in a cycle), read what the rules
//! need (dedup records, the members involved, recall/edit targets) with the
//! member rows locked too, apply the requests in memory in queue order, then
//! write the events, dedup records, members and positions and commit. A
//! batch that loses a race (a deadlock, or a dedup key written by another
//! node in between) is rolled back and run again from the start, where the
//! other node's commit is visible.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokenim_core::Error;
use tokenim_proto::{Event, EventKind};
use tokio::sync::{mpsc, oneshot};

use super::{CHUNK, Dialect, MEMBER_COLS, engine, enum_parse, enum_str, marks};
use crate::rules;
use crate::*;

/// Most appends in one transaction.
const MAX_BATCH: usize = 1024;
/// Attempts of one batch before its requests are answered `unavailable`.
const ATTEMPTS: usize = 8;

pub(crate) struct Job {
    pub reqs: Vec<Append>,
    /// A new group: its row is inserted in the same transaction. When its
    /// ID is taken, the job's requests are answered [`taken`] unapplied.
    pub create: Option<ConvMeta>,
    pub reply: oneshot::Sender<StoreResult<Vec<StoreResult<AppendOutcome>>>>,
}

/// A committed batch for the sink, and the signal that it took it.
pub(crate) type Handoff = (Vec<Committed>, oneshot::Sender<()>);

pub(crate) struct Shard {
    d: Dialect,
    pool: AnyPool,
    committed: std::sync::mpsc::Sender<Handoff>,
    members: Arc<Mutex<super::MemberCache>>,
}

/// Whether a failed transaction may succeed when run again.
pub(crate) fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                || matches!(db.code().as_deref(), Some("40P01" | "40001"))
                || db.message().contains("Deadlock found")
                || db.message().contains("Lock wait timeout")
        }
        sqlx::Error::PoolTimedOut => true,
        _ => false,
    }
}

pub(crate) fn dedup_from_row(r: &AnyRow, at: usize) -> StoreResult<DedupRecord> {
    Ok(DedupRecord {
        conv_id: r.try_get(at).map_err(engine)?,
        kind: enum_parse(&r.try_get::<String, _>(at + 1).map_err(engine)?)?,
        msg_id: r.try_get(at + 2).map_err(engine)?,
        seq: r.try_get::<i64, _>(at + 3).map_err(engine)? as u64,
        ts: r.try_get(at + 4).map_err(engine)?,
    })
}

/// The columns of `convs`, in the order [`bind_conv`] binds them.
const CONV_TABLE_COLS: [&str; 12] = [
    "conv_id",
    "ty",
    "title",
    "created_at",
    "only_admins_send",
    "pair_a",
    "pair_b",
    "last_seq",
    "last_ts",
    "msg_count",
    "member_count",
    "members_ver",
];

/// Binds one `convs` row: `meta` with membership version `ver`.
fn bind_conv<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    meta: &ConvMeta,
    ver: i64,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let (a, b) = match &meta.pair {
        Some((a, b)) => (Some(a.clone()), Some(b.clone())),
        None => (None, None),
    };
    q.bind(meta.conv_id.clone())
        .bind(enum_str(&meta.ty))
        .bind(meta.title.clone())
        .bind(meta.created_at)
        .bind(meta.only_admins_send as i64)
        .bind(a)
        .bind(b)
        .bind(meta.last_seq as i64)
        .bind(meta.last_ts)
        .bind(meta.msg_count as i64)
        .bind(meta.member_count as i64)
        .bind(ver)
}

/// Inserts a conversation row; `false` (nothing written) when its
/// `conv_id` or its direct pair is taken.
pub(crate) async fn insert_conv(
    d: Dialect,
    tx: &mut Transaction<'static, Any>,
    meta: &ConvMeta,
) -> StoreResult<bool> {
    let cols = CONV_TABLE_COLS.join(", ");
    let values = marks(CONV_TABLE_COLS.len());
    let sql = match d {
        Dialect::Postgres => d.sql(&format!(
            "INSERT INTO convs ({cols}) VALUES ({values}) ON CONFLICT DO NOTHING"
        )),
        Dialect::MySql => format!("INSERT IGNORE INTO convs ({cols}) VALUES ({values})"),
    };
    let done = bind_conv(sqlx::query(&sql), meta, 0)
        .execute(&mut **tx)
        .await
        .map_err(engine)?;
    Ok(done.rows_affected() > 0)
}

/// Writes member rows (inserted or replaced).
pub(crate) async fn put_members(
    d: Dialect,
    tx: &mut Transaction<'static, Any>,
    conv_id: &str,
    members: &[Member],
) -> StoreResult<()> {
    let rows: Vec<(&str, &Member)> = members.iter().map(|m| (conv_id, m)).collect();
    put_members_raw(d, tx, &rows).await.map_err(engine)
}

/// Member rows of any conversations, in one multi-row upsert per chunk.
async fn put_members_raw(
    d: Dialect,
    tx: &mut Transaction<'static, Any>,
    members: &[(&str, &Member)],
) -> Result<(), sqlx::Error> {
    let cols = [
        "conv_id",
        "user_id",
        "role",
        "muted_until",
        "joined_after",
        "read_seq",
        "read_count",
    ];
    for chunk in members.chunks(CHUNK) {
        let sql = d.upsert(
            "members",
            &cols,
            &["conv_id", "user_id"],
            &cols[2..],
            chunk.len(),
        );
        let mut q = sqlx::query(&sql);
        for (conv_id, m) in chunk {
            q = q
                .bind((*conv_id).to_owned())
                .bind(m.user_id.clone())
                .bind(enum_str(&m.role))
                .bind(m.muted_until)
                .bind(m.joined_after as i64)
                .bind(m.read_seq as i64)
                .bind(m.read_count as i64);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// What one batch read and changed.
#[derive(Default)]
struct Work {
    convs: HashMap<String, ConvMeta>,
    /// The conversations' `members_ver` as locked.
    vers: HashMap<String, i64>,
    /// Conversations whose member list changed (their version moves).
    members_moved: HashSet<String>,
    /// Each conversation's member IDs (sorted) as of the request applied
    /// last, for the pushes.
    lists: HashMap<String, Arc<[String]>>,
    /// (conv, user) -> the member, `None` when not (or no longer) a member.
    members: HashMap<(String, String), Option<Member>>,
    dedup: HashMap<(String, String), DedupRecord>,
    /// (conv, seq) -> (message count at it, event): targets read and events
    /// written by this batch.
    events: HashMap<(String, u64), (u64, Event)>,
    new_events: Vec<(String, u64)>,
    changed_events: BTreeSet<(String, u64)>,
    new_dedup: Vec<(String, String)>,
    dirty_convs: BTreeSet<String>,
    dirty_members: BTreeSet<(String, String)>,
    committed: Vec<Committed>,
}

impl Shard {
    pub fn new(
        d: Dialect,
        pool: AnyPool,
        committed: std::sync::mpsc::Sender<Handoff>,
        members: Arc<Mutex<super::MemberCache>>,
    ) -> Shard {
        Shard {
            d,
            pool,
            committed,
            members,
        }
    }

    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut jobs = Vec::new();
        loop {
            match rx.recv().await {
                Some(j) => jobs.push(j),
                None => return,
            }
            let mut n: usize = jobs.iter().map(|j| j.reqs.len()).sum();
            while n < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.reqs.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            self.batch(std::mem::take(&mut jobs)).await;
        }
    }

    async fn batch(&self, jobs: Vec<Job>) {
        let mut attempt = 0;
        let result = loop {
            match self.attempt(&jobs).await {
                Ok(done) => break Ok(done),
                Err(Failure::Retry(e)) if attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "batch lost a race; running it again");
                }
                Err(Failure::Retry(e) | Failure::Fatal(e)) => break Err(e),
            }
        };
        match result {
            Ok((answers, committed, lists)) => {
                for (conv, ver, ids) in lists {
                    super::remember(&self.members, &conv, ver, ids);
                }
                if !committed.is_empty() {
                    let (tx, rx) = oneshot::channel();
                    if self.committed.send((committed, tx)).is_err() || rx.await.is_err() {
                        tracing::warn!("committed events not pushed: the sink has stopped");
                    }
                }
                for (job, a) in jobs.into_iter().zip(answers) {
                    let _ = job.reply.send(Ok(a));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; the batch is answered unavailable");
                for job in jobs {
                    let _ = job.reply.send(Err(StoreError::Engine(e.clone())));
                }
            }
        }
    }

    async fn attempt(&self, jobs: &[Job]) -> Result<Answers, Failure> {
        let mut tx = self.pool.begin().await.map_err(Failure::of)?;
        let mut w = Work::default();
        // Jobs whose group was created here (a taken ID creates nothing).
        let mut created = vec![false; jobs.len()];
        for (i, j) in jobs.iter().enumerate() {
            if let Some(meta) = &j.create {
                created[i] = insert_conv(self.d, &mut tx, meta)
                    .await
                    .map_err(Failure::store)?;
            }
        }
        let creating: HashSet<&str> = jobs
            .iter()
            .zip(&created)
            .filter(|(_, c)| **c)
            .filter_map(|(j, _)| j.create.as_ref().map(|m| m.conv_id.as_str()))
            .collect();
        self.load(&mut tx, jobs, &creating, &mut w)
            .await
            .map_err(Failure::of)?;
        let mut answers = Vec::with_capacity(jobs.len());
        for (j, created) in jobs.iter().zip(created) {
            let mut out = Vec::with_capacity(j.reqs.len());
            for a in &j.reqs {
                out.push(match (&j.create, created) {
                    (Some(_), false) => Err(taken()),
                    (create, _) => apply(&mut w, a.clone(), create.is_some()),
                });
            }
            answers.push(out);
        }
        self.write(&mut tx, &w).await.map_err(Failure::of)?;
        tx.commit().await.map_err(Failure::of)?;
        let lists = w
            .lists
            .iter()
            .map(|(conv, ids)| {
                let ver =
                    w.vers.get(conv).copied().unwrap_or(0) + w.members_moved.contains(conv) as i64;
                (conv.clone(), ver, ids.clone())
            })
            .collect();
        Ok((answers, w.committed, lists))
    }

    /// Locks and reads what the batch's rules need.
    async fn load(
        &self,
        tx: &mut Transaction<'static, Any>,
        jobs: &[Job],
        creating: &HashSet<&str>,
        w: &mut Work,
    ) -> Result<(), sqlx::Error> {
        let d = self.d;
        let reqs = || jobs.iter().flat_map(|j| j.reqs.iter());
        let conv_ids: BTreeSet<&str> = reqs().map(|a| a.conv_id.as_str()).collect();
        let conv_ids: Vec<&str> = conv_ids.into_iter().collect();
        for chunk in conv_ids.chunks(CHUNK) {
            let sql = d.sql(&format!(
                "SELECT {} FROM convs c WHERE c.conv_id IN ({}) ORDER BY c.conv_id FOR UPDATE",
                super::CONV_COLS,
                marks(chunk.len())
            ));
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&mut **tx).await? {
                let meta = super::conv_from_row(&r, 0, false).map_err(decode)?;
                w.vers.insert(meta.conv_id.clone(), r.try_get(11)?);
                w.convs.insert(meta.conv_id.clone(), meta);
            }
        }
        // Member lists for the pushes: from the cache when its version is
        // the locked one, else read here (under the lock, so exact).
        let mut missing = Vec::new();
        {
            let cache = self.members.lock();
            for (conv, ver) in &w.vers {
                match cache.get(conv) {
                    Some((v, ids)) if v == ver => {
                        w.lists.insert(conv.clone(), ids.clone());
                    }
                    _ => missing.push(conv.clone()),
                }
            }
        }
        missing.sort();
        for chunk in missing.chunks(CHUNK) {
            let sql = d.sql(&format!(
                "SELECT conv_id, user_id FROM members WHERE conv_id IN ({}) \
                 ORDER BY conv_id, user_id",
                marks(chunk.len())
            ));
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.clone());
            }
            let mut found: HashMap<String, Vec<String>> =
                chunk.iter().map(|c| (c.clone(), Vec::new())).collect();
            for r in q.fetch_all(&mut **tx).await? {
                let c: String = r.try_get(0)?;
                let u: String = r.try_get(1)?;
                found.entry(c).or_default().push(u);
            }
            for (c, ids) in found {
                w.lists.insert(c, ids.into());
            }
        }
        // Dedup records of the requests that carry a client_msg_id.
        let keys: BTreeSet<(&str, &str)> = reqs()
            .filter(|a| a.request_kind().is_some())
            .filter_map(|a| Some((a.actor.dedup_key(), a.client_msg_id.as_deref()?)))
            .collect();
        let keys: Vec<_> = keys.into_iter().collect();
        for chunk in keys.chunks(CHUNK) {
            let sql = d.sql(&format!(
                "SELECT sender, client_msg_id, conv_id, kind, msg_id, seq, ts FROM dedup \
                 WHERE (sender, client_msg_id) IN ({})",
                vec!["(?, ?)"; chunk.len()].join(", ")
            ));
            let mut q = sqlx::query(&sql);
            for (s, c) in chunk {
                q = q.bind(*s).bind(*c);
            }
            for r in q.fetch_all(&mut **tx).await? {
                let s: String = r.try_get(0)?;
                let c: String = r.try_get(1)?;
                w.dedup
                    .insert((s, c), dedup_from_row(&r, 2).map_err(decode)?);
            }
        }
        // The members the rules look at, locked against concurrent marker
        // and mute updates (their rows are rewritten at commit).
        let mut pairs: BTreeSet<(&str, &str)> = BTreeSet::new();
        for a in reqs() {
            if creating.contains(a.conv_id.as_str()) {
                continue;
            }
            if let Some(user) = a.actor.user() {
                pairs.insert((&a.conv_id, user));
            }
            match &a.op {
                Op::Remove { user_id } | Op::SetRole { user_id, .. } => {
                    pairs.insert((&a.conv_id, user_id));
                }
                Op::AddMembers { user_ids, .. } => {
                    for u in user_ids {
                        pairs.insert((&a.conv_id, u));
                    }
                }
                _ => {}
            }
        }
        let pairs: Vec<_> = pairs.into_iter().collect();
        for &(c, u) in &pairs {
            w.members.insert((c.to_owned(), u.to_owned()), None);
        }
        for chunk in pairs.chunks(CHUNK) {
            let sql = d.sql(&format!(
                "SELECT m.conv_id, {MEMBER_COLS} FROM members m \
                 WHERE (m.conv_id, m.user_id) IN ({}) ORDER BY m.conv_id, m.user_id FOR UPDATE",
                vec!["(?, ?)"; chunk.len()].join(", ")
            ));
            let mut q = sqlx::query(&sql);
            for (c, u) in chunk {
                q = q.bind(*c).bind(*u);
            }
            for r in q.fetch_all(&mut **tx).await? {
                let c: String = r.try_get(0)?;
                let m = super::member_from_row(&r, 1).map_err(decode)?;
                w.members.insert((c, m.user_id.clone()), Some(m));
            }
        }
        // Recall and edit targets.
        let targets: BTreeSet<(&str, i64)> = reqs()
            .filter_map(|a| match &a.op {
                Op::Recall { target_seq } | Op::Edit { target_seq, .. } => Some((
                    a.conv_id.as_str(),
                    (*target_seq).min(i64::MAX as u64) as i64,
                )),
                _ => None,
            })
            .collect();
        let targets: Vec<_> = targets.into_iter().collect();
        for chunk in targets.chunks(CHUNK) {
            let sql = d.sql(&format!(
                "SELECT msg_count, body FROM events WHERE (conv_id, seq) IN ({})",
                vec!["(?, ?)"; chunk.len()].join(", ")
            ));
            let mut q = sqlx::query(&sql);
            for (c, s) in chunk {
                q = q.bind(*c).bind(*s);
            }
            for r in q.fetch_all(&mut **tx).await? {
                let count: i64 = r.try_get(0)?;
                let body = super::text(&r, 1).map_err(decode)?;
                let e = tokenim_proto::decode_event(body.as_bytes())
                    .map_err(|e| sqlx::Error::Decode(e.into()))?;
                w.events
                    .insert((e.conv_id.clone(), e.seq), (count as u64, e));
            }
        }
        Ok(())
    }

    /// Writes everything the batch changed.
    async fn write(&self, tx: &mut Transaction<'static, Any>, w: &Work) -> Result<(), sqlx::Error> {
        let d = self.d;
        let body = |k: &(String, u64)| {
            let (count, e) = &w.events[k];
            (
                *count as i64,
                serde_json::to_string(e).expect("events serialize"),
            )
        };
        let inserted: HashSet<&(String, u64)> = w.new_events.iter().collect();
        for chunk in w.new_events.chunks(CHUNK) {
            let sql = d.sql(&format!(
                "INSERT INTO events (conv_id, seq, msg_count, body) VALUES {}",
                vec!["(?, ?, ?, ?)"; chunk.len()].join(", ")
            ));
            let mut q = sqlx::query(&sql);
            for k in chunk {
                let (count, text) = body(k);
                q = q.bind(k.0.clone()).bind(k.1 as i64).bind(count).bind(text);
            }
            q.execute(&mut **tx).await?;
        }
        for k in w.changed_events.iter().filter(|k| !inserted.contains(k)) {
            let (_, text) = body(k);
            sqlx::query(&d.sql("UPDATE events SET body = ? WHERE conv_id = ? AND seq = ?"))
                .bind(text)
                .bind(k.0.clone())
                .bind(k.1 as i64)
                .execute(&mut **tx)
                .await?;
        }
        for chunk in w.new_dedup.chunks(CHUNK) {
            // A key another node wrote since we read fails the batch, which
            // runs again and answers the duplicate.
            let sql = d.sql(&format!(
                "INSERT INTO dedup (sender, client_msg_id, conv_id, kind, msg_id, seq, ts) \
                 VALUES {}",
                vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
            ));
            let mut q = sqlx::query(&sql);
            for k in chunk {
                let r = &w.dedup[k];
                q = q
                    .bind(k.0.clone())
                    .bind(k.1.clone())
                    .bind(r.conv_id.clone())
                    .bind(enum_str(&r.kind))
                    .bind(r.msg_id.clone())
                    .bind(r.seq as i64)
                    .bind(r.ts);
            }
            q.execute(&mut **tx).await?;
        }
        // The conversations' new positions: one multi-row upsert (every row
        // exists and is locked, so it is an update).
        let dirty: Vec<&String> = w.dirty_convs.iter().collect();
        for chunk in dirty.chunks(CHUNK) {
            let update = [
                "title",
                "only_admins_send",
                "last_seq",
                "last_ts",
                "msg_count",
                "member_count",
                "members_ver",
            ];
            let sql = d.upsert(
                "convs",
                &CONV_TABLE_COLS,
                &["conv_id"],
                &update,
                chunk.len(),
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                let m = &w.convs[*id];
                let ver =
                    w.vers.get(*id).copied().unwrap_or(0) + w.members_moved.contains(*id) as i64;
                q = bind_conv(q, m, ver);
            }
            q.execute(&mut **tx).await?;
        }
        let mut put: Vec<(&str, &Member)> = Vec::new();
        for k in &w.dirty_members {
            match &w.members[k] {
                Some(m) => put.push((k.0.as_str(), m)),
                None => {
                    for table in ["members", "acks"] {
                        sqlx::query(&d.sql(&format!(
                            "DELETE FROM {table} WHERE conv_id = ? AND user_id = ?"
                        )))
                        .bind(k.0.clone())
                        .bind(k.1.clone())
                        .execute(&mut **tx)
                        .await?;
                    }
                }
            }
        }
        put_members_raw(d, tx, &put).await?;
        Ok(())
    }
}

/// Per job its answers; the committed events; each conversation's member
/// list with the version it has after the commit.
type Answers = (
    Vec<Vec<StoreResult<AppendOutcome>>>,
    Vec<Committed>,
    Vec<(String, i64, Arc<[String]>)>,
);

enum Failure {
    Retry(String),
    Fatal(String),
}

impl Failure {
    fn of(e: sqlx::Error) -> Failure {
        if retryable(&e) {
            Failure::Retry(e.to_string())
        } else {
            Failure::Fatal(e.to_string())
        }
    }

    fn store(e: StoreError) -> Failure {
        Failure::Fatal(e.to_string())
    }
}

/// The answer to the requests of a job whose group ID was taken: the
/// caller reads what holds the ID.
pub(crate) fn taken() -> StoreError {
    Error::conflict("conv_id is taken").into()
}

fn decode(e: StoreError) -> sqlx::Error {
    sqlx::Error::Decode(e.to_string().into())
}

fn set_read(w: &mut Work, conv: &str, user: &str, seq: u64, count: u64) {
    let key = (conv.to_owned(), user.to_owned());
    if let Some(Some(m)) = w.members.get_mut(&key)
        && seq > m.read_seq
    {
        m.read_seq = seq;
        m.read_count = count;
        w.dirty_members.insert(key);
    }
}

/// What the rules see of one conversation in a batch.
struct View<'a> {
    w: &'a Work,
    conv: &'a str,
}

impl rules::View for View<'_> {
    fn member(&self, user_id: &str) -> Option<Member> {
        self.w
            .members
            .get(&(self.conv.to_owned(), user_id.to_owned()))
            .cloned()
            .flatten()
    }

    fn event(&self, seq: u64) -> StoreResult<Option<(u64, Event)>> {
        Ok(self.w.events.get(&(self.conv.to_owned(), seq)).cloned())
    }
}

/// Applies one request to the batch: dedup, then the rules
/// (`crate::rules`), then its effects on what the batch will write.
fn apply(w: &mut Work, a: Append, creating: bool) -> StoreResult<AppendOutcome> {
    if let Some(cmid) = &a.client_msg_id
        && a.request_kind().is_some()
        && let Some(out) = rules::repeat(
            &a,
            w.dedup
                .get(&(a.actor.dedup_key().to_owned(), cmid.clone()))
                .cloned(),
        )
    {
        return out;
    }
    let Some(conv) = w.convs.get(&a.conv_id) else {
        return Err(Error::no_conversation().into());
    };
    let plan = rules::plan(
        &a,
        conv,
        creating,
        &View {
            w,
            conv: &a.conv_id,
        },
    )?;
    if let Some((seq, count, target)) = plan.target.clone() {
        let key = (a.conv_id.clone(), seq);
        w.events.insert(key.clone(), (count, target));
        w.changed_events.insert(key);
    }
    let seq = plan.event.seq;
    let count = plan.meta.msg_count;
    let key = (a.conv_id.clone(), seq);
    w.events.insert(key.clone(), (count, plan.event.clone()));
    w.new_events.push(key);
    if let Some((sender, cmid, rec)) = plan.dedup(&a) {
        let k = (sender, cmid);
        w.dedup.insert(k.clone(), rec);
        w.new_dedup.push(k);
    }
    if plan.moves_members() {
        w.members_moved.insert(a.conv_id.clone());
        let mut ids: Vec<String> = w
            .lists
            .get(&a.conv_id)
            .map(|l| l.to_vec())
            .unwrap_or_default();
        ids.extend(plan.added.iter().cloned());
        if let Some(r) = &plan.removed {
            ids.retain(|u| u != r);
        }
        ids.sort();
        ids.dedup();
        w.lists.insert(a.conv_id.clone(), ids.into());
    }
    let rules::Plan {
        meta,
        event,
        members,
        added,
        removed,
        ..
    } = plan;
    w.convs.insert(a.conv_id.clone(), meta);
    w.dirty_convs.insert(a.conv_id.clone());
    for (u, m) in members {
        let k = (a.conv_id.clone(), u);
        w.members.insert(k.clone(), m);
        w.dirty_members.insert(k);
    }
    // Sending a message moves the sender's read marker to it.
    if event.kind == EventKind::Message
        && let Some(user) = a.actor.user()
    {
        set_read(w, &a.conv_id, user, seq, count);
    }
    let event = Arc::new(event);
    w.committed.push(Committed {
        event: event.clone(),
        origin: a.origin,
        added,
        removed,
        members: w.lists.get(&a.conv_id).cloned(),
    });
    Ok(AppendOutcome::Created(event))
}
