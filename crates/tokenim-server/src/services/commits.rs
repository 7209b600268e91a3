//! Queueing a timeline write on the store and waiting for its commit, with
//! the count of commits in flight (graceful shutdown waits for them) and
//! the committed-events counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokenim_core::clock::now_ms;
use tokenim_core::{Error, Result};
use tokenim_store::{Append, AppendFuture, AppendOutcome, Author, Op, Store};

use crate::metrics::Metrics;
use crate::services::Actor;

pub struct Commits {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    in_flight: AtomicU64,
}

impl Commits {
    pub fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Commits {
            store,
            metrics,
            in_flight: AtomicU64::new(0),
        }
    }

    /// Queues one write (synchronously, so a socket's writes reach the
    /// writer in the order it sent them: rule 8).
    pub fn queue(
        &self,
        a: &Actor,
        conv_id: &str,
        client_msg_id: Option<String>,
        op: Op,
        now_ms: i64,
    ) -> AppendFuture {
        self.queue_by(
            Author::device(&a.user_id, &a.device_id),
            a.conn,
            conv_id,
            client_msg_id,
            op,
            now_ms,
        )
    }

    /// [`Commits::queue`] for any author (the server API's writes, with or
    /// without a user), asked by connection `origin` (0: none).
    pub fn queue_by(
        &self,
        actor: Author,
        origin: u64,
        conv_id: &str,
        client_msg_id: Option<String>,
        op: Op,
        now_ms: i64,
    ) -> AppendFuture {
        self.store.append(vec![Append {
            conv_id: conv_id.to_owned(),
            actor,
            client_msg_id,
            op,
            origin,
            now_ms,
        }])
    }

    /// Waits for a queued write's commit.
    pub async fn finish(&self, fut: AppendFuture) -> Result<AppendOutcome> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let r = fut.await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let one = r?.pop().ok_or_else(|| Error::internal("no result"))??;
        if one.created() {
            self.metrics.events.fetch_add(1, Ordering::Relaxed);
        }
        Ok(one)
    }

    /// Queues one write and waits for its commit.
    pub async fn commit(
        &self,
        a: &Actor,
        conv_id: &str,
        client_msg_id: Option<String>,
        op: Op,
    ) -> Result<AppendOutcome> {
        let fut = self.queue(a, conv_id, client_msg_id, op, now_ms());
        self.finish(fut).await
    }

    /// Writes queued or committing right now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}
