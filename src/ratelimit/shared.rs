//! The publish limit across replicas: a GCRA (generic cell rate algorithm) per user in
//! Redis, one `EVALSHA` per publish (the client falls back to `EVAL` when Redis lost the
//! script). GCRA keeps one number per user (the theoretical arrival time) and admits exactly
//! a token bucket's traffic: `burst` at once, then `rate` per second. Redis's own clock
//! (`TIME`) is the only clock, so replicas' clock skew does not matter. A refused publish
//! writes nothing. The key expires once the user's bucket would be full again.

use std::sync::Arc;

use redis::Script;
use sha2::{Digest, Sha256};

use super::{LimiterMetrics, PublishLimiter};
use crate::redis_client::RedisClient;

/// KEYS[1]: the user's key. ARGV[1]: microseconds per publish (1 / rate). ARGV[2]: burst.
/// Returns 1 when allowed (and recorded), 0 when refused (nothing written).
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then tat = math.max(tonumber(stored), now) end
local new_tat = tat + interval
if new_tat - interval * burst > now then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 1
";

#[derive(Clone)]
pub struct SharedLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    client: RedisClient,
    script: Script,
    interval_us: u64,
    burst: u32,
    /// Decides while Redis does not answer.
    local: PublishLimiter,
    metrics: LimiterMetrics,
}

impl SharedLimiter {
    /// `local` is the per-replica limiter built from the same settings.
    pub fn new(
        client: RedisClient,
        rate_per_second: f64,
        burst: u32,
        local: PublishLimiter,
        metrics: LimiterMetrics,
    ) -> Self {
        // Settings validation keeps the rate finite and positive; the clamp keeps the script's
        // arithmetic sane even so.
        let interval_us = (1_000_000.0 / rate_per_second).clamp(1.0, 1e12) as u64;
        Self {
            inner: Arc::new(Inner {
                client,
                script: Script::new(GCRA),
                interval_us,
                burst: burst.max(1),
                local,
                metrics,
            }),
        }
    }

    pub async fn try_acquire(&self, user: &str) -> bool {
        let inner = &self.inner;
        let key = inner.client.key(&user_key(user));
        let (interval, burst) = (inner.interval_us, inner.burst);
        let script = &inner.script;
        let key = &key;
        let answer = inner
            .client
            .call(move |mut c| async move {
                script
                    .key(key)
                    .arg(interval)
                    .arg(burst)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        match answer {
            Ok(allowed) => allowed == 1,
            // The client logs the outage once per streak and counts each failure by reason;
            // while its breaker is open this is answered at once.
            Err(_) => {
                inner.metrics.fallback.inc();
                inner.local.try_acquire(user)
            }
        }
    }
}

/// `publish:<32 hex>`: a hash keeps keys short and user ids out of Redis.
fn user_key(user: &str) -> String {
    format!(
        "publish:{}",
        hex::encode(&Sha256::digest(user.as_bytes())[..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::ratelimit::Limiter;
    use crate::redis_client::testing::{self, OwnRedis};

    /// A rate slow enough that nothing refills while a test runs.
    const SLOW_RATE: f64 = 0.001;

    fn limiter(url: &str, prefix: &str, burst: u32, metrics: &LimiterMetrics) -> Limiter {
        Limiter::Shared(SharedLimiter::new(
            testing::client(url, prefix),
            SLOW_RATE,
            burst,
            PublishLimiter::new(SLOW_RATE, burst, Clock::manual()),
            metrics.clone(),
        ))
    }

    fn metrics() -> LimiterMetrics {
        LimiterMetrics::new(&prometheus::Registry::new())
    }

    #[tokio::test]
    async fn a_burst_of_40_is_shared_by_three_replicas() {
        let prefix = testing::unique_prefix("limit");
        let m = metrics();
        let replicas: Vec<Limiter> = (0..3)
            .map(|_| limiter(&testing::shared_url(), &prefix, 40, &m))
            .collect();
        for n in 0..40 {
            assert!(replicas[n % 3].try_acquire("alice").await, "publish {n}");
        }
        for replica in &replicas {
            assert!(
                !replica.try_acquire("alice").await,
                "the 41st is refused everywhere"
            );
        }
        assert!(
            replicas[0].try_acquire("bob").await,
            "other users unaffected"
        );
        assert_eq!(m.fallback.get(), 0);
    }

    #[tokio::test]
    async fn refused_publishes_consume_nothing_and_the_rate_refills() {
        let prefix = testing::unique_prefix("refill");
        let client = testing::client(&testing::shared_url(), &prefix);
        // 1000/s: one publish per millisecond refills.
        let l = SharedLimiter::new(
            client,
            1000.0,
            2,
            PublishLimiter::new(1000.0, 2, Clock::manual()),
            metrics(),
        );
        assert!(l.try_acquire("u").await && l.try_acquire("u").await);
        // Refusals leave the stored arrival time alone, so after a pause one is allowed again.
        let mut refused = 0;
        while !l.try_acquire("u").await {
            refused += 1;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            assert!(refused < 10_000, "never refilled");
        }
    }

    #[tokio::test]
    async fn redis_down_means_the_local_limiter_decides() {
        let mut own = OwnRedis::start();
        let m = metrics();
        let l = limiter(&own.url(), &testing::unique_prefix("down"), 3, &m);
        assert!(l.try_acquire("u").await);
        own.stop();
        // The local bucket is full: it allows its own burst, then refuses.
        assert!(l.try_acquire("u").await);
        assert!(l.try_acquire("u").await);
        assert!(l.try_acquire("u").await);
        assert!(!l.try_acquire("u").await);
        assert_eq!(m.fallback.get(), 4);
    }

    #[test]
    fn user_keys_are_hashed() {
        assert_eq!(user_key("alice").len(), "publish:".len() + 32);
        assert_ne!(user_key("alice"), user_key("bob"));
        assert!(!user_key("alice").contains("alice"));
    }
}
