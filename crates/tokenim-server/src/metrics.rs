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
    /// The metrics text, with `extra` counters (the cluster's, on a node).
    pub fn render(
        &self,
        connections: usize,
        online_users: usize,
        extra: &[(&'static str, &'static str, u64)],
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
        for (name, help, v) in extra {
            counter(name, help, *v);
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
