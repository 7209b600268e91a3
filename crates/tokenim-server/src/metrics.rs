//! Counters for `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub events: AtomicU64,
    pub http_requests: AtomicU64,
    pub ws_accepted: AtomicU64,
    pub ws_frames_in: AtomicU64,
    pub slow_consumer_kicks: AtomicU64,
    pub errors_sent: AtomicU64,
}

impl Metrics {
    /// The metrics text; the cluster's counters when running as a node.
    pub fn render(
        &self,
        connections: usize,
        online_users: usize,
        cluster: Option<&crate::cluster::Stats>,
    ) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            "tokenim_events_committed_total",
            "timeline events committed by this node",
            get(&self.events),
        );
        counter(
            "tokenim_http_requests_total",
            "HTTP requests served",
            get(&self.http_requests),
        );
        counter(
            "tokenim_ws_accepted_total",
            "WebSocket connections authenticated",
            get(&self.ws_accepted),
        );
        counter(
            "tokenim_ws_frames_in_total",
            "WebSocket frames received",
            get(&self.ws_frames_in),
        );
        counter(
            "tokenim_slow_consumer_kicks_total",
            "sockets kicked for not reading",
            get(&self.slow_consumer_kicks),
        );
        counter(
            "tokenim_errors_sent_total",
            "error replies sent",
            get(&self.errors_sent),
        );
        if let Some(c) = cluster {
            for (name, help, v) in [
                (
                    "tokenim_cluster_published_total",
                    "messages published to the cluster bus",
                    &c.published,
                ),
                (
                    "tokenim_cluster_publish_dropped_total",
                    "messages not published (queue full or redis failing)",
                    &c.publish_dropped,
                ),
                (
                    "tokenim_cluster_received_total",
                    "messages received from other nodes",
                    &c.received,
                ),
                (
                    "tokenim_cluster_received_dropped_total",
                    "event batches from other nodes dropped (dispatcher queue full)",
                    &c.received_dropped,
                ),
                (
                    "tokenim_cluster_redis_errors_total",
                    "failed or timed-out redis calls",
                    &c.redis_errors,
                ),
                (
                    "tokenim_cluster_gap_filled_total",
                    "events read from the store to fill a gap before a push",
                    &c.gap_filled,
                ),
                (
                    "tokenim_cluster_repeats_dropped_total",
                    "events not pushed again (already pushed by this node)",
                    &c.repeats_dropped,
                ),
                (
                    "tokenim_cluster_rate_limit_local_total",
                    "rate-limit checks answered locally because redis failed",
                    &c.rate_limit_local,
                ),
                (
                    "tokenim_cluster_reaped_nodes_total",
                    "dead nodes whose devices this node took offline",
                    &c.reaped_nodes,
                ),
            ] {
                counter(name, help, get(v));
            }
        }
        let _ = writeln!(
            s,
            "# HELP tokenim_ws_connections live authenticated sockets\n# TYPE tokenim_ws_connections gauge\ntokenim_ws_connections {connections}"
        );
        let _ = writeln!(
            s,
            "# HELP tokenim_online_users users with a live socket\n# TYPE tokenim_online_users gauge\ntokenim_online_users {online_users}"
        );
        s
    }
}
