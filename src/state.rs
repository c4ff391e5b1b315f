//! Shared application state handed to every handler, built once at startup from `Settings`.
//!
//! Axum clones the state for every request, so `AppState` is one `Arc` around everything:
//! a clone is a single atomic increment, however many handles the service grows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::clock::Clock;
use crate::connect::ConnectConfig;
use crate::fallback::TicketPool;
use crate::http::auth::ProxyAuth;
use crate::identity::Gateway;
use crate::metrics::Metrics;
use crate::settings::StatusMode;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub auth: ProxyAuth,
    pub max_body_bytes: usize,
    pub status_mode: StatusMode,
    pub identity: Gateway,
    pub pool: TicketPool,
    pub connect: ConnectConfig,
    pub policy: crate::policy::ChannelPolicy,
    pub limiter: crate::ratelimit::Limiter,
    pub rpc: crate::rpc::RpcClient,
    pub metrics: Metrics,
    pub clock: Clock,
    pub readiness: Readiness,
}

impl Shared {
    /// Brings the time-dependent gauges up to date; called on every scrape, because an outage
    /// passes its window without any event that could update them.
    pub fn refresh_gauges(&self) {
        let outage = self.identity.detector().snapshot();
        self.metrics.identity_outage.set(i64::from(outage.degraded));
        self.metrics
            .identity_failures
            .set(i64::try_from(outage.consecutive_failures).unwrap_or(i64::MAX));
        self.metrics
            .outage_age
            .set(outage.age.map_or(0.0, |age| age.as_secs_f64()));
        self.metrics
            .pool_size
            .set(i64::try_from(self.pool.size()).unwrap_or(i64::MAX));
    }
}

/// Readiness: true from startup until shutdown begins.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn ready() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn begin_shutdown(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
