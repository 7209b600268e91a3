//! What operators see of the engine (PROTOCOL-INTEGRATION I2.5, I3.4,
//! I-21): a user's devices with their push state, the after-event
//! deliveries, and a retry by hand; the server API's handlers call these.

use tokenim_core::clock::now_ms;
use tokenim_core::{Error, Result};
use tokenim_proto::{Deliveries, Delivery, PushDevice, PushDevices, PushInfo};
use tokenim_store::{JobKind, JobStatus};

use super::Outbound;
use super::webhook::{delivery_id, event_type, job_id};

impl Outbound {
    /// `GET /v1/server/users/{user_id}/push`.
    pub async fn user_push(&self, user_id: &str) -> Result<PushDevices> {
        if self.store.user(user_id).await?.is_none() {
            return Err(Error::not_found("no such user"));
        }
        let live = self.fanout.online_devices(user_id).await;
        let devices = self
            .store
            .devices(user_id)
            .await?
            .into_iter()
            .map(|d| PushDevice {
                online: live.contains(&d.device_id),
                push: d.push.as_ref().map(|t| PushInfo {
                    provider: t.provider.clone(),
                    environment: t.environment.clone(),
                    token_tail: t.token_tail().to_owned(),
                }),
                last_attempt_at: d.push_last.as_ref().map(|a| a.at),
                last_result: d.push_last.as_ref().map(|a| a.result.clone()),
                last_error: d.push_last.and_then(|a| a.error),
                device_id: d.device_id,
                platform: d.platform,
            })
            .collect();
        Ok(PushDevices { devices })
    }

    /// The deliveries of `status` after `after` (a delivery ID), oldest
    /// first, at most `limit`.
    pub async fn deliveries(
        &self,
        status: JobStatus,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Deliveries> {
        let after = match after {
            None => None,
            Some(a) => {
                Some(job_id(a).ok_or_else(|| Error::bad_request("after must be a delivery id"))?)
            }
        };
        let mut jobs = self
            .store
            .jobs(JobKind::Webhook, status, after, limit + 1)
            .await?;
        let has_more = jobs.len() > limit;
        jobs.truncate(limit);
        let deliveries = jobs
            .into_iter()
            .map(|j| Delivery {
                id: delivery_id(j.id),
                ty: event_type(&j),
                status: j.status.as_str().to_owned(),
                next_attempt_at: (j.status == JobStatus::Pending).then_some(j.due_at),
                webhook: j.dest,
                conv_id: j.conv_id,
                seq: j.seq,
                attempts: j.attempts,
                last_attempt_at: j.last_attempt_at,
                last_error: j.last_error,
            })
            .collect();
        Ok(Deliveries {
            deliveries,
            has_more,
        })
    }

    /// Sends a delivery again at once, outside its conversation's order,
    /// with a fresh `webhook_retry_ms` (I-21).
    pub async fn retry_delivery(&self, id: &str) -> Result<()> {
        let Some(job) = job_id(id) else {
            return Err(Error::not_found("no such delivery"));
        };
        let now = now_ms();
        let expires = now.saturating_add(self.planner.webhook_retry_ms);
        if !self
            .store
            .retry_job(job, JobKind::Webhook, now, expires)
            .await?
        {
            return Err(Error::not_found("no such delivery"));
        }
        self.wake();
        Ok(())
    }
}
