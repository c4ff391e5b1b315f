//! The use cases: the only place that orchestrates identity-service, the outage detector, the
//! fallback pool, the rate limiter, rpc backends and the clock. Both transports call these
//! methods with a neutral request and encode the neutral decision they get back; the
//! decisions themselves are pure functions in `crate::decide`.
//!
//! Each use case also counts its decision and writes its log line, so both transports are
//! observed the same way.

mod calls;
mod connect;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::ConnectConfig;
use crate::decide::context::{identity_context, ContextProblem};
use crate::fallback::TicketPool;
use crate::identity::{Gateway, IdentityClient};
use crate::meta::ConnectionMeta;
use crate::metrics::Metrics;
use crate::policy::live::LivePolicy;
use crate::proxy::{CallRequest, Decision, ProxyKind, Transport};
use crate::ratelimit::Limiter;
use crate::rpc::RpcClient;

/// Everything the use cases need, built once at startup.
#[derive(Clone)]
pub struct Parts {
    pub identity: Gateway,
    pub pool: TicketPool,
    pub connect: ConnectConfig,
    pub policy: Arc<LivePolicy>,
    pub limiter: Limiter,
    pub rpc: RpcClient,
    pub clock: Clock,
    pub metrics: Metrics,
}

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct ProxyService(Arc<Parts>);

impl ProxyService {
    pub fn new(parts: Parts) -> Self {
        Self(Arc::new(parts))
    }

    /// The same service with its own identity-service client (sharing the outage detector
    /// and everything else): for a runtime whose calls should not wake another's tasks.
    pub fn with_identity_client(&self, client: IdentityClient) -> Self {
        let mut parts = (*self.0).clone();
        parts.identity = Gateway::new(client, self.0.identity.detector().clone());
        Self::new(parts)
    }

    pub fn identity(&self) -> &Gateway {
        &self.0.identity
    }

    pub fn pool(&self) -> &TicketPool {
        &self.0.pool
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn policy(&self) -> &LivePolicy {
        &self.0.policy
    }

    /// Brings the time-dependent gauges up to date; called on every scrape, because an outage
    /// passes its window without any event that could update them.
    pub fn refresh_gauges(&self) {
        let parts = &self.0;
        let outage = parts.identity.detector().snapshot();
        parts
            .metrics
            .identity_outage
            .set(i64::from(outage.degraded));
        parts
            .metrics
            .identity_failures
            .set(i64::try_from(outage.consecutive_failures).unwrap_or(i64::MAX));
        parts
            .metrics
            .outage_age
            .set(outage.age.map_or(0.0, |age| age.as_secs_f64()));
        parts
            .metrics
            .pool_size
            .set(i64::try_from(parts.pool.size()).unwrap_or(i64::MAX));
        // A reload can change the status (a Secret mounted late, a path that went away).
        parts.metrics.set_pool_status(parts.pool.status());
    }

    /// The identity context of a call after connect, with the refusal logged once here.
    fn context(
        &self,
        kind: ProxyKind,
        request: &CallRequest<'_>,
    ) -> Result<ConnectionMeta, ContextProblem> {
        let context = identity_context(request.meta, request.user);
        if let Err(problem) = &context {
            tracing::warn!(
                proxy = kind.as_str(),
                client = request.client,
                %problem,
                "proxy call refused: untrusted identity context"
            );
        }
        context
    }

    /// Counts and logs a decision of the proxies after connect.
    fn finish<R>(
        &self,
        kind: ProxyKind,
        via: Transport,
        request: &CallRequest<'_>,
        decision: Decision<R>,
    ) -> Decision<R> {
        self.0.metrics.count_decision(kind, decision.outcome, via);
        let outcome = decision.outcome.as_str();
        tracing::debug!(
            proxy = kind.as_str(),
            outcome,
            client = request.client,
            "proxy decision"
        );
        decision
    }
}
