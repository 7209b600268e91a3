//! The limits of PROTOCOL.md section 6, their defaults, and how the
//! configuration sets them.

use serde::{Deserialize, Serialize};

/// The limits of PROTOCOL.md section 6, with their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_frame_bytes: u64,
    pub max_content_bytes: u64,
    pub max_group_members: u64,
    pub receipt_group_max: u64,
    pub recall_window_ms: u64,
    pub dedup_window_ms: u64,
    pub new_device_backfill: u64,
    pub heartbeat_ms: u64,
    pub send_rate_per_sec: u64,
    pub send_burst: u64,
    pub login_rate_per_min: u64,
    pub login_burst: u64,
    pub token_ttl_ms: u64,
    /// Largest user `metadata`, compact (PROTOCOL-INTEGRATION I1.2).
    pub user_metadata_bytes: u64,
    /// Most attempts at one push, and how long after its message's commit
    /// a push may still be made (PROTOCOL-INTEGRATION I2.3).
    pub push_max_attempts: u64,
    pub push_ttl_ms: u64,
    /// How long an after-event delivery is retried before it is `failed`
    /// (I3.4).
    pub webhook_retry_ms: u64,
    /// Most requests in flight to one push provider or one webhook.
    pub outbound_concurrency: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 65536,
            max_content_bytes: 16384,
            max_group_members: 100_000,
            receipt_group_max: 500,
            recall_window_ms: 120_000,
            dedup_window_ms: 604_800_000,
            new_device_backfill: 50,
            heartbeat_ms: 30_000,
            send_rate_per_sec: 20,
            send_burst: 50,
            login_rate_per_min: 10,
            login_burst: 20,
            token_ttl_ms: 2_592_000_000,
            user_metadata_bytes: 4096,
            push_max_attempts: 8,
            push_ttl_ms: 86_400_000,
            webhook_retry_ms: 86_400_000,
            outbound_concurrency: 16,
        }
    }
}

impl Limits {
    /// The names of every limit, as used in `[limits]` and
    /// `TOKENIM_LIMITS_<NAME>`.
    pub const NAMES: [&'static str; 18] = [
        "max_frame_bytes",
        "max_content_bytes",
        "max_group_members",
        "receipt_group_max",
        "recall_window_ms",
        "dedup_window_ms",
        "new_device_backfill",
        "heartbeat_ms",
        "send_rate_per_sec",
        "send_burst",
        "login_rate_per_min",
        "login_burst",
        "token_ttl_ms",
        "user_metadata_bytes",
        "push_max_attempts",
        "push_ttl_ms",
        "webhook_retry_ms",
        "outbound_concurrency",
    ];

    /// Sets one limit by name; `Err` names what was wrong.
    pub fn set(&mut self, name: &str, value: u64) -> Result<(), String> {
        let slot = match name {
            "max_frame_bytes" => &mut self.max_frame_bytes,
            "max_content_bytes" => &mut self.max_content_bytes,
            "max_group_members" => &mut self.max_group_members,
            "receipt_group_max" => &mut self.receipt_group_max,
            "recall_window_ms" => &mut self.recall_window_ms,
            "dedup_window_ms" => &mut self.dedup_window_ms,
            "new_device_backfill" => &mut self.new_device_backfill,
            "heartbeat_ms" => &mut self.heartbeat_ms,
            "send_rate_per_sec" => &mut self.send_rate_per_sec,
            "send_burst" => &mut self.send_burst,
            "login_rate_per_min" => &mut self.login_rate_per_min,
            "login_burst" => &mut self.login_burst,
            "token_ttl_ms" => &mut self.token_ttl_ms,
            "user_metadata_bytes" => &mut self.user_metadata_bytes,
            "push_max_attempts" => &mut self.push_max_attempts,
            "push_ttl_ms" => &mut self.push_ttl_ms,
            "webhook_retry_ms" => &mut self.webhook_retry_ms,
            "outbound_concurrency" => &mut self.outbound_concurrency,
            other => return Err(format!("unknown limit {other:?}")),
        };
        *slot = value;
        self.check()
    }

    /// Rejects settings the server cannot run with.
    pub fn check(&self) -> Result<(), String> {
        if self.max_frame_bytes < 1024 {
            return Err("max_frame_bytes must be at least 1024".into());
        }
        if self.max_content_bytes == 0 || self.max_content_bytes >= self.max_frame_bytes {
            return Err("max_content_bytes must be between 1 and max_frame_bytes".into());
        }
        if self.max_group_members < 2 {
            return Err("max_group_members must be at least 2".into());
        }
        if self.heartbeat_ms < 100 {
            return Err("heartbeat_ms must be at least 100".into());
        }
        if self.send_rate_per_sec == 0 || self.send_burst == 0 {
            return Err("send_rate_per_sec and send_burst must be positive".into());
        }
        if self.login_rate_per_min == 0 || self.login_burst == 0 {
            return Err("login_rate_per_min and login_burst must be positive".into());
        }
        if self.token_ttl_ms == 0 {
            return Err("token_ttl_ms must be positive".into());
        }
        if self.push_max_attempts == 0 || self.push_ttl_ms == 0 || self.webhook_retry_ms == 0 {
            return Err(
                "push_max_attempts, push_ttl_ms and webhook_retry_ms must be positive".into(),
            );
        }
        if !(1..=1024).contains(&self.outbound_concurrency) {
            return Err("outbound_concurrency must be 1..=1024".into());
        }
        Ok(())
    }
}
