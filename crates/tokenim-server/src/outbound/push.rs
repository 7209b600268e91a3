//! Offline pushes (PROTOCOL-INTEGRATION I2.2, I2.3, I-13..I-16): deciding
//! who a committed message pushes to, and each attempt at one push.
//!
//! A decision looks, per member but the sender, at their level and read
//! marker and at each device: one with a registration and no live socket
//! on any node gets a push job, coalesced per (device, conversation) so a
//! newer message replaces a queued one. An attempt checks again what may
//! have changed (the registration, the read marker, a recall), builds the
//! notification (title, body, badge) and classifies the provider's answer.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokenim_core::clock::now_ms;
use tokenim_proto::{ConvType, EventKind, PushTestResult};
use tokenim_store::{Added, Job, JobKind, JobOutcome, NewJob, PushAttempt, PushTarget};

use super::planner::Decide;
use super::{Outbound, backoff, retry_or_end};
use crate::push::PushPreview;
use crate::push::send::{Answer, Notification, Recipient};

/// Backoff cap of pushes (I-15).
const PUSH_BACKOFF_CAP: Duration = Duration::from_secs(30 * 60);
/// Bodies are cut to this many characters (I2.2, I-14).
const BODY_CHARS: usize = 200;

/// The payload of one push job.
#[derive(Serialize, Deserialize)]
pub struct PushJob {
    pub user_id: String,
    pub device_id: String,
    pub conv_id: String,
    pub seq: u64,
    pub msg_id: String,
    /// The message's commit time (its pushes end `push_ttl_ms` after).
    pub ts: i64,
}

/// A message's text cut for a push body: at most 200 characters, longer
/// ones 199 and `…` (I-14).
pub fn cut(text: &str) -> String {
    if text.chars().count() <= BODY_CHARS {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(BODY_CHARS - 1).collect();
    s.push('…');
    s
}

/// The body a content shows (I2.2): text, `Image`, `File`, else `New
/// message` (encrypted and MLS content included: it never leaves).
pub fn body_of(content: Option<&serde_json::Value>) -> String {
    let Some(c) = content else {
        return "New message".into();
    };
    match c.get("type").and_then(|t| t.as_str()) {
        Some("text") => c
            .get("text")
            .and_then(|t| t.as_str())
            .map(cut)
            .unwrap_or_else(|| "New message".into()),
        Some("image") => "Image".into(),
        Some("file") => "File".into(),
        _ => "New message".into(),
    }
}

impl Outbound {
    /// Decides the pushes of one committed message (I2.2); done once its
    /// push jobs are recorded.
    pub(super) async fn decide(&self, job: &Job) -> JobOutcome {
        match self.decide_inner(job).await {
            Ok(()) => JobOutcome::Done,
            Err(e) => {
                let wait = backoff(job.attempts + 1, PUSH_BACKOFF_CAP, None);
                retry_or_end(job, wait, e.clone(), now_ms())
                    .unwrap_or(JobOutcome::Failed { error: e })
            }
        }
    }

    async fn decide_inner(&self, job: &Job) -> Result<(), String> {
        let d: Decide = serde_json::from_str(&job.payload).map_err(|e| e.to_string())?;
        let store = &self.store;
        let err = |e: tokenim_store::StoreError| e.to_string();
        let members = store.member_ids(&d.conv_id).await.map_err(err)?;
        let event = store
            .events(&d.conv_id, d.seq, d.seq, 1)
            .await
            .map_err(err)?
            .into_iter()
            .next();
        let Some(event) = event.filter(|e| e.kind == EventKind::Message && !e.recalled) else {
            return Ok(());
        };
        let content: Option<serde_json::Value> = event
            .content
            .as_ref()
            .and_then(|c| serde_json::from_str(c.get()).ok());
        let mentions = content
            .as_ref()
            .map(tokenim_core::push::mentions_of)
            .unwrap_or_default();
        let now = now_ms();
        let mut jobs = Vec::new();
        for user in members.iter() {
            if d.sender.as_deref() == Some(user.as_str()) {
                continue;
            }
            let Some(m) = store.member(&d.conv_id, user).await.map_err(err)? else {
                continue;
            };
            if m.read_seq >= d.seq
                || m.muted_until.is_some_and(|t| t > now)
                || !tokenim_core::push::wants(m.notify_level, m.notify_until, now, &mentions, user)
            {
                continue;
            }
            let devices = store.devices(user).await.map_err(err)?;
            if !devices.iter().any(|dv| dv.push.is_some()) {
                continue;
            }
            let live = self.fanout.online_devices(user).await;
            for dv in devices {
                let Some(target) = &dv.push else { continue };
                if live.contains(&dv.device_id) {
                    continue;
                }
                let p = PushJob {
                    user_id: user.clone(),
                    device_id: dv.device_id.clone(),
                    conv_id: d.conv_id.clone(),
                    seq: d.seq,
                    msg_id: d.msg_id.clone(),
                    ts: d.ts,
                };
                jobs.push(NewJob {
                    kind: JobKind::Push,
                    dest: target.provider.clone(),
                    order_key: None,
                    coalesce_key: Some(format!("{user}\n{}\n{}", dv.device_id, d.conv_id)),
                    conv_id: Some(d.conv_id.clone()),
                    seq: d.seq,
                    payload: serde_json::to_string(&p).expect("push jobs serialize"),
                    due_at: now,
                    expires_at: job.expires_at,
                });
            }
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let providers: Vec<String> = jobs.iter().map(|j| j.dest.clone()).collect();
        let added = store.add_jobs(jobs, now).await.map_err(err)?;
        for (a, p) in added.iter().zip(providers) {
            if let Added::Coalesced(_) = a {
                self.stats.push(&p, "coalesced");
            }
        }
        self.wake();
        Ok(())
    }

    /// The notification for `p` as it stands now, or why none is due
    /// (`skipped`: read, recalled, gone).
    async fn notification(&self, p: &PushJob) -> Result<Option<Notification>, String> {
        let err = |e: tokenim_store::StoreError| e.to_string();
        let store = &self.store;
        let Some((conv, member)) = store
            .membership(&p.conv_id, &p.user_id)
            .await
            .map_err(err)?
        else {
            return Ok(None);
        };
        if member.read_seq >= p.seq {
            return Ok(None);
        }
        let Some(event) = store
            .events(&p.conv_id, p.seq, p.seq, 1)
            .await
            .map_err(err)?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        if event.recalled || event.kind != EventKind::Message {
            return Ok(None);
        }
        let app_name = &self.providers.app_name;
        let sender_name = match &event.sender {
            Some(s) => store.user(s).await.map_err(err)?.map(|u| u.display_name),
            None => None,
        };
        let title = match (self.providers.preview, conv.ty) {
            (PushPreview::None, _) => app_name.clone(),
            (_, ConvType::Group) => conv
                .title
                .clone()
                .filter(|t| !t.is_empty())
                .or(sender_name)
                .unwrap_or_else(|| app_name.clone()),
            (_, _) => sender_name.unwrap_or_else(|| app_name.clone()),
        };
        let body = match self.providers.preview {
            PushPreview::Full => {
                let c: Option<serde_json::Value> = event
                    .content
                    .as_ref()
                    .and_then(|c| serde_json::from_str(c.get()).ok());
                body_of(c.as_ref())
            }
            _ => "New message".into(),
        };
        let badge = store
            .user_convs(&p.user_id)
            .await
            .map_err(err)?
            .iter()
            .map(|(c, m)| m.unread(c))
            .sum();
        Ok(Some(Notification {
            title,
            body,
            badge,
            conv_id: p.conv_id.clone(),
            seq: p.seq,
            msg_id: p.msg_id.clone(),
            expires_at_ms: p.ts.saturating_add(self.planner.push_ttl_ms),
        }))
    }

    async fn record(&self, p: &PushJob, provider: &str, result: &'static str, error: Option<&str>) {
        self.stats.push(provider, result);
        let attempt = PushAttempt {
            at: now_ms(),
            result: result.to_owned(),
            error: error.map(str::to_owned),
        };
        if let Err(e) = self
            .store
            .set_push_result(&p.user_id, &p.device_id, attempt)
            .await
        {
            tracing::warn!(error = %e, "could not record a push result");
        }
    }

    /// One attempt at one push job.
    pub(super) async fn attempt(&self, job: &Job) -> JobOutcome {
        let Ok(p) = serde_json::from_str::<PushJob>(&job.payload) else {
            return JobOutcome::Failed {
                error: "unreadable push job".into(),
            };
        };
        let provider = job.dest.as_str();
        let now = now_ms();
        if now >= job.expires_at {
            self.record(&p, provider, "expired", None).await;
            self.final_failure(&p, provider, "expired: push_ttl_ms passed");
            return JobOutcome::Done;
        }
        let device = match self.store.device(&p.user_id, &p.device_id).await {
            Ok(d) => d,
            Err(e) => return self.transient(job, &p, e.to_string(), None).await,
        };
        let Some(target) = device.and_then(|d| d.push) else {
            // Unregistered, logged out or removed since: nothing to do.
            self.stats.push(provider, "skipped");
            return JobOutcome::Done;
        };
        let n = match self.notification(&p).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                self.record(&p, &target.provider, "skipped", None).await;
                return JobOutcome::Done;
            }
            Err(e) => return self.transient(job, &p, e, None).await,
        };
        let started = std::time::Instant::now();
        let to = Recipient {
            user_id: &p.user_id,
            device_id: &p.device_id,
            target: &target,
        };
        let answer = self.pusher.send(&to, &n, now).await;
        self.stats.latency(&target.provider, started.elapsed());
        match answer {
            Answer::Sent => {
                self.record(&p, &target.provider, "sent", None).await;
                JobOutcome::Done
            }
            Answer::DeadToken(reason) => {
                self.record(&p, &target.provider, "dead_token", Some(&reason))
                    .await;
                self.drop_token(&p, &target).await;
                tracing::warn!(
                    user_id = %p.user_id, device_id = %p.device_id,
                    provider = %target.provider, token_tail = %target.token_tail(),
                    %reason, "push token is dead: registration removed"
                );
                JobOutcome::Done
            }
            Answer::Failed(reason) => {
                self.record(&p, &target.provider, "failed", Some(&reason))
                    .await;
                self.final_failure(&p, &target.provider, &reason);
                JobOutcome::Done
            }
            Answer::Retry { after, reason } => self.transient(job, &p, reason, after).await,
        }
    }

    /// A failure worth retrying: retry, unless attempts or time ran out.
    async fn transient(
        &self,
        job: &Job,
        p: &PushJob,
        reason: String,
        after: Option<Duration>,
    ) -> JobOutcome {
        let provider = job.dest.as_str();
        let n = job.attempts + 1;
        if u64::from(n) >= self.limits.push_max_attempts {
            self.record(p, provider, "failed", Some(&reason)).await;
            self.final_failure(p, provider, &format!("{reason} (after {n} attempts)"));
            return JobOutcome::Done;
        }
        match retry_or_end(job, backoff(n, PUSH_BACKOFF_CAP, after), reason, now_ms()) {
            Ok(retry) => {
                if let JobOutcome::Retry { error, .. } = &retry {
                    self.record(p, provider, "retry", Some(error)).await;
                }
                retry
            }
            Err(reason) => {
                self.record(p, provider, "expired", Some(&reason)).await;
                self.final_failure(p, provider, &format!("expired: {reason}"));
                JobOutcome::Done
            }
        }
    }

    fn final_failure(&self, p: &PushJob, provider: &str, reason: &str) {
        tracing::warn!(
            user_id = %p.user_id, device_id = %p.device_id, %provider,
            conv_id = %p.conv_id, seq = p.seq, %reason, "push failed for good"
        );
    }

    /// Removes a dead registration, unless the device registered another
    /// token since.
    async fn drop_token(&self, p: &PushJob, dead: &PushTarget) {
        let current = self.store.device(&p.user_id, &p.device_id).await;
        let same = matches!(&current, Ok(Some(d)) if d.push.as_ref().is_some_and(|t| t.token == dead.token && t.provider == dead.provider));
        if same
            && let Err(e) = self
                .store
                .set_push_token(&p.user_id, &p.device_id, None)
                .await
        {
            tracing::warn!(error = %e, "could not remove a dead push registration");
        }
    }

    /// Sends a test notification to each registered device of a user now,
    /// outside the queue, and answers each provider's answer.
    pub async fn test_push(
        &self,
        user_id: &str,
    ) -> Result<Vec<PushTestResult>, tokenim_core::Error> {
        let devices = self.store.devices(user_id).await?;
        let mut out = Vec::new();
        for d in devices {
            let Some(target) = &d.push else { continue };
            let n = Notification {
                title: self.providers.app_name.clone(),
                body: "Test notification".into(),
                badge: 0,
                conv_id: String::new(),
                seq: 0,
                msg_id: format!("test-{}", now_ms()),
                expires_at_ms: now_ms() + 3_600_000,
            };
            let to = Recipient {
                user_id,
                device_id: &d.device_id,
                target,
            };
            let (result, error) = match self.pusher.send(&to, &n, now_ms()).await {
                Answer::Sent => ("sent", None),
                Answer::DeadToken(r) => ("dead_token", Some(r)),
                Answer::Retry { reason, .. } => ("retry", Some(reason)),
                Answer::Failed(r) => ("failed", Some(r)),
            };
            out.push(PushTestResult {
                device_id: d.device_id.clone(),
                provider: target.provider.clone(),
                result: result.to_owned(),
                error,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_i2_2() {
        assert_eq!(
            body_of(Some(&serde_json::json!({"type":"text","text":"hi"}))),
            "hi"
        );
        let long = "é".repeat(250);
        let b = body_of(Some(&serde_json::json!({"type":"text","text":long})));
        assert_eq!(b.chars().count(), 200);
        assert!(b.ends_with('…'));
        assert_eq!(
            cut(&"x".repeat(200)),
            "x".repeat(200),
            "200 characters are kept"
        );
        assert_eq!(body_of(Some(&serde_json::json!({"type":"image"}))), "Image");
        assert_eq!(body_of(Some(&serde_json::json!({"type":"file"}))), "File");
        for t in ["encrypted", "mls", "custom"] {
            assert_eq!(
                body_of(Some(&serde_json::json!({"type":t,"text":"secret"}))),
                "New message"
            );
        }
        assert_eq!(body_of(None), "New message");
    }

    #[test]
    fn backoff_doubles_within_bounds_and_honours_retry_after() {
        for n in 1..6u32 {
            let d = Duration::from_secs(5 * (1 << (n - 1)));
            let w = backoff(n, PUSH_BACKOFF_CAP, None);
            assert!(w >= d / 2 && w <= d, "retry {n} waited {w:?}");
        }
        let w = backoff(30, PUSH_BACKOFF_CAP, None);
        assert!(w <= PUSH_BACKOFF_CAP && w >= PUSH_BACKOFF_CAP / 2);
        let w = backoff(1, PUSH_BACKOFF_CAP, Some(Duration::from_secs(120)));
        assert_eq!(w, Duration::from_secs(120));
    }
}
