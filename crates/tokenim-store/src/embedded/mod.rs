//! The embedded engine: fjall (an LSM tree with a write-ahead journal) on
//! local disk, with every record but events and dedup records mirrored in
//! memory.
//!
//! One writer thread owns all writes. It takes every queued job, builds one
//! atomic fjall batch for all of them (assigning seqs per conversation as it
//! goes), commits it, syncs the journal to disk (`SyncData`), then publishes
//! the new state to readers, hands the committed events to the sink, and
//! answers the callers. Readers never see a write before it is durable.

pub(crate) mod disk;
mod state;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use tokenim_proto::Event;
use tokio::sync::{mpsc, oneshot};

use crate::*;
use disk::Disk;
use state::State;
use writer::Job;

/// The writer's queue is unbounded: what bounds it is upstream, each socket
/// has at most a fixed number of requests in flight and HTTP requests are
/// bounded by connections.
///
/// The embedded store. Cheap to share behind an `Arc<dyn Store>`.
pub struct EmbeddedStore {
    disk: Arc<Disk>,
    published: Arc<RwLock<State>>,
    jobs: mpsc::UnboundedSender<Job>,
    sink: Arc<Mutex<Option<Arc<dyn EventSink>>>>,
    healthy: Arc<AtomicBool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir` and loads its state.
    pub fn open(dir: &Path) -> StoreResult<EmbeddedStore> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Engine(e.to_string()))?;
        let disk = Arc::new(Disk::open(&dir.join("store"))?);
        let state = disk.load()?;
        let published = Arc::new(RwLock::new(state.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        let sink: Arc<Mutex<Option<Arc<dyn EventSink>>>> = Arc::new(Mutex::new(None));
        let healthy = Arc::new(AtomicBool::new(true));
        let w = writer::Writer {
            disk: disk.clone(),
            work: state,
            published: published.clone(),
            sink: sink.clone(),
            healthy: healthy.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("tokenim-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        Ok(EmbeddedStore {
            disk,
            published,
            jobs: tx,
            sink,
            healthy,
            writer: Mutex::new(Some(handle)),
        })
    }

    async fn submit<T>(&self, make: impl FnOnce(writer::Reply<T>) -> Job) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(make(tx))
            .map_err(|_| StoreError::Engine("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Engine("the writer dropped a job".into()))?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    // jobs: stub until the outbound queue lands (branch `jobs`).
    fn set_planner(&self, _planner: Arc<dyn JobPlanner>) {}
    async fn add_jobs(&self, _jobs: Vec<NewJob>, _now_ms: i64) -> StoreResult<Vec<Added>> {
        Err(StoreError::Engine("jobs are not built yet".into()))
    }
    async fn claim_jobs(
        &self,
        _kinds: &[JobKind],
        _owner: &str,
        _now_ms: i64,
        _lease_ms: i64,
        _limit: usize,
    ) -> StoreResult<Vec<crate::jobs::Job>> {
        Ok(Vec::new())
    }
    async fn finish_job(
        &self,
        _id: u64,
        _owner: &str,
        _version: u32,
        _outcome: JobOutcome,
        _now_ms: i64,
    ) -> StoreResult<()> {
        Ok(())
    }
    async fn job(&self, _id: u64) -> StoreResult<Option<crate::jobs::Job>> {
        Ok(None)
    }
    async fn jobs(
        &self,
        _kind: JobKind,
        _status: JobStatus,
        _after: Option<u64>,
        _limit: usize,
    ) -> StoreResult<Vec<crate::jobs::Job>> {
        Ok(Vec::new())
    }
    async fn retry_job(
        &self,
        _id: u64,
        _kind: JobKind,
        _now_ms: i64,
        _expires_at: i64,
    ) -> StoreResult<bool> {
        Ok(false)
    }
    async fn drop_jobs(&self, _kind: JobKind, _keep: &[String]) -> StoreResult<u64> {
        Ok(0)
    }
    async fn purge_failed_jobs(&self, _before_ms: i64) -> StoreResult<u64> {
        Ok(0)
    }
    async fn set_push_result(
        &self,
        _user_id: &str,
        _device_id: &str,
        _attempt: PushAttempt,
    ) -> StoreResult<()> {
        Ok(())
    }
    fn set_sink(&self, sink: Arc<dyn EventSink>) {
        *self.sink.lock() = Some(sink);
    }

    async fn ready(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.jobs.is_closed()
    }

    async fn create_users(&self, users: Vec<NewUser>) -> StoreResult<Vec<StoreResult<User>>> {
        self.submit(|r| Job::CreateUsers(users, r)).await
    }

    async fn user(&self, user_id: &str) -> StoreResult<Option<User>> {
        Ok(self
            .published
            .read()
            .users
            .get(user_id)
            .map(|u| (**u).clone()))
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let st = self.published.read();
        Ok(st
            .by_name
            .get(username)
            .and_then(|id| st.users.get(id))
            .map(|u| (**u).clone()))
    }

    async fn put_user(&self, put: PutUser) -> StoreResult<(User, bool)> {
        self.submit(|r| Job::PutUser(put, r)).await
    }

    async fn deactivate_user(&self, user_id: &str) -> StoreResult<Option<Vec<String>>> {
        let id = user_id.to_owned();
        self.submit(|r| Job::DeactivateUser(id, r)).await
    }

    async fn create_session(&self, session: Session, device: Device) -> StoreResult<()> {
        self.submit(|r| Job::CreateSession(session, device, r))
            .await
    }

    async fn session(&self, session_id: &str) -> StoreResult<Option<Session>> {
        Ok(self.published.read().sessions.get(session_id).cloned())
    }

    async fn delete_session(&self, session_id: &str) -> StoreResult<()> {
        let id = session_id.to_owned();
        self.submit(|r| Job::DeleteSession(id, r)).await
    }

    async fn remove_device(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StoreResult<Option<Vec<String>>> {
        let (u, d) = (user_id.to_owned(), device_id.to_owned());
        self.submit(|r| Job::RemoveDevice(u, d, r)).await
    }

    async fn devices(&self, user_id: &str) -> StoreResult<Vec<Device>> {
        Ok(self
            .published
            .read()
            .devices
            .get(user_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn device(&self, user_id: &str, device_id: &str) -> StoreResult<Option<Device>> {
        Ok(self
            .published
            .read()
            .devices
            .get(user_id)
            .and_then(|m| m.get(device_id))
            .cloned())
    }

    async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        last_seen: i64,
        synced: bool,
    ) -> StoreResult<()> {
        let (u, d) = (user_id.to_owned(), device_id.to_owned());
        self.submit(|r| Job::TouchDevice {
            user: u,
            device: d,
            last_seen,
            synced,
            reply: r,
        })
        .await
    }

    async fn set_push_token(
        &self,
        user_id: &str,
        device_id: &str,
        token: Option<PushTarget>,
    ) -> StoreResult<()> {
        let (u, d) = (user_id.to_owned(), device_id.to_owned());
        self.submit(|r| Job::SetPush(u, d, token, r)).await
    }

    async fn push_device(
        &self,
        provider: &str,
        token: &str,
    ) -> StoreResult<Option<(String, String)>> {
        let key = crate::token_key(provider, token);
        Ok(self.published.read().push_index.get(&key).cloned())
    }

    async fn set_contact(&self, user_id: &str, other: &str, on: bool) -> StoreResult<()> {
        let c = state::Change::Contact(user_id.to_owned(), other.to_owned(), on);
        self.submit(|r| Job::Social(c, r)).await
    }

    async fn contacts(&self, user_id: &str) -> StoreResult<Vec<String>> {
        Ok(self
            .published
            .read()
            .contacts
            .get(user_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn set_block(&self, user_id: &str, other: &str, on: bool) -> StoreResult<()> {
        let c = state::Change::Block(user_id.to_owned(), other.to_owned(), on);
        self.submit(|r| Job::Social(c, r)).await
    }

    async fn is_blocked(&self, blocker: &str, blocked: &str) -> StoreResult<bool> {
        Ok(self
            .published
            .read()
            .blocks
            .get(blocker)
            .is_some_and(|s| s.contains(blocked)))
    }

    async fn open_direct(
        &self,
        a: &str,
        b: &str,
        conv_id: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<(ConvMeta, bool)> {
        let (a, b) = (a.to_owned(), b.to_owned());
        let conv_id = conv_id.map(str::to_owned);
        self.submit(|r| Job::OpenDirect {
            a,
            b,
            conv_id,
            now_ms,
            reply: r,
        })
        .await
    }

    async fn create_group(&self, req: NewGroup) -> StoreResult<(ConvMeta, bool)> {
        self.submit(|r| Job::CreateGroup(req, r)).await
    }

    async fn conv(&self, conv_id: &str) -> StoreResult<Option<ConvMeta>> {
        Ok(self
            .published
            .read()
            .convs
            .get(conv_id)
            .map(|c| c.meta.clone()))
    }

    async fn member(&self, conv_id: &str, user_id: &str) -> StoreResult<Option<Member>> {
        Ok(self
            .published
            .read()
            .convs
            .get(conv_id)
            .and_then(|c| c.members.get(user_id))
            .cloned())
    }

    async fn members_page(
        &self,
        conv_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Member>> {
        use std::ops::Bound;
        let st = self.published.read();
        let Some(c) = st.convs.get(conv_id) else {
            return Ok(Vec::new());
        };
        let lower = match after {
            Some(a) => Bound::Excluded(a.to_owned()),
            None => Bound::Unbounded,
        };
        Ok(c.members
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }

    async fn member_ids(&self, conv_id: &str) -> StoreResult<Arc<[String]>> {
        Ok(self
            .published
            .read()
            .convs
            .get(conv_id)
            .map(|c| c.member_ids.clone())
            .unwrap_or_else(|| Arc::from(Vec::new())))
    }

    async fn user_convs(&self, user_id: &str) -> StoreResult<Vec<(ConvMeta, Member)>> {
        let st = self.published.read();
        let Some(ids) = st.user_convs.get(user_id) else {
            return Ok(Vec::new());
        };
        Ok(ids
            .iter()
            .filter_map(|id| {
                let c = st.convs.get(id)?;
                Some((c.meta.clone(), c.members.get(user_id)?.clone()))
            })
            .collect())
    }

    async fn set_mute(&self, conv_id: &str, user_id: &str, until: Option<i64>) -> StoreResult<()> {
        let (c, u) = (conv_id.to_owned(), user_id.to_owned());
        self.submit(|r| Job::SetMute(c, u, until, r)).await
    }

    async fn set_notifications(
        &self,
        conv_id: &str,
        user_id: &str,
        level: tokenim_proto::NotifyLevel,
        until: Option<i64>,
    ) -> StoreResult<()> {
        let (c, u) = (conv_id.to_owned(), user_id.to_owned());
        self.submit(|r| Job::SetNotify(c, u, level, until, r)).await
    }

    async fn set_read(&self, conv_id: &str, user_id: &str, seq: u64) -> StoreResult<Option<u64>> {
        let (c, u) = (conv_id.to_owned(), user_id.to_owned());
        self.submit(|r| Job::SetRead(c, u, seq, r)).await
    }

    fn append(&self, reqs: Vec<Append>) -> AppendFuture {
        let (tx, rx) = oneshot::channel();
        let sent = self.jobs.send(Job::Append(reqs, tx));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Engine("the writer has stopped".into()))?;
            rx.await
                .map_err(|_| StoreError::Engine("the writer dropped a job".into()))?
        })
    }

    async fn dedup(&self, sender: &str, client_msg_id: &str) -> StoreResult<Option<DedupRecord>> {
        self.disk.dedup(sender, client_msg_id)
    }

    async fn events(
        &self,
        conv_id: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        self.disk.events(conv_id, from, to, limit)
    }

    async fn record_acks(&self, acks: Vec<AckRecord>) -> StoreResult<()> {
        if acks.is_empty() {
            return Ok(());
        }
        self.submit(|r| Job::Acks(acks, r)).await
    }

    async fn ack_seq(
        &self,
        user_id: &str,
        device_id: &str,
        conv_id: &str,
    ) -> StoreResult<Option<u64>> {
        let key = (user_id.to_owned(), device_id.to_owned(), conv_id.to_owned());
        Ok(self.published.read().acks.get(&key).copied())
    }

    async fn shutdown(&self) {
        let _ = self.submit(Job::Stop).await;
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}
