//! Per-user publish rate limit (`PUBLISH_RATE_PER_SECOND` sustained, `PUBLISH_BURST` at
//! once). Only publishes the policy allowed consume anything, so a client hammering a
//! forbidden channel cannot starve its own legitimate publishes.
//!
//! Without `REDIS_URL` each replica keeps its own buckets (`local`). With it, the limit holds
//! across replicas (`shared`): one atomic Redis script per publish, and the local buckets
//! decide whenever Redis does not answer (fail open to per-replica).

mod local;
mod shared;

pub use self::local::PublishLimiter;
pub use self::shared::SharedLimiter;

use prometheus::{IntCounter, Registry};

/// One interface over the per-replica and the shared limiter. Cheap to clone.
#[derive(Clone)]
pub enum Limiter {
    Local(PublishLimiter),
    Shared(SharedLimiter),
}

impl Limiter {
    /// Takes one publish for `user`; false when the user is over the limit.
    pub async fn try_acquire(&self, user: &str) -> bool {
        match self {
            Self::Local(l) => l.try_acquire(user),
            Self::Shared(l) => l.try_acquire(user).await,
        }
    }

    /// `local` or `shared`, for logs and `check-config`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::Shared(_) => "shared",
        }
    }
}

#[derive(Clone)]
pub struct LimiterMetrics {
    /// Publishes the per-replica limiter decided because Redis did not answer.
    pub fallback: IntCounter,
}

impl LimiterMetrics {
    /// Creates and registers the metrics. Registering twice into one registry is a bug.
    pub fn new(registry: &Registry) -> Self {
        let fallback = IntCounter::new(
            "realtime_publish_limiter_fallback_total",
            "Publishes the per-replica limiter decided because Redis did not answer.",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(fallback.clone()))
            .expect("each metric is registered once");
        Self { fallback }
    }
}
