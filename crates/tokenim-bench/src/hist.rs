//! A lock-free latency histogram in microseconds: log-linear buckets with
//! 32 sub-buckets per power of two (about 3% resolution), shared by every
//! task of a run through atomics, so recording costs two relaxed adds.

use std::sync::atomic::{AtomicU64, Ordering};

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this are counted exactly.
const LINEAR: u64 = SUB * 2;
const BUCKETS: usize = LINEAR as usize + (64 - SUB_BITS as usize - 1) * SUB as usize;

pub struct Hist {
    counts: Box<[AtomicU64]>,
    max: AtomicU64,
    total: AtomicU64,
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let mantissa = (v >> (e - SUB_BITS)) & (SUB - 1);
    LINEAR as usize + (e - SUB_BITS - 1) as usize * SUB as usize + mantissa as usize
}

/// The middle of bucket `i`'s range.
fn value(i: usize) -> f64 {
    if (i as u64) < LINEAR {
        return i as f64;
    }
    let j = i - LINEAR as usize;
    let e = (j / SUB as usize) as u32 + SUB_BITS + 1;
    let mantissa = (j % SUB as usize) as u64;
    let low = (1u64 << e) + (mantissa << (e - SUB_BITS));
    low as f64 + (1u64 << (e - SUB_BITS)) as f64 / 2.0
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }
}

impl Hist {
    /// Records one latency in microseconds.
    pub fn record(&self, us: u64) {
        self.counts[index(us)].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        if us > self.max.load(Ordering::Relaxed) {
            self.max.fetch_max(us, Ordering::Relaxed);
        }
    }

    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The `q` quantile (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                let max = self.max.load(Ordering::Relaxed) as f64;
                return value(i).min(max) / 1000.0;
            }
        }
        self.max_ms()
    }

    pub fn max_ms(&self) -> f64 {
        self.max.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// p50, p90, p99 and max as JSON fields named `{prefix}p50_ms`, ...
    pub fn json(&self, prefix: &str, out: &mut serde_json::Map<String, serde_json::Value>) {
        let r = |x: f64| serde_json::json!((x * 1000.0).round() / 1000.0);
        out.insert(format!("{prefix}p50_ms"), r(self.quantile_ms(0.50)));
        out.insert(format!("{prefix}p90_ms"), r(self.quantile_ms(0.90)));
        out.insert(format!("{prefix}p99_ms"), r(self.quantile_ms(0.99)));
        out.insert(format!("{prefix}max_ms"), r(self.max_ms()));
    }

    /// "p50 1.23 ms, p90 ..., p99 ..., max ..." for the human summary.
    pub fn human(&self) -> String {
        format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} samples)",
            self.quantile_ms(0.5),
            self.quantile_ms(0.9),
            self.quantile_ms(0.99),
            self.max_ms(),
            self.count()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1000,
            12_345,
            1 << 30,
            u64::MAX >> 1,
        ] {
            let i = index(v);
            assert!(i >= last && i < BUCKETS, "{v}");
            last = i;
            let back = value(i);
            assert!(
                (back - v as f64).abs() <= v as f64 / 16.0 + 1.0,
                "{v} -> {back}"
            );
        }
    }

    #[test]
    fn quantiles() {
        let h = Hist::default();
        for v in 1..=1000 {
            h.record(v * 1000);
        }
        let p50 = h.quantile_ms(0.5);
        assert!((p50 - 500.0).abs() < 20.0, "{p50}");
        assert!((h.quantile_ms(0.99) - 990.0).abs() < 40.0);
        assert_eq!(h.max_ms(), 1000.0);
    }
}
