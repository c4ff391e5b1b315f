//! The per-replica publish limiter: a token bucket per user (`PUBLISH_RATE_PER_SECOND`
//! refill, `PUBLISH_BURST` capacity), in process memory.
//!
//! Buckets of users who went quiet are dropped once they would be full again, so memory follows
//! the number of recently active publishers, not everyone who ever published.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::clock::Clock;

/// Buckets kept before the first pruning pass.
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
    state: Mutex<Buckets>,
}

struct Buckets {
    map: HashMap<String, Bucket>,
    /// Size at which the next pruning pass runs. After a pass it is set to twice what was
    /// left, so a crowd of active users (whose buckets cannot be pruned) costs amortised O(1)
    /// per insert instead of a full scan on every new user.
    prune_at: usize,
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
                state: Mutex::new(Buckets {
                    map: HashMap::new(),
                    prune_at: PRUNE_THRESHOLD,
                }),
            }),
        }
    }

    /// Takes one token for `user`; false when the user is over the limit.
    pub fn try_acquire(&self, user: &str) -> bool {
        let Inner { rate, burst, .. } = *self.inner;
        let now = self.inner.clock.now();
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = state.map.get_mut(user) {
            let tokens = bucket.refilled(now, rate, burst);
            let allowed = tokens >= 1.0;
            *bucket = Bucket {
                tokens: if allowed { tokens - 1.0 } else { tokens },
                updated: now,
            };
            return allowed;
        }
        if state.map.len() >= state.prune_at {
            state
                .map
                .retain(|_, b| b.refilled(now, rate, burst) < burst);
            state.prune_at = (state.map.len() * 2).max(PRUNE_THRESHOLD);
        }
        state.map.insert(
            user.to_owned(),
            Bucket {
                tokens: burst - 1.0,
                updated: now,
            },
        );
        true
    }

    /// Buckets currently held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
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

    #[test]
    fn idle_users_are_forgotten_and_active_crowds_do_not_rescan() {
        let clock = Clock::manual();
        let limiter = PublishLimiter::new(10.0, 2, clock.clone());
        for n in 0..PRUNE_THRESHOLD {
            assert!(limiter.try_acquire(&format!("u{n}")));
        }
        // Everyone is still active (no refill yet): the pass keeps all and backs off to 2x.
        assert!(limiter.try_acquire("late"));
        assert_eq!(limiter.len(), PRUNE_THRESHOLD + 1);
        // Once their buckets are full again, the next pass forgets them.
        clock.advance(Duration::from_secs(1));
        for n in 0..PRUNE_THRESHOLD {
            assert!(limiter.try_acquire(&format!("v{n}")));
        }
        assert_eq!(limiter.len(), PRUNE_THRESHOLD, "only the v* users remain");
    }
}
