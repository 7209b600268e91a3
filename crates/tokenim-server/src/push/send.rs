//! One push attempt through a provider (interface only until the
//! providers land on branch `providers`).

use std::sync::Arc;

use super::PushProviders;

/// What a push shows (I2.2) and until when it may be delivered.
pub struct Notification {
    pub title: String,
    pub body: String,
    pub badge: u64,
    pub conv_id: String,
    pub seq: u64,
    pub msg_id: String,
    /// unix ms when the push's TTL ends.
    pub expires_at_ms: i64,
}

pub struct Recipient<'a> {
    pub user_id: &'a str,
    pub device_id: &'a str,
    pub target: &'a tokenim_store::PushTarget,
}

/// A provider's answer, classified (I2.3, I-15).
#[derive(Debug)]
pub enum Answer {
    Sent,
    DeadToken(String),
    Retry {
        after: Option<std::time::Duration>,
        reason: String,
    },
    Failed(String),
}

pub struct Pusher {
    _providers: Arc<PushProviders>,
}

impl Pusher {
    pub fn new(providers: Arc<PushProviders>) -> anyhow::Result<Pusher> {
        Ok(Pusher {
            _providers: providers,
        })
    }

    pub async fn send(&self, _to: &Recipient<'_>, _n: &Notification, _now_ms: i64) -> Answer {
        Answer::Failed("providers are not built yet".into())
    }
}
