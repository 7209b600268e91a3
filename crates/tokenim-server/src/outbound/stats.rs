//! The delivery engine's metrics (PROTOCOL-INTEGRATION I2.5):
//! `tokenim_push_total{provider, result}`, `tokenim_webhook_total{webhook,
//! result}`, and one latency histogram per provider and per webhook
//! (`tokenim_outbound_seconds{dest}`), in Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use parking_lot::Mutex;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Stats {
    push: Mutex<BTreeMap<(String, &'static str), u64>>,
    webhook: Mutex<BTreeMap<(String, &'static str), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl Stats {
    pub fn push(&self, provider: &str, result: &'static str) {
        *self
            .push
            .lock()
            .entry((provider.to_owned(), result))
            .or_default() += 1;
    }

    pub fn webhook(&self, name: &str, result: &'static str) {
        *self
            .webhook
            .lock()
            .entry((name.to_owned(), result))
            .or_default() += 1;
    }

    /// One request to a provider or webhook took `d`.
    pub fn latency(&self, dest: &str, d: Duration) {
        let s = d.as_secs_f64();
        let mut l = self.latency.lock();
        let h = l.entry(dest.to_owned()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += s;
    }

    /// How many pushes ended with `result` (for tests and `push test`).
    pub fn push_count(&self, provider: &str, result: &'static str) -> u64 {
        self.push
            .lock()
            .get(&(provider.to_owned(), result))
            .copied()
            .unwrap_or(0)
    }

    pub fn render(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "# HELP tokenim_push_total push attempts by provider and result\n# TYPE tokenim_push_total counter"
        );
        for ((p, r), v) in self.push.lock().iter() {
            let _ = writeln!(
                s,
                "tokenim_push_total{{provider=\"{}\",result=\"{r}\"}} {v}",
                label(p)
            );
        }
        let _ = writeln!(
            s,
            "# HELP tokenim_webhook_total after-event deliveries by webhook and result\n# TYPE tokenim_webhook_total counter"
        );
        for ((w, r), v) in self.webhook.lock().iter() {
            let _ = writeln!(
                s,
                "tokenim_webhook_total{{webhook=\"{}\",result=\"{r}\"}} {v}",
                label(w)
            );
        }
        let _ = writeln!(
            s,
            "# HELP tokenim_outbound_seconds time of one request to a push provider or webhook\n# TYPE tokenim_outbound_seconds histogram"
        );
        for (d, h) in self.latency.lock().iter() {
            let d = label(d);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "tokenim_outbound_seconds_bucket{{dest=\"{d}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                s,
                "tokenim_outbound_seconds_bucket{{dest=\"{d}\",le=\"+Inf\"}} {}\ntokenim_outbound_seconds_sum{{dest=\"{d}\"}} {}\ntokenim_outbound_seconds_count{{dest=\"{d}\"}} {}",
                h.count, h.sum, h.count
            );
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
