//! Token buckets, pure: time is passed in. The server's rate limits
//! (sends, logins) are built on them.

/// A token bucket: `rate` tokens per `per_ms` milliseconds, holding at most
/// `burst`. Time is passed in, so the bucket is pure and testable.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: i64,
}

impl TokenBucket {
    pub fn new(burst: u64, now_ms: i64) -> Self {
        TokenBucket {
            tokens: burst as f64,
            last_ms: now_ms,
        }
    }

    /// Takes one token, or says how many milliseconds until one is there.
    pub fn take(&mut self, rate: u64, per_ms: u64, burst: u64, now_ms: i64) -> Result<(), u64> {
        let per_token_ms = per_ms as f64 / rate as f64;
        let elapsed = (now_ms - self.last_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed / per_token_ms).min(burst as f64);
        self.last_ms = now_ms.max(self.last_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - self.tokens) * per_token_ms).ceil() as u64;
            Err(wait.max(1))
        }
    }

    /// Whether the bucket is full again at `now_ms` (and can be forgotten).
    pub fn is_full(&self, rate: u64, per_ms: u64, burst: u64, now_ms: i64) -> bool {
        let per_token_ms = per_ms as f64 / rate as f64;
        let elapsed = (now_ms - self.last_ms).max(0) as f64;
        self.tokens + elapsed / per_token_ms >= burst as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut b = TokenBucket::new(3, 0);
        for _ in 0..3 {
            assert!(b.take(10, 1000, 3, 0).is_ok());
        }
        let wait = b.take(10, 1000, 3, 0).unwrap_err();
        assert_eq!(wait, 100);
        assert!(b.take(10, 1000, 3, 100).is_ok());
        assert!(b.take(10, 1000, 3, 100).is_err());
        assert!(b.is_full(10, 1000, 3, 10_000));
    }
}
