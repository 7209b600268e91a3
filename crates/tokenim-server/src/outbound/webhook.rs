//! After-event deliveries (PROTOCOL-INTEGRATION I3.4, I-20, I-21): one
//! signed POST per job, `{"type", "id", "ts", "data"}` with an `id` stable
//! per event and webhook, at least once and, through the jobs' order key,
//! strictly in order per conversation and webhook. A `2xx` is delivered;
//! anything else is retried with backoff (capped at 1 h) until
//! `webhook_retry_ms` after the commit, then the delivery is `failed` and
//! kept for the deliveries list.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokenim_core::clock::now_ms;
use tokenim_store::{Job, JobOutcome};

use super::{Outbound, backoff, retry_or_end};
use crate::webhooks::config::Webhook;
use crate::webhooks::sign::Signer;

/// An attempt gives up after this long (I-20).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff cap of after-events (I-20).
const WEBHOOK_BACKOFF_CAP: Duration = Duration::from_secs(3600);

pub(crate) struct Hook {
    url: reqwest::Url,
    signer: Signer,
    client: reqwest::Client,
}

impl Hook {
    pub fn new(w: &Webhook, client: reqwest::Client) -> Hook {
        Hook {
            url: w.url.clone(),
            signer: Signer::new(&w.secrets),
            client,
        }
    }
}

/// What the planner stored: the body but its `id`.
#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    ts: i64,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    id: &'a str,
    ts: i64,
    data: &'a RawValue,
}

/// The delivery ID of a job, as the body, the header and the deliveries
/// list give it.
pub fn delivery_id(job_id: u64) -> String {
    format!("wd_{job_id}")
}

/// The job ID of a delivery ID.
pub fn job_id(delivery: &str) -> Option<u64> {
    delivery.strip_prefix("wd_")?.parse().ok()
}

/// The event type a stored delivery is.
pub fn event_type(job: &Job) -> String {
    serde_json::from_str::<Stored>(&job.payload)
        .map(|s| s.ty.to_owned())
        .unwrap_or_default()
}

/// The seconds of a `Retry-After` header (delta seconds only).
fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    r.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl Outbound {
    pub(super) async fn deliver(&self, job: &Job) -> JobOutcome {
        let name = job.dest.as_str();
        let Some(hook) = self.hooks.get(name) else {
            // Removed from the configuration while this one was queued.
            return JobOutcome::Done;
        };
        let Ok(stored) = serde_json::from_str::<Stored>(&job.payload) else {
            return JobOutcome::Failed {
                error: "unreadable delivery".into(),
            };
        };
        let id = delivery_id(job.id);
        let body = serde_json::to_vec(&Body {
            ty: stored.ty,
            id: &id,
            ts: stored.ts,
            data: stored.data,
        })
        .expect("bodies serialize");
        let t = now_ms();
        let started = std::time::Instant::now();
        let sent = hook
            .client
            .post(hook.url.clone())
            .timeout(ATTEMPT_TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Tokenim-Delivery", &id)
            .header("Tokenim-Signature", hook.signer.signature(t, &body))
            .body(body)
            .send()
            .await;
        self.stats.latency(name, started.elapsed());
        let (error, after) = match sent {
            Ok(r) if r.status().is_success() => {
                self.stats.webhook(name, "delivered");
                return JobOutcome::Done;
            }
            Ok(r) => (format!("HTTP {}", r.status().as_u16()), retry_after(&r)),
            Err(e) if e.is_timeout() => ("timed out after 10 s".to_owned(), None),
            Err(e) if e.is_connect() => ("could not connect".to_owned(), None),
            Err(_) => ("request failed".to_owned(), None),
        };
        let wait = backoff(job.attempts + 1, WEBHOOK_BACKOFF_CAP, after);
        match retry_or_end(job, wait, error, now_ms()) {
            Ok(retry) => {
                self.stats.webhook(name, "retry");
                retry
            }
            Err(error) => {
                self.stats.webhook(name, "failed");
                tracing::warn!(
                    webhook = %name, delivery = %id, conv_id = ?job.conv_id, seq = job.seq,
                    attempts = job.attempts + 1, %error, "webhook delivery failed for good"
                );
                JobOutcome::Failed { error }
            }
        }
    }
}
