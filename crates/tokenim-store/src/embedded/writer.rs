//! The single writer of the embedded engine: group commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use tokenim_core::Error;
use tokenim_proto::{Event, EventKind, Role};
use tokio::sync::{mpsc, oneshot};

use super::disk::{Disk, encode_event, event_key, key2};
use super::state::{Change, State};
use crate::*;

pub(crate) type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// Most jobs in one commit batch.
const MAX_BATCH: usize = 4096;

pub(crate) enum Job {
    CreateUsers(Vec<NewUser>, Reply<Vec<StoreResult<User>>>),
    PutUser(PutUser, Reply<(User, bool)>),
    DeactivateUser(String, Reply<Option<Vec<String>>>),
    CreateSession(Session, Device, Reply<()>),
    DeleteSession(String, Reply<()>),
    RemoveDevice(String, String, Reply<Option<Vec<String>>>),
    TouchDevice {
        user: String,
        device: String,
        last_seen: i64,
        synced: bool,
        reply: Reply<()>,
    },
    SetPush(String, String, Option<PushTarget>, Reply<()>),
    Social(Change, Reply<()>),
    OpenDirect {
        a: String,
        b: String,
        conv_id: Option<String>,
        now_ms: i64,
        reply: Reply<(ConvMeta, bool)>,
    },
    CreateGroup(NewGroup, Reply<(ConvMeta, bool)>),
    SetMute(String, String, Option<i64>, Reply<()>),
    SetNotify(
        String,
        String,
        tokenim_proto::NotifyLevel,
        Option<i64>,
        Reply<()>,
    ),
    SetRead(String, String, u64, Reply<Option<u64>>),
    Append(Vec<Append>, Reply<Vec<StoreResult<AppendOutcome>>>),
    Acks(Vec<AckRecord>, Reply<()>),
    Stop(Reply<()>),
}

pub(crate) struct Writer {
    pub disk: Arc<Disk>,
    /// The working copy: ahead of `published` while a batch is built.
    pub work: State,
    pub published: Arc<RwLock<State>>,
    pub sink: Arc<Mutex<Option<Arc<dyn EventSink>>>>,
    pub healthy: Arc<AtomicBool>,
}

/// An answer held back until its batch is durable.
type Pending = Box<dyn FnOnce(Option<&StoreError>) + Send>;

fn hold<T: Send + 'static>(reply: Reply<T>, result: StoreResult<T>) -> Pending {
    Box::new(move |failed| {
        let r = match failed {
            Some(e) => Err(StoreError::Engine(e.to_string())),
            None => result,
        };
        let _ = reply.send(r);
    })
}

/// One batch under construction.
struct Batch {
    fj: fjall::OwnedWriteBatch,
    changes: Vec<Change>,
    /// Conversations and members changed in this batch: written and
    /// published once per batch, however many events touched them.
    dirty_convs: HashSet<String>,
    dirty_members: HashSet<(String, String)>,
    events: HashMap<(String, u64), (u64, Arc<Event>)>,
    dedup: HashMap<(String, String), DedupRecord>,
    committed: Vec<Committed>,
    pending: Vec<Pending>,
}

impl Writer {
    pub fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        loop {
            match rx.blocking_recv() {
                Some(j) => jobs.push(j),
                None => return,
            }
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            if self.batch(&mut jobs) {
                return;
            }
        }
    }

    /// Commits one batch of jobs; `true` when a job asked the writer to stop.
    fn batch(&mut self, jobs: &mut Vec<Job>) -> bool {
        let mut b = Batch {
            fj: self.disk.db.batch(),
            changes: Vec::new(),
            dirty_convs: HashSet::new(),
            dirty_members: HashSet::new(),
            events: HashMap::new(),
            dedup: HashMap::new(),
            committed: Vec::new(),
            pending: Vec::with_capacity(jobs.len()),
        };
        let mut stop = false;
        for job in jobs.drain(..) {
            if let Job::Stop(r) = job {
                b.pending.push(hold(r, Ok(())));
                stop = true;
                continue;
            }
            self.job(&mut b, job);
        }
        self.coalesced(&mut b);
        self.work.settle();
        let result = if b.changes.is_empty() && b.events.is_empty() && b.dedup.is_empty() {
            Ok(())
        } else {
            b.fj.commit()
                .map_err(|e| StoreError::Engine(e.to_string()))
                .and_then(|()| self.disk.persist())
        };
        match &result {
            Ok(()) => {
                self.healthy.store(true, Ordering::Relaxed);
                {
                    let mut p = self.published.write();
                    for c in &b.changes {
                        p.apply(c);
                    }
                    p.settle();
                }
                if !b.committed.is_empty() {
                    let sink = self.sink.lock().clone();
                    if let Some(s) = sink {
                        s.committed(std::mem::take(&mut b.committed));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; the batch is answered unavailable");
                self.healthy.store(false, Ordering::Relaxed);
                self.work = self.published.read().clone();
            }
        }
        let failed = result.as_ref().err();
        for p in b.pending {
            p(failed);
        }
        stop
    }

    fn change(&mut self, b: &mut Batch, c: Change) {
        match c {
            Change::Conv(meta) => {
                b.dirty_convs.insert(meta.conv_id.clone());
                self.work.put_conv(meta);
            }
            Change::Member(conv, m) => {
                b.dirty_members.insert((conv.clone(), m.user_id.clone()));
                self.work.put_member(conv, m);
            }
            Change::DelMember(conv, user) => {
                let c = Change::DelMember(conv, user);
                self.work.apply(&c);
                if let Change::DelMember(conv, user) = c {
                    b.dirty_members.insert((conv, user));
                }
            }
            c => {
                self.disk.write(&mut b.fj, &c);
                self.work.apply(&c);
                b.changes.push(c);
            }
        }
    }

    /// Writes the final state of the conversations and members this batch
    /// changed, once each.
    fn coalesced(&mut self, b: &mut Batch) {
        for id in b.dirty_convs.drain() {
            if let Some(c) = self.work.convs.get(&id) {
                let ch = Change::Conv(c.meta.clone());
                self.disk.write(&mut b.fj, &ch);
                b.changes.push(ch);
            }
        }
        for (conv, user) in b.dirty_members.drain() {
            let m = self
                .work
                .convs
                .get(&conv)
                .and_then(|c| c.members.get(&user));
            let ch = match m {
                Some(m) => Change::Member(conv, m.clone()),
                None => Change::DelMember(conv, user),
            };
            self.disk.write(&mut b.fj, &ch);
            b.changes.push(ch);
        }
    }

    /// Changes one member record in this batch (`not_found` when absent).
    fn edit_member(
        &mut self,
        b: &mut Batch,
        conv: String,
        user: &str,
        f: impl FnOnce(&mut Member),
    ) -> StoreResult<()> {
        let Some(m) = self.work.convs.get(&conv).and_then(|c| c.members.get(user)) else {
            return Err(Error::not_found("no such member").into());
        };
        let mut m = m.clone();
        f(&mut m);
        self.change(b, Change::Member(conv, m));
        Ok(())
    }

    fn job(&mut self, b: &mut Batch, job: Job) {
        match job {
            Job::CreateUsers(users, r) => {
                let mut out = Vec::with_capacity(users.len());
                for u in users {
                    if self.work.by_name.contains_key(&u.username) {
                        out.push(Err(Error::conflict("username is taken").into()));
                        continue;
                    }
                    let user = User {
                        user_id: ids::user_id(u.now_ms),
                        username: Some(u.username),
                        display_name: u.display_name,
                        password_hash: Some(u.password_hash),
                        avatar_url: None,
                        metadata: None,
                        deactivated: false,
                        created_at: u.now_ms,
                    };
                    self.change(b, Change::User(Arc::new(user.clone())));
                    out.push(Ok(user));
                }
                b.pending.push(hold(r, Ok(out)));
            }
            Job::PutUser(put, r) => {
                let old = self.work.users.get(&put.user_id).cloned();
                let user = match put.applied_to(old.as_deref()) {
                    Ok(u) => u,
                    Err(e) => return b.pending.push(hold(r, Err(e.into()))),
                };
                let taken = user.username.as_ref().is_some_and(|n| {
                    self.work
                        .by_name
                        .get(n)
                        .is_some_and(|id| *id != user.user_id)
                });
                if taken {
                    let e = Error::conflict("username is taken");
                    return b.pending.push(hold(r, Err(e.into())));
                }
                if old.as_deref() != Some(&user) {
                    self.change(b, Change::User(Arc::new(user.clone())));
                }
                b.pending.push(hold(r, Ok((user, old.is_none()))));
            }
            Job::DeactivateUser(user_id, r) => {
                let Some(old) = self.work.users.get(&user_id).cloned() else {
                    return b.pending.push(hold(r, Ok(None)));
                };
                if !old.deactivated {
                    let mut u = (*old).clone();
                    u.deactivated = true;
                    self.change(b, Change::User(Arc::new(u)));
                }
                let mut ids: Vec<String> = self
                    .work
                    .sessions
                    .values()
                    .filter(|s| s.user_id == user_id)
                    .map(|s| s.session_id.clone())
                    .collect();
                ids.sort();
                for id in &ids {
                    self.change(b, Change::DelSession(id.clone()));
                }
                let pushed: Vec<Device> = self
                    .work
                    .devices
                    .get(&user_id)
                    .into_iter()
                    .flat_map(|m| m.values())
                    .filter(|d| d.push.is_some())
                    .cloned()
                    .collect();
                for mut d in pushed {
                    d.push = None;
                    self.change(b, Change::Device(d));
                }
                b.pending.push(hold(r, Ok(Some(ids))));
            }
            Job::CreateSession(s, mut d, r) => {
                if let Some(old) = self
                    .work
                    .devices
                    .get(&d.user_id)
                    .and_then(|m| m.get(&d.device_id))
                {
                    d.synced_before = old.synced_before;
                    d.push = old.push.clone();
                }
                self.change(b, Change::Device(d));
                self.change(b, Change::Session(s));
                b.pending.push(hold(r, Ok(())));
            }
            Job::DeleteSession(id, r) => {
                if self.work.sessions.contains_key(&id) {
                    self.change(b, Change::DelSession(id));
                }
                b.pending.push(hold(r, Ok(())));
            }
            Job::RemoveDevice(u, d, r) => {
                let exists = self
                    .work
                    .devices
                    .get(&u)
                    .is_some_and(|m| m.contains_key(&d));
                if !exists {
                    b.pending.push(hold(r, Ok(None)));
                    return;
                }
                let ids: Vec<String> = self
                    .work
                    .sessions
                    .values()
                    .filter(|s| s.user_id == u && s.device_id == d)
                    .map(|s| s.session_id.clone())
                    .collect();
                for id in &ids {
                    self.change(b, Change::DelSession(id.clone()));
                }
                self.disk.remove_device_acks(&mut b.fj, &u, &d);
                self.change(b, Change::DelDevice(u, d));
                b.pending.push(hold(r, Ok(Some(ids))));
            }
            Job::TouchDevice {
                user,
                device,
                last_seen,
                synced,
                reply,
            } => {
                let cur = self.work.devices.get(&user).and_then(|m| m.get(&device));
                if let Some(cur) = cur {
                    let mut d = cur.clone();
                    d.last_seen = d.last_seen.max(last_seen);
                    d.synced_before |= synced;
                    if d != *cur {
                        self.change(b, Change::Device(d));
                    }
                }
                b.pending.push(hold(reply, Ok(())));
            }
            Job::SetPush(user, device, target, r) => {
                let cur = self.work.devices.get(&user).and_then(|m| m.get(&device));
                let res = match cur {
                    Some(cur) => {
                        let mut d = cur.clone();
                        // I-11: the token leaves every other device first.
                        let holder = target
                            .as_ref()
                            .and_then(|t| self.work.push_index.get(&t.token_key()).cloned());
                        d.push = target;
                        self.change(b, Change::Device(d));
                        if let Some((hu, hd)) = holder
                            && (hu != user || hd != device)
                            && let Some(other) = self.work.devices.get(&hu).and_then(|m| m.get(&hd))
                        {
                            let mut other = other.clone();
                            other.push = None;
                            self.change(b, Change::Device(other));
                        }
                        Ok(())
                    }
                    None => Err(Error::not_found("no such device").into()),
                };
                b.pending.push(hold(r, res));
            }
            Job::Social(c, r) => {
                self.change(b, c);
                b.pending.push(hold(r, Ok(())));
            }
            Job::OpenDirect {
                a,
                b: peer,
                conv_id,
                now_ms,
                reply,
            } => {
                let pair = if a <= peer { (a, peer) } else { (peer, a) };
                let found = self
                    .work
                    .direct
                    .get(&pair)
                    .or(conv_id.as_ref())
                    .and_then(|id| self.work.convs.get(id));
                if let Some(c) = found {
                    let res = rules::existing_direct(&c.meta, &pair, conv_id.as_deref())
                        .map(|()| (c.meta.clone(), false));
                    b.pending.push(hold(reply, res));
                    return;
                }
                let meta = rules::new_direct(pair.clone(), conv_id.as_deref(), now_ms);
                self.change(b, Change::Conv(meta.clone()));
                for u in [&pair.0, &pair.1] {
                    let m = rules::new_member(u, Role::Member, 0, 0);
                    self.change(b, Change::Member(meta.conv_id.clone(), m));
                }
                b.pending.push(hold(reply, Ok((meta, true))));
            }
            Job::CreateGroup(g, r) => {
                let conv_id = g.conv_id.unwrap_or_else(|| ids::conv_id(g.now_ms));
                if let Some(c) = self.work.convs.get(&conv_id) {
                    let res = rules::existing_group(&c.meta).map(|()| (c.meta.clone(), false));
                    b.pending.push(hold(r, res));
                    return;
                }
                let meta = rules::new_group(conv_id.clone(), g.title.clone(), g.now_ms);
                self.change(b, Change::Conv(meta));
                let mut all = vec![g.owner.clone()];
                all.extend(g.members.iter().filter(|m| **m != g.owner).cloned());
                let res = self
                    .append(
                        b,
                        Append {
                            conv_id: conv_id.clone(),
                            actor: g.by,
                            client_msg_id: None,
                            op: Op::AddMembers {
                                user_ids: all,
                                max_members: u64::MAX,
                            },
                            origin: g.origin,
                            now_ms: g.now_ms,
                        },
                        true,
                    )
                    .map(|_| (self.work.convs[&conv_id].meta.clone(), true));
                b.pending.push(hold(r, res));
            }
            Job::SetNotify(conv, user, level, until, r) => {
                let res = self.edit_member(b, conv, &user, |m| {
                    m.notify_level = level;
                    m.notify_until = until;
                });
                b.pending.push(hold(r, res));
            }
            Job::SetMute(conv, user, until, r) => {
                let res = self.edit_member(b, conv, &user, |m| m.muted_until = until);
                b.pending.push(hold(r, res));
            }
            Job::SetRead(conv, user, seq, r) => {
                let res = self.set_read(b, &conv, &user, seq);
                b.pending.push(hold(r, res));
            }
            Job::Append(reqs, r) => {
                let out = reqs.into_iter().map(|a| self.append(b, a, false)).collect();
                b.pending.push(hold(r, Ok(out)));
            }
            Job::Acks(acks, r) => {
                for a in acks {
                    let key = (a.user_id.clone(), a.device_id.clone(), a.conv_id.clone());
                    let cur = self.work.acks.get(&key).copied().unwrap_or(0);
                    let member = self
                        .work
                        .convs
                        .get(&a.conv_id)
                        .is_some_and(|c| c.members.contains_key(&a.user_id));
                    let device = self
                        .work
                        .devices
                        .get(&a.user_id)
                        .is_some_and(|m| m.contains_key(&a.device_id));
                    if a.seq > cur && member && device {
                        self.change(b, Change::Ack(a.user_id, a.device_id, a.conv_id, a.seq));
                    }
                }
                b.pending.push(hold(r, Ok(())));
            }
            Job::Stop(r) => b.pending.push(hold(r, Ok(()))),
        }
    }

    fn set_read(
        &mut self,
        b: &mut Batch,
        conv: &str,
        user: &str,
        seq: u64,
    ) -> StoreResult<Option<u64>> {
        let Some(c) = self.work.convs.get(conv) else {
            return Err(Error::no_conversation().into());
        };
        let Some(m) = c.members.get(user) else {
            return Err(Error::no_conversation().into());
        };
        let seq = seq.min(c.meta.last_seq);
        if seq <= m.read_seq {
            return Ok(None);
        }
        let count = if seq == c.meta.last_seq {
            c.meta.msg_count
        } else {
            self.count_at(b, conv, seq)?
        };
        let mut m = m.clone();
        m.read_seq = seq;
        m.read_count = count;
        self.change(b, Change::Member(conv.to_owned(), m));
        Ok(Some(seq))
    }

    fn event(&self, b: &Batch, conv: &str, seq: u64) -> StoreResult<Option<(u64, Event)>> {
        if let Some((count, e)) = b.events.get(&(conv.to_owned(), seq)) {
            return Ok(Some((*count, (**e).clone())));
        }
        self.disk.event(conv, seq)
    }

    fn count_at(&self, b: &Batch, conv: &str, seq: u64) -> StoreResult<u64> {
        Ok(self.event(b, conv, seq)?.map(|(c, _)| c).unwrap_or(0))
    }

    fn dedup(&self, b: &Batch, sender: &str, cmid: &str) -> StoreResult<Option<DedupRecord>> {
        if let Some(d) = b.dedup.get(&(sender.to_owned(), cmid.to_owned())) {
            return Ok(Some(d.clone()));
        }
        self.disk.dedup(sender, cmid)
    }

    /// Appends one event: dedup, then the rules (`crate::rules`), then the
    /// event, its effects and the conversation's new position.
    fn append(&mut self, b: &mut Batch, a: Append, creating: bool) -> StoreResult<AppendOutcome> {
        if let Some(cmid) = &a.client_msg_id
            && a.request_kind().is_some()
            && let Some(out) = rules::repeat(&a, self.dedup(b, a.actor.dedup_key(), cmid)?)
        {
            return out;
        }
        let Some(conv) = self.work.convs.get(&a.conv_id) else {
            return Err(Error::no_conversation().into());
        };
        let view = View {
            conv,
            batch: b,
            disk: &self.disk,
        };
        let plan = rules::plan(&a, &conv.meta, creating, &view)?;
        if let Some((seq, count, target)) = plan.target.clone() {
            b.fj.insert(
                &self.disk.events,
                event_key(&a.conv_id, seq),
                encode_event(count, &target),
            );
            b.events
                .insert((a.conv_id.clone(), seq), (count, Arc::new(target)));
        }
        let seq = plan.event.seq;
        let count = plan.meta.msg_count;
        b.fj.insert(
            &self.disk.events,
            event_key(&a.conv_id, seq),
            encode_event(count, &plan.event),
        );
        if let Some((sender, cmid, rec)) = plan.dedup(&a) {
            b.fj.insert(
                &self.disk.dedup,
                key2(&sender, &cmid),
                serde_json::to_vec(&rec).expect("records serialize"),
            );
            b.dedup.insert((sender, cmid), rec);
        }
        let rules::Plan {
            mut meta,
            event,
            members,
            added,
            removed,
            ..
        } = plan;
        let event = Arc::new(event);
        b.events
            .insert((a.conv_id.clone(), seq), (count, event.clone()));
        meta.last_event = Some(event.clone());
        self.change(b, Change::Conv(meta));
        for (user, m) in members {
            let c = match m {
                Some(m) => Change::Member(a.conv_id.clone(), m),
                None => Change::DelMember(a.conv_id.clone(), user),
            };
            self.change(b, c);
        }
        // Sending a message moves the sender's read marker to it.
        if event.kind == EventKind::Message
            && let Some(user) = a.actor.user()
        {
            self.set_read(b, &a.conv_id, user, seq)?;
        }
        b.committed.push(Committed {
            event: event.clone(),
            origin: a.origin,
            added,
            removed,
            members: None,
        });
        Ok(AppendOutcome::Created(event))
    }
}

/// What the rules see of a conversation while a batch is built: its members
/// and its events, the batch's own first.
struct View<'a> {
    conv: &'a super::state::ConvState,
    batch: &'a Batch,
    disk: &'a Disk,
}

impl rules::View for View<'_> {
    fn member(&self, user_id: &str) -> Option<Member> {
        self.conv.members.get(user_id).cloned()
    }

    fn event(&self, seq: u64) -> StoreResult<Option<(u64, Event)>> {
        let conv = &self.conv.meta.conv_id;
        if let Some((count, e)) = self.batch.events.get(&(conv.clone(), seq)) {
            return Ok(Some((*count, (**e).clone())));
        }
        self.disk.event(conv, seq)
    }
}
