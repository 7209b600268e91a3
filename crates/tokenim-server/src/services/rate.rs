//! Rate limits: the login bucket per client address and the send bucket
//! per user, cluster-wide through Redis in cluster mode, else (or while
//! Redis is unreachable) this node's own buckets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokenim_core::clock::now_ms;
use tokenim_core::{Error, Limits, Result, TokenBucket};

use crate::delivery::cluster::Cluster;

pub struct RateLimits {
    limits: Limits,
    cluster: Option<Arc<Cluster>>,
    send: Mutex<HashMap<String, TokenBucket>>,
    login: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl RateLimits {
    pub fn new(limits: Limits, cluster: Option<Arc<Cluster>>) -> Self {
        RateLimits {
            limits,
            cluster,
            send: Mutex::new(HashMap::new()),
            login: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a login token for `ip`.
    pub async fn login(&self, ip: IpAddr) -> Result<()> {
        let l = &self.limits;
        if let Some(c) = &self.cluster
            && let Some(r) = c
                .take_token(
                    "login",
                    &ip.to_string(),
                    l.login_rate_per_min,
                    60_000,
                    l.login_burst,
                )
                .await
        {
            return r.map_err(Error::rate_limited);
        }
        let now = now_ms();
        let mut b = self.login.lock();
        b.entry(ip)
            .or_insert_with(|| TokenBucket::new(l.login_burst, now))
            .take(l.login_rate_per_min, 60_000, l.login_burst, now)
            .map_err(Error::rate_limited)
    }

    /// Takes a send token for `user_id`.
    pub async fn send(&self, user_id: &str) -> Result<()> {
        let l = &self.limits;
        if let Some(c) = &self.cluster
            && let Some(r) = c
                .take_token("send", user_id, l.send_rate_per_sec, 1000, l.send_burst)
                .await
        {
            return r.map_err(Error::rate_limited);
        }
        let now = now_ms();
        let mut b = self.send.lock();
        if let Some(bucket) = b.get_mut(user_id) {
            return bucket
                .take(l.send_rate_per_sec, 1000, l.send_burst, now)
                .map_err(Error::rate_limited);
        }
        let mut bucket = TokenBucket::new(l.send_burst, now);
        let r = bucket.take(l.send_rate_per_sec, 1000, l.send_burst, now);
        b.insert(user_id.to_owned(), bucket);
        r.map_err(Error::rate_limited)
    }

    /// Forgets buckets that are full again (called periodically).
    pub fn prune(&self) {
        let l = &self.limits;
        let now = now_ms();
        self.send
            .lock()
            .retain(|_, b| !b.is_full(l.send_rate_per_sec, 1000, l.send_burst, now));
        self.login
            .lock()
            .retain(|_, b| !b.is_full(l.login_rate_per_min, 60_000, l.login_burst, now));
    }
}
