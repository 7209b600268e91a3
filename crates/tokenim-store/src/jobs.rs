//! The durable outbound queue (PROTOCOL-INTEGRATION I2.3, I3.4): jobs for
//! the delivery engine of pushes and webhooks, kept by the store so that a
//! job decided before a crash is done after the restart.
//!
//! A job is written either in the commit of the event it is about (what a
//! [`JobPlanner`] returns for that event) or on its own ([`crate::Store::add_jobs`]).
//! Workers claim due jobs with a lease ([`crate::Store::claim_jobs`]): in a
//! cluster each job is worked by one node at a time, and a node that dies
//! loses its leases when they run out. The store knows nothing of what a
//! job means: its `payload` is the engine's JSON.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokenim_proto::Event;

use crate::ConvMeta;

/// Which worker does a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Decide who is pushed for one committed message (I2.2).
    PushDecide,
    /// One push to one device about one conversation (coalesced).
    Push,
    /// One after-event delivery to one webhook (I3.4).
    Webhook,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::PushDecide => "push_decide",
            JobKind::Push => "push",
            JobKind::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        Some(match s {
            "push_decide" => JobKind::PushDecide,
            "push" => JobKind::Push,
            "webhook" => JobKind::Webhook,
            _ => return None,
        })
    }
}

/// A job's state. Done jobs are deleted; failed ones are kept (for the
/// deliveries list and a manual retry) until purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        match s {
            "pending" => Some(JobStatus::Pending),
            "failed" => Some(JobStatus::Failed),
            _ => None,
        }
    }
}

/// A job to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub kind: JobKind,
    /// Where it goes, for per-destination limits and the deliveries list:
    /// the webhook's name, or the push provider.
    pub dest: String,
    /// Jobs with the same order key are claimed one at a time, in the
    /// order they were recorded (a webhook's deliveries of one
    /// conversation); `None`: no order.
    pub order_key: Option<String>,
    /// At most one job per coalesce key is stored: recording another while
    /// one is there replaces that one's `seq`, `payload`, `due_at` and
    /// `expires_at` (when `seq` is not older) and bumps its `version`, in
    /// flight or not (a push per device and conversation).
    pub coalesce_key: Option<String>,
    pub conv_id: Option<String>,
    pub seq: u64,
    /// The engine's JSON.
    pub payload: String,
    pub due_at: i64,
    /// After this the job is not tried again (the engine ends it).
    pub expires_at: i64,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique, and increasing in the order jobs are recorded.
    pub id: u64,
    pub kind: JobKind,
    pub dest: String,
    pub order_key: Option<String>,
    pub coalesce_key: Option<String>,
    pub conv_id: Option<String>,
    pub seq: u64,
    pub payload: String,
    pub status: JobStatus,
    /// Attempts made since it was recorded (or retried by hand).
    pub attempts: u32,
    pub created_at: i64,
    pub due_at: i64,
    pub expires_at: i64,
    pub last_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    /// Retried by hand: claimed without waiting for earlier jobs of its
    /// order key (I-21).
    pub unordered: bool,
    /// Bumped each time a coalescing job replaces the payload.
    pub version: u32,
    /// The node that holds it and until when (ms); `None` when free.
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
}

/// How an attempt at a claimed job ended. Only the lease holder's outcome
/// counts: a finish by another owner, or after the job changed hands, is
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done: the job is deleted, unless its `version` moved on since the
    /// claim (a newer payload came in): then it is due at once with
    /// `attempts` 0, its lease dropped.
    Done,
    /// Try again at `due_at`: `attempts` + 1, `last_error` set, lease
    /// dropped.
    Retry { due_at: i64, error: String },
    /// Given up: `status` failed, `attempts` + 1, `last_error` set, lease
    /// dropped. Later jobs of its order key are no longer held back.
    Failed { error: String },
}

/// The result of recording one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new job, with its ID.
    New(u64),
    /// Merged into the stored job with this coalesce key (its ID).
    Coalesced(u64),
}

/// Decides what jobs a commit records with its events; installed once
/// before serving ([`crate::Store::set_planner`]). Called by the engine's
/// writer while it builds a commit: it must be quick and must not block.
pub trait JobPlanner: Send + Sync + 'static {
    /// Jobs for one event, with its conversation as it is right after it.
    fn event(&self, event: &Arc<Event>, conv: &ConvMeta, now_ms: i64) -> Vec<NewJob>;
    /// Jobs for an explicit read marker move ([`crate::Store::set_read`]),
    /// with the conversation and the new marker.
    fn read(&self, conv: &ConvMeta, user_id: &str, read_seq: u64, now_ms: i64) -> Vec<NewJob>;
}

/// The last push attempt for a device (I2.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAttempt {
    pub at: i64,
    /// `sent`, `retry`, `failed`, `dead_token`, `expired` or `skipped`.
    pub result: String,
    pub error: Option<String>,
}
