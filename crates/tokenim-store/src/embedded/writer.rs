//! The single writer of the embedded engine: group commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;
use tokenim_core::Error;
use tokenim_proto::{ConvType, Event, EventKind, Role};
use tokio::sync::{mpsc, oneshot};

use super::disk::{Disk, encode_event, event_key, key2};
use super::state::{Change, State};
use crate::*;

pub(crate) type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// Most jobs in one commit batch.
const MAX_BATCH: usize = 4096;

pub(crate) enum Job {
    CreateUsers(Vec<NewUser>, Reply<Vec<StoreResult<User>>>),
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
        now_ms: i64,
        reply: Reply<(ConvMeta, bool)>,
    },
    CreateGroup(NewGroup, Reply<ConvMeta>),
    SetMute(String, String, Option<i64>, Reply<()>),
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
                        username: u.username,
                        display_name: u.display_name,
                        password_hash: u.password_hash,
                        created_at: u.now_ms,
                    };
                    self.change(b, Change::User(Arc::new(user.clone())));
                    out.push(Ok(user));
                }
                b.pending.push(hold(r, Ok(out)));
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
                        d.push = target;
                        self.change(b, Change::Device(d));
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
                now_ms,
                reply,
            } => {
                let pair = if a <= peer { (a, peer) } else { (peer, a) };
                if let Some(id) = self.work.direct.get(&pair) {
                    let meta = self.work.convs[id].meta.clone();
                    b.pending.push(hold(reply, Ok((meta, false))));
                    return;
                }
                let meta = ConvMeta {
                    conv_id: ids::conv_id(now_ms),
                    ty: ConvType::Direct,
                    title: None,
                    created_at: now_ms,
                    only_admins_send: false,
                    pair: Some(pair.clone()),
                    last_seq: 0,
                    last_ts: now_ms,
                    msg_count: 0,
                    member_count: if pair.0 == pair.1 { 1 } else { 2 },
                    last_event: None,
                };
                self.change(b, Change::Conv(meta.clone()));
                for u in [&pair.0, &pair.1] {
                    let m = new_member(u, Role::Member, 0, 0);
                    self.change(b, Change::Member(meta.conv_id.clone(), m));
                }
                b.pending.push(hold(reply, Ok((meta, true))));
            }
            Job::CreateGroup(g, r) => {
                let conv_id = ids::conv_id(g.now_ms);
                let meta = ConvMeta {
                    conv_id: conv_id.clone(),
                    ty: ConvType::Group,
                    title: g.title.clone(),
                    created_at: g.now_ms,
                    only_admins_send: false,
                    pair: None,
                    last_seq: 0,
                    last_ts: g.now_ms,
                    msg_count: 0,
                    member_count: 0,
                    last_event: None,
                };
                self.change(b, Change::Conv(meta));
                let mut all = vec![g.owner.clone()];
                all.extend(g.members.iter().filter(|m| **m != g.owner).cloned());
                let res = self
                    .append(
                        b,
                        Append {
                            conv_id: conv_id.clone(),
                            actor: g.owner.clone(),
                            actor_device: g.owner_device.clone(),
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
                    .map(|_| self.work.convs[&conv_id].meta.clone());
                b.pending.push(hold(r, res));
            }
            Job::SetMute(conv, user, until, r) => {
                let res = match self
                    .work
                    .convs
                    .get(&conv)
                    .and_then(|c| c.members.get(&user))
                {
                    Some(m) => {
                        let mut m = m.clone();
                        m.muted_until = until;
                        self.change(b, Change::Member(conv, m));
                        Ok(())
                    }
                    None => Err(Error::not_found("no such member").into()),
                };
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

    /// Appends one event: dedup, membership, the op's own checks, then the
    /// event, its effects and the conversation's new position.
    fn append(&mut self, b: &mut Batch, a: Append, creating: bool) -> StoreResult<AppendOutcome> {
        let kind = a.request_kind();
        if let (Some(cmid), Some(kind)) = (&a.client_msg_id, kind)
            && let Some(d) = self.dedup(b, &a.actor, cmid)?
        {
            if d.conv_id != a.conv_id || d.kind != kind {
                return Err(Error::conflict(
                    "client_msg_id was used for another conversation or request type",
                )
                .into());
            }
            return Ok(AppendOutcome::Duplicate(d));
        }
        let Some(conv) = self.work.convs.get(&a.conv_id) else {
            return Err(Error::no_conversation().into());
        };
        if !creating && !conv.members.contains_key(&a.actor) {
            return Err(Error::no_conversation().into());
        }
        let mut meta = conv.meta.clone();
        let seq = meta.last_seq + 1;
        let ts = a.now_ms.max(meta.last_ts);
        let mut added = Vec::new();
        let mut removed = None;
        let mut member_changes = Vec::new();
        let (ev_kind, content): (EventKind, String) = match &a.op {
            Op::Message { content } => {
                meta.msg_count += 1;
                (EventKind::Message, content.get().to_owned())
            }
            Op::Recall { target_seq } | Op::Edit { target_seq, .. } => {
                let Some((count, mut target)) = self.event(b, &a.conv_id, *target_seq)? else {
                    return Err(Error::not_found("no such event").into());
                };
                if target.kind != EventKind::Message {
                    return Err(
                        Error::bad_request("only messages can be recalled or edited").into(),
                    );
                }
                if target.recalled {
                    return Err(Error::forbidden("the message was recalled").into());
                }
                let body = match &a.op {
                    Op::Edit { content, .. } => {
                        target.content = Some(content.clone());
                        target.edited = true;
                        serde_json::json!({"target_seq": target_seq, "content": content})
                            .to_string()
                    }
                    _ => {
                        target.content = None;
                        target.recalled = true;
                        target.edited = false;
                        serde_json::json!({"target_seq": target_seq}).to_string()
                    }
                };
                let k = if matches!(a.op, Op::Edit { .. }) {
                    EventKind::Edit
                } else {
                    EventKind::Recall
                };
                b.fj.insert(
                    &self.disk.events,
                    event_key(&a.conv_id, *target_seq),
                    encode_event(count, &target),
                );
                b.events
                    .insert((a.conv_id.clone(), *target_seq), (count, Arc::new(target)));
                (k, body)
            }
            Op::AddMembers {
                user_ids,
                max_members,
            } => {
                let new: Vec<String> = user_ids
                    .iter()
                    .filter(|u| !conv.members.contains_key(*u))
                    .cloned()
                    .collect();
                if new.is_empty() {
                    return Err(Error::conflict("every user is already a member").into());
                }
                if conv.members.len() as u64 + new.len() as u64 > *max_members {
                    return Err(Error::forbidden(format!(
                        "a group holds at most {max_members} members"
                    ))
                    .into());
                }
                for u in &new {
                    let role = if creating && *u == a.actor {
                        Role::Owner
                    } else {
                        Role::Member
                    };
                    member_changes.push(Change::Member(
                        a.conv_id.clone(),
                        new_member(u, role, seq - 1, meta.msg_count),
                    ));
                }
                meta.member_count += new.len() as u64;
                added = new.clone();
                (
                    EventKind::MemberJoined,
                    serde_json::json!({"user_ids": new, "by": a.actor}).to_string(),
                )
            }
            Op::Leave => {
                meta.member_count = meta.member_count.saturating_sub(1);
                member_changes.push(Change::DelMember(a.conv_id.clone(), a.actor.clone()));
                removed = Some(a.actor.clone());
                (
                    EventKind::MemberLeft,
                    serde_json::json!({"user_id": a.actor}).to_string(),
                )
            }
            Op::Remove { user_id } => {
                match conv.members.get(user_id) {
                    None => return Err(Error::not_found("no such member").into()),
                    Some(m) if m.role == Role::Owner => {
                        return Err(Error::forbidden("the owner cannot be removed").into());
                    }
                    Some(_) => {}
                }
                meta.member_count = meta.member_count.saturating_sub(1);
                member_changes.push(Change::DelMember(a.conv_id.clone(), user_id.clone()));
                removed = Some(user_id.clone());
                (
                    EventKind::MemberRemoved,
                    serde_json::json!({"user_id": user_id, "by": a.actor}).to_string(),
                )
            }
            Op::SetRole { user_id, role } => {
                let Some(m) = conv.members.get(user_id) else {
                    return Err(Error::not_found("no such member").into());
                };
                let mut m = m.clone();
                m.role = *role;
                member_changes.push(Change::Member(a.conv_id.clone(), m));
                (
                    EventKind::RoleChanged,
                    serde_json::json!({"user_id": user_id, "role": role, "by": a.actor})
                        .to_string(),
                )
            }
            Op::Update {
                title,
                only_admins_send,
            } => {
                let mut body = serde_json::Map::new();
                if let Some(t) = title {
                    meta.title = Some(t.clone());
                    body.insert("title".into(), t.clone().into());
                }
                if let Some(o) = only_admins_send {
                    meta.only_admins_send = *o;
                    body.insert("only_admins_send".into(), (*o).into());
                }
                body.insert("by".into(), a.actor.clone().into());
                (
                    EventKind::ConvUpdated,
                    serde_json::Value::Object(body).to_string(),
                )
            }
        };
        let event = Event {
            conv_id: a.conv_id.clone(),
            seq,
            msg_id: ids::msg_id(ts),
            ts,
            sender: a.actor.clone(),
            sender_device: a.actor_device.clone(),
            kind: ev_kind,
            client_msg_id: a.client_msg_id.clone(),
            content: Some(RawValue::from_string(content).expect("built from JSON")),
            recalled: false,
            edited: false,
        };
        b.fj.insert(
            &self.disk.events,
            event_key(&a.conv_id, seq),
            encode_event(meta.msg_count, &event),
        );
        let event = Arc::new(event);
        b.events
            .insert((a.conv_id.clone(), seq), (meta.msg_count, event.clone()));
        if let (Some(cmid), Some(kind)) = (&a.client_msg_id, kind) {
            let rec = DedupRecord {
                conv_id: a.conv_id.clone(),
                kind,
                msg_id: event.msg_id.clone(),
                seq,
                ts,
            };
            b.fj.insert(
                &self.disk.dedup,
                key2(&a.actor, cmid),
                serde_json::to_vec(&rec).expect("records serialize"),
            );
            b.dedup.insert((a.actor.clone(), cmid.clone()), rec);
        }
        meta.last_seq = seq;
        meta.last_ts = ts;
        meta.last_event = Some(event.clone());
        self.change(b, Change::Conv(meta));
        for c in member_changes {
            self.change(b, c);
        }
        // Sending a message moves the sender's read marker to it.
        if ev_kind == EventKind::Message {
            self.set_read(b, &a.conv_id, &a.actor, seq)?;
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

fn new_member(user: &str, role: Role, joined_after: u64, count: u64) -> Member {
    Member {
        user_id: user.to_owned(),
        role,
        muted_until: None,
        joined_after,
        read_seq: joined_after,
        read_count: count,
    }
}
