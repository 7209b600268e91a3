//! Storage for tokenim: the [`Store`] trait every engine implements, the
//! records it keeps, and the embedded engine ([`embedded::EmbeddedStore`],
//! fjall on local disk) that `tokenim serve` uses by default.
//!
//! A store is the only source of truth for sequence numbers, memberships and
//! dedup records. Timeline writes go through [`Store::append`], which an
//! engine batches into group commits; an append's future resolves only after
//! the commit holding its event is durable, and committed events are handed
//! to the [`EventSink`] in commit order. This crate knows nothing of HTTP or
//! sockets.

pub mod embedded;
pub mod ids;
mod jobs;
mod rules;
pub mod sql;
mod types;

pub use jobs::*;
pub use types::*;

use std::sync::Arc;

use async_trait::async_trait;
use tokenim_core::Error;
use tokenim_proto::{Event, NotifyLevel};

/// Errors of a store: a protocol error to pass to the client as it is, or a
/// failure of the engine (the client sees `unavailable` and retries).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Rejected(#[from] Error),
    #[error("storage failure: {0}")]
    Engine(String),
}

impl StoreError {
    /// The error a client is told.
    pub fn to_client(&self) -> Error {
        match self {
            StoreError::Rejected(e) => e.clone(),
            StoreError::Engine(_) => Error::unavailable("storage is unavailable, retry"),
        }
    }
}

/// What a client is told about a store failure, with `?`: a rejection as
/// it is, an engine failure as `unavailable` (logged here, the one place,
/// since the client never sees its cause).
impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        if let StoreError::Engine(msg) = &e {
            tracing::error!(error = %msg, "storage failure");
        }
        e.to_client()
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The result of [`Store::append`], one entry per request.
pub type AppendFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = StoreResult<Vec<StoreResult<AppendOutcome>>>> + Send>,
>;

/// Receives every committed timeline event, in commit order, once the commit
/// is durable. Called from the engine's writer: it must not block for long.
pub trait EventSink: Send + Sync + 'static {
    fn committed(&self, batch: Vec<Committed>);
}

/// The storage interface. Engines: embedded (fjall); PostgreSQL and MySQL
/// come next to it without changes to the callers.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Installs the receiver of committed events (once, before serving).
    fn set_sink(&self, sink: Arc<dyn EventSink>);

    /// Whether the engine can take writes (for `/readyz`).
    async fn ready(&self) -> bool;

    // Accounts, sessions, devices.
    async fn create_users(&self, users: Vec<NewUser>) -> StoreResult<Vec<StoreResult<User>>>;
    async fn user(&self, user_id: &str) -> StoreResult<Option<User>>;
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>>;
    /// Creates or updates the user `put.user_id` ([`PutUser::applied_to`]);
    /// `true` when created. A username another user has is a `conflict`.
    async fn put_user(&self, put: PutUser) -> StoreResult<(User, bool)>;
    /// Marks the user deactivated, deletes all their sessions and drops
    /// their devices' push registrations, in one write (I1.2); answers the
    /// deleted session IDs, or `None` if there is no such user. Again on a
    /// deactivated user: nothing changes, `Some(vec![])`.
    async fn deactivate_user(&self, user_id: &str) -> StoreResult<Option<Vec<String>>>;
    async fn create_session(&self, session: Session, device: Device) -> StoreResult<()>;
    async fn session(&self, session_id: &str) -> StoreResult<Option<Session>>;
    async fn delete_session(&self, session_id: &str) -> StoreResult<()>;
    /// Removes a device and its sessions; answers the removed session IDs,
    /// or `None` if the user has no such device.
    async fn remove_device(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> StoreResult<Option<Vec<String>>>;
    async fn devices(&self, user_id: &str) -> StoreResult<Vec<Device>>;
    async fn device(&self, user_id: &str, device_id: &str) -> StoreResult<Option<Device>>;
    /// Records `last_seen` and, when given, `synced_before = true`.
    async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        last_seen: i64,
        synced: bool,
    ) -> StoreResult<()>;
    /// Sets (`Some`) or drops (`None`) the device's push registration. A
    /// registration takes its token ([`PushTarget::token_key`]) from every
    /// other device, of any user, in the same write (I-11), found through
    /// an index, not a scan. `not_found` when there is no such device.
    async fn set_push_token(
        &self,
        user_id: &str,
        device_id: &str,
        token: Option<PushTarget>,
    ) -> StoreResult<()>;
    /// The device (user ID, device ID) registered with this provider and
    /// token, if any (through the index of I-11).
    async fn push_device(
        &self,
        provider: &str,
        token: &str,
    ) -> StoreResult<Option<(String, String)>>;

    // Contacts and blocks.
    async fn set_contact(&self, user_id: &str, other: &str, on: bool) -> StoreResult<()>;
    async fn contacts(&self, user_id: &str) -> StoreResult<Vec<String>>;
    async fn set_block(&self, user_id: &str, other: &str, on: bool) -> StoreResult<()>;
    async fn is_blocked(&self, blocker: &str, blocked: &str) -> StoreResult<bool>;

    // Conversations.
    /// The direct conversation of two users, created if missing (under
    /// `conv_id` when given, else a new server-made ID); `true` when this
    /// call created it. `conflict` when the pair has a conversation under
    /// another ID than `conv_id`, or `conv_id` is another conversation's
    /// (PROTOCOL-INTEGRATION I-8).
    async fn open_direct(
        &self,
        a: &str,
        b: &str,
        conv_id: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<(ConvMeta, bool)>;
    /// Creates a group with its owner and members and its seq-1
    /// `member_joined` event; `true` when created. A group already under
    /// `req.conv_id` is answered unchanged (`false`), another conversation
    /// under it is a `conflict`.
    async fn create_group(&self, req: NewGroup) -> StoreResult<(ConvMeta, bool)>;
    async fn conv(&self, conv_id: &str) -> StoreResult<Option<ConvMeta>>;
    async fn member(&self, conv_id: &str, user_id: &str) -> StoreResult<Option<Member>>;
    /// The conversation and the user's member record in it, when both
    /// exist (one read where the engine can).
    async fn membership(
        &self,
        conv_id: &str,
        user_id: &str,
    ) -> StoreResult<Option<(ConvMeta, Member)>> {
        let Some(conv) = self.conv(conv_id).await? else {
            return Ok(None);
        };
        Ok(self.member(conv_id, user_id).await?.map(|m| (conv, m)))
    }
    /// Members in user ID order after `after`, at most `limit`.
    async fn members_page(
        &self,
        conv_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Member>>;
    /// Every member's user ID (shared, cheap to clone).
    async fn member_ids(&self, conv_id: &str) -> StoreResult<Arc<[String]>>;
    /// The user's conversations with the user's own member record.
    async fn user_convs(&self, user_id: &str) -> StoreResult<Vec<(ConvMeta, Member)>>;
    async fn set_mute(&self, conv_id: &str, user_id: &str, until: Option<i64>) -> StoreResult<()>;
    /// Sets the member's notification level until `until` (I2.1);
    /// `not_found` when the user is not a member.
    async fn set_notifications(
        &self,
        conv_id: &str,
        user_id: &str,
        level: NotifyLevel,
        until: Option<i64>,
    ) -> StoreResult<()>;
    /// Moves the user's read marker forward to `seq` (clamped to the last
    /// seq); answers the new marker when it moved.
    async fn set_read(&self, conv_id: &str, user_id: &str, seq: u64) -> StoreResult<Option<u64>>;

    // Timeline.
    /// Appends one event per request, in order, in as few durable commits as
    /// the engine can. The requests are queued when this returns (so calls
    /// made one after another commit in that order); the future resolves
    /// after the commit holding them is durable.
    fn append(&self, reqs: Vec<Append>) -> AppendFuture;
    /// The dedup record of (sender, client_msg_id), if any.
    async fn dedup(&self, sender: &str, client_msg_id: &str) -> StoreResult<Option<DedupRecord>>;
    /// Events with `from <= seq <= to`, ascending, at most `limit`.
    async fn events(
        &self,
        conv_id: &str,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<Event>>;
    /// Records devices' cumulative acks (never moves one back).
    async fn record_acks(&self, acks: Vec<AckRecord>) -> StoreResult<()>;
    async fn ack_seq(
        &self,
        user_id: &str,
        device_id: &str,
        conv_id: &str,
    ) -> StoreResult<Option<u64>>;

    // The outbound queue of the delivery engine (`jobs`).
    /// Installs what decides the jobs a commit records (once, before
    /// serving); without one, commits record none.
    fn set_planner(&self, planner: Arc<dyn JobPlanner>);
    /// Records jobs on their own (not in an event's commit), in order;
    /// coalescing as [`NewJob::coalesce_key`] says.
    async fn add_jobs(&self, jobs: Vec<NewJob>, now_ms: i64) -> StoreResult<Vec<Added>>;
    /// Leases up to `limit` due jobs of these kinds to `owner` until
    /// `now_ms + lease_ms`: pending, `due_at <= now_ms`, not leased (or
    /// the lease ran out), and, when ordered and not `unordered`, with no
    /// earlier pending job of the same order key. Oldest due first.
    async fn claim_jobs(
        &self,
        kinds: &[JobKind],
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<Job>>;
    /// Ends an attempt at a job `owner` leased with `version`.
    async fn finish_job(
        &self,
        id: u64,
        owner: &str,
        version: u32,
        outcome: JobOutcome,
        now_ms: i64,
    ) -> StoreResult<()>;
    async fn job(&self, id: u64) -> StoreResult<Option<Job>>;
    /// Jobs of a kind and status in ID order after `after`, at most `limit`.
    async fn jobs(
        &self,
        kind: JobKind,
        status: JobStatus,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<Job>>;
    /// Makes a job of this kind (pending or failed) due at once, outside
    /// its order (`unordered`), `attempts` 0, expiring at `expires_at`,
    /// its lease dropped; `false` when there is no such job.
    async fn retry_job(
        &self,
        id: u64,
        kind: JobKind,
        now_ms: i64,
        expires_at: i64,
    ) -> StoreResult<bool>;
    /// Deletes the jobs of a kind whose `dest` is not in `keep` (a webhook
    /// removed from the configuration); answers how many.
    async fn drop_jobs(&self, kind: JobKind, keep: &[String]) -> StoreResult<u64>;
    /// Deletes failed jobs last tried before `before_ms`; answers how many.
    async fn purge_failed_jobs(&self, before_ms: i64) -> StoreResult<u64>;
    /// Records the device's last push attempt (I2.5); nothing when there is
    /// no such device.
    async fn set_push_result(
        &self,
        user_id: &str,
        device_id: &str,
        attempt: PushAttempt,
    ) -> StoreResult<()>;

    /// Finishes the writes in flight and makes everything durable.
    async fn shutdown(&self);
}
