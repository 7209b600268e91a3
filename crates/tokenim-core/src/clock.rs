//! The wall clock, read in one place for every crate. The rules of this
//! crate never call it: they take `now_ms` as an argument, so they stay
//! pure and testable; the callers (server, store, SDK, CLI) read the time
//! here and pass it in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
