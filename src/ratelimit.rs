//! Per-user publish rate limit: a token bucket per user (`PUBLISH_RATE_PER_SECOND` refill,
//! `PUBLISH_BURST` capacity). Only publishes the policy allowed consume a token, so a client
//! hammering a forbidden channel cannot starve its own legitimate publishes.
//!
//! Buckets of users who went quiet are dropped once they would be full again, so memory follows
//! the number of recently active publishers, not everyone who ever published.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::clock::Clock;

/// Past this many buckets, full ones are pruned on insert.
const PRUNE_THRESHOLD: usize = 10_000;

#[derive(Clone)]
pub struct PublishLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    rate: f64,
    burst: f64,
    clock: Clock,
    // std Mutex: one map lookup and a little arithmetic, never across `.await`.
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

impl PublishLimiter {
    pub fn new(rate_per_second: f64, burst: u32, clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                rate: rate_per_second,
                burst: f64::from(burst),
                clock,
                buckets: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Takes one token for `user`; false when the user is over the limit.
    pub fn try_acquire(&self, user: &str) -> bool {
        let Inner { rate, burst, .. } = *self.inner;
        let now = self.inner.clock.now();
        let mut buckets = self
            .inner
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(user) {
            let tokens = bucket.refilled(now, rate, burst);
            let allowed = tokens >= 1.0;
            *bucket = Bucket {
                tokens: if allowed { tokens - 1.0 } else { tokens },
                updated: now,
            };
            return allowed;
        }
        if buckets.len() >= PRUNE_THRESHOLD {
            buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
        }
        buckets.insert(
            user.to_owned(),
            Bucket {
                tokens: burst - 1.0,
                updated: now,
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_user() {
        let clock = Clock::manual();
        let limiter = PublishLimiter::new(2.0, 3, clock.clone());
        assert!((0..3).all(|_| limiter.try_acquire("a")));
        assert!(!limiter.try_acquire("a"), "burst spent");
        assert!(limiter.try_acquire("b"), "other users unaffected");
        clock.advance(Duration::from_millis(500));
        assert!(
            limiter.try_acquire("a"),
            "one token refilled after 1/rate s"
        );
        assert!(!limiter.try_acquire("a"));
        clock.advance(Duration::from_secs(60));
        assert!(
            (0..3).all(|_| limiter.try_acquire("a")),
            "refill caps at the burst"
        );
        assert!(!limiter.try_acquire("a"));
    }
}
