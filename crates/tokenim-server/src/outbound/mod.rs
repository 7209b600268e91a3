//! The durable outbound-delivery engine (PROTOCOL-INTEGRATION I2.2-I2.5,
//! I3.4): offline pushes and after-event webhooks, both as jobs the store
//! keeps (`tokenim_store::Job`).
//!
//! A commit records the jobs its events need (`planner`); this node's
//! worker claims due jobs with a lease (so in a cluster one node works each
//! job, and a dead node's jobs are taken over when its leases run out),
//! works them off the send path under a per-destination concurrency limit,
//! and ends each with done, retry-at or failed. `push` decides who is
//! pushed and makes the attempts; `webhook` delivers after-events in seq
//! order per conversation and webhook; `stats` are their metrics.
//!
//! Uses the store, the push providers (`crate::push`), the webhook
//! signatures (`crate::webhooks`) and the cluster-wide view of live sockets
//! (`crate::delivery::fanout`); no service imports it, the API reads it.

pub mod ops;
pub mod planner;
pub mod push;
pub mod stats;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use tokenim_core::Limits;
use tokenim_core::clock::now_ms;
use tokenim_store::{Job, JobKind, JobOutcome, Store};
use tokio::sync::{Notify, Semaphore, watch};

use crate::delivery::fanout::Fanout;
use crate::push::PushProviders;
use crate::push::send::Pusher;
use crate::webhooks::config::Webhook;
use planner::Planner;
use stats::Stats;

/// How long a claimed job is this node's (an attempt times out after 10 s).
const LEASE_MS: i64 = 60_000;
/// Most jobs this node works at once.
const MAX_IN_FLIGHT: usize = 512;
/// How often an idle worker looks for due jobs (others' commits, retries).
const POLL: Duration = Duration::from_millis(200);
/// Failed deliveries are kept this long (I-21).
const KEEP_FAILED_MS: i64 = 7 * 24 * 3_600_000;

pub struct Outbound {
    pub(crate) store: Arc<dyn Store>,
    pub planner: Arc<Planner>,
    pub(crate) pusher: Pusher,
    pub(crate) providers: Arc<PushProviders>,
    pub(crate) hooks: HashMap<String, webhook::Hook>,
    pub(crate) fanout: Arc<Fanout>,
    pub stats: Arc<Stats>,
    pub(crate) limits: Limits,
    /// This node's name on its leases.
    owner: String,
    wake: Notify,
    in_flight: AtomicUsize,
    /// One per destination (provider or webhook), made on first use.
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Retry `n` (1 = the first retry) waits a random time in [d/2, d], d =
/// min(5 s × 2^(n-1), `cap`), or `retry_after` when that is longer (I-15).
pub fn backoff(n: u32, cap: Duration, retry_after: Option<Duration>) -> Duration {
    let d = Duration::from_secs(5)
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(cap);
    let ms = d.as_millis() as u64;
    let wait = Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)));
    match retry_after {
        Some(r) if r > wait => r,
        _ => wait,
    }
}

impl Outbound {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        providers: Arc<PushProviders>,
        webhooks: &[Webhook],
        client: reqwest::Client,
        fanout: Arc<Fanout>,
        limits: Limits,
        node: &str,
    ) -> anyhow::Result<Arc<Outbound>> {
        let planner = Arc::new(Planner::new(
            !providers.names().is_empty(),
            &limits,
            webhooks,
        ));
        let hooks = webhooks
            .iter()
            .filter(|w| planner.hooks.iter().any(|(n, _)| *n == w.name))
            .map(|w| (w.name.clone(), webhook::Hook::new(w, client.clone())))
            .collect();
        let mut suffix = [0u8; 4];
        rand::thread_rng().fill(&mut suffix);
        let owner = format!(
            "{node}-{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Ok(Arc::new(Outbound {
            store,
            planner,
            pusher: Pusher::new(providers.clone())?,
            providers,
            hooks,
            fanout,
            stats: Arc::new(Stats::default()),
            limits,
            owner,
            wake: Notify::new(),
            in_flight: AtomicUsize::new(0),
            gates: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether anything is configured that makes jobs.
    pub fn active(&self) -> bool {
        self.planner.active()
    }

    /// Installs the planner in the store (before serving), so commits
    /// record their jobs.
    pub fn install(&self) {
        if self.active() {
            self.store.set_planner(self.planner.clone());
        }
    }

    /// New jobs may be due: look now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn gate(&self, dest: &str) -> Arc<Semaphore> {
        self.gates
            .lock()
            .entry(dest.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.outbound_concurrency as usize)))
            .clone()
    }

    /// The worker: claims due jobs and works them until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let names: Vec<String> = self.hooks.keys().cloned().collect();
        match self.store.drop_jobs(JobKind::Webhook, &names).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(dropped = n, "deliveries of removed webhooks dropped"),
            Err(e) => tracing::warn!(error = %e, "could not drop removed webhooks' deliveries"),
        }
        let mut last_purge = 0i64;
        loop {
            if *stop.borrow() {
                return;
            }
            let now = now_ms();
            if now - last_purge > 3_600_000 {
                last_purge = now;
                if let Err(e) = self.store.purge_failed_jobs(now - KEEP_FAILED_MS).await {
                    tracing::warn!(error = %e, "could not purge old failed deliveries");
                }
            }
            let free = MAX_IN_FLIGHT.saturating_sub(self.in_flight.load(Ordering::Relaxed));
            let jobs = if free == 0 {
                Vec::new()
            } else {
                let kinds = [JobKind::PushDecide, JobKind::Push, JobKind::Webhook];
                match self
                    .store
                    .claim_jobs(&kinds, &self.owner, now, LEASE_MS, free.min(128))
                    .await
                {
                    Ok(j) => j,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming outbound jobs failed");
                        Vec::new()
                    }
                }
            };
            if jobs.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            for job in jobs {
                self.in_flight.fetch_add(1, Ordering::Relaxed);
                let me = self.clone();
                tokio::spawn(async move {
                    me.work(job).await;
                    me.in_flight.fetch_sub(1, Ordering::Relaxed);
                    me.wake();
                });
            }
        }
    }

    async fn work(&self, job: Job) {
        let gate = self.gate(&job.dest);
        let Ok(_permit) = gate.acquire().await else {
            return;
        };
        let outcome = match job.kind {
            JobKind::PushDecide => self.decide(&job).await,
            JobKind::Push => self.attempt(&job).await,
            JobKind::Webhook => self.deliver(&job).await,
        };
        if let Err(e) = self
            .store
            .finish_job(job.id, &self.owner, job.version, outcome, now_ms())
            .await
        {
            // The lease runs out and the job is tried again: at least once.
            tracing::warn!(job = job.id, error = %e, "could not record an outbound job's end");
        }
    }
}

/// A retry of `job` after `wait`, or its end when that passes its expiry.
pub(crate) fn retry_or_end(
    job: &Job,
    wait: Duration,
    error: String,
    now: i64,
) -> Result<JobOutcome, String> {
    let due = now.saturating_add(wait.as_millis().min(i64::MAX as u128) as i64);
    if due >= job.expires_at {
        Err(error)
    } else {
        Ok(JobOutcome::Retry { due_at: due, error })
    }
}
