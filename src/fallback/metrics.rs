//! Metrics of the ledger and of reloads, registered into the service's registry.
//!
//! Every label takes its values from an enum here, and every value is initialised at 0, so
//! alerts on ledger errors, conflicts and reload failures see a series from the first scrape.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::config::LedgerKind;
use super::reload::{ReloadResult, ReloadTarget};

/// What the ledger was doing when it failed (`realtime_fallback_ledger_errors_total{op}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerOp {
    /// A take: the claim of one ticket.
    Claim,
    /// Reading the ledger at startup.
    Load,
    /// Writing claims made locally during a Redis outage.
    Backfill,
    /// Counting consumed tickets for the pool size.
    Count,
}

impl LedgerOp {
    pub const ALL: [Self; 4] = [Self::Claim, Self::Load, Self::Backfill, Self::Count];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Load => "load",
            Self::Backfill => "backfill",
            Self::Count => "count",
        }
    }
}

#[derive(Clone)]
pub struct FallbackMetrics {
    /// Ledger operations that failed, by ledger and operation.
    pub ledger_errors: IntCounterVec,
    /// Tickets claimed locally during a Redis outage that another replica had claimed too.
    pub ledger_conflicts: IntCounter,
    /// Tickets claimed in process memory because Redis did not answer.
    pub ledger_local_claims: IntCounter,
    /// 1 while the ledger answers (always 1 for memory; file: the last write succeeded).
    pub ledger_reachable: IntGauge,
    /// Reloads of the fallback ticket set, by result.
    pub pool_reloads: IntCounterVec,
    /// Reloads of the channel policy file, by result.
    pub policy_reloads: IntCounterVec,
    /// Unix time of the last completed reload of the ticket set.
    pub pool_last_reload: IntGauge,
    /// Times Redis was found to have lost the ledger's data (the generation marker changed).
    pub ledger_data_losses: IntCounter,
    /// Local claims waiting to be written back to Redis.
    pub ledger_pending_claims: IntGauge,
    /// 1 while the Redis holding the ledger can lose it: `risk` = eviction, no_persistence.
    pub ledger_redis_risk: IntGaugeVec,
}

/// A way the Redis holding the ledger can lose consumed marks
/// (`realtime_fallback_ledger_redis_risk{risk}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisRisk {
    /// `maxmemory-policy` other than `noeviction`: the marks carry a TTL, so both the
    /// `allkeys-*` and `volatile-*` policies evict them.
    Eviction,
    /// Neither AOF nor RDB snapshots: a restart empties it.
    NoPersistence,
}

impl RedisRisk {
    pub const ALL: [Self; 2] = [Self::Eviction, Self::NoPersistence];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eviction => "eviction",
            Self::NoPersistence => "no_persistence",
        }
    }
}

impl FallbackMetrics {
    /// Creates and registers the metrics. Registering twice into one registry is a bug.
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            ledger_errors: IntCounterVec::new(
                Opts::new(
                    "realtime_fallback_ledger_errors_total",
                    "Fallback ledger operations that failed, by ledger and operation.",
                ),
                &["ledger", "op"],
            )
            .expect("static metric definition"),
            ledger_conflicts: IntCounter::new(
                "realtime_fallback_ledger_conflicts_total",
                "Fallback tickets claimed locally during a Redis outage and found claimed by another replica.",
            )
            .expect("static metric definition"),
            ledger_local_claims: IntCounter::new(
                "realtime_fallback_ledger_local_claims_total",
                "Fallback tickets claimed in process memory because Redis did not answer.",
            )
            .expect("static metric definition"),
            ledger_reachable: IntGauge::new(
                "realtime_fallback_ledger_reachable",
                "1 while the fallback ledger answers.",
            )
            .expect("static metric definition"),
            pool_reloads: IntCounterVec::new(
                Opts::new(
                    "realtime_fallback_reloads_total",
                    "Reloads of the fallback ticket set, by result.",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            policy_reloads: IntCounterVec::new(
                Opts::new(
                    "realtime_channel_policy_reloads_total",
                    "Reloads of the channel policy file, by result.",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            pool_last_reload: IntGauge::new(
                "realtime_fallback_pool_last_reload_timestamp_seconds",
                "Unix time of the last completed reload of the fallback ticket set.",
            )
            .expect("static metric definition"),
            ledger_data_losses: IntCounter::new(
                "realtime_fallback_ledger_data_loss_total",
                "Times Redis was found to have lost the fallback ledger's data (restart without persistence, failover, flush, eviction).",
            )
            .expect("static metric definition"),
            ledger_pending_claims: IntGauge::new(
                "realtime_fallback_ledger_pending_claims",
                "Fallback tickets claimed locally during a Redis outage and not yet written back to Redis.",
            )
            .expect("static metric definition"),
            ledger_redis_risk: IntGaugeVec::new(
                Opts::new(
                    "realtime_fallback_ledger_redis_risk",
                    "1 while the Redis holding the fallback ledger can lose consumed marks, by risk (eviction, no_persistence).",
                ),
                &["risk"],
            )
            .expect("static metric definition"),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 10] = [
            Box::new(m.ledger_errors.clone()),
            Box::new(m.ledger_conflicts.clone()),
            Box::new(m.ledger_local_claims.clone()),
            Box::new(m.ledger_reachable.clone()),
            Box::new(m.pool_reloads.clone()),
            Box::new(m.policy_reloads.clone()),
            Box::new(m.pool_last_reload.clone()),
            Box::new(m.ledger_data_losses.clone()),
            Box::new(m.ledger_pending_claims.clone()),
            Box::new(m.ledger_redis_risk.clone()),
        ];
        for c in collectors {
            registry
                .register(c)
                .expect("each metric is registered once");
        }
        for ledger in LedgerKind::ALL {
            for op in LedgerOp::ALL {
                m.ledger_errors
                    .with_label_values(&[ledger.as_str(), op.as_str()]);
            }
        }
        for risk in RedisRisk::ALL {
            m.ledger_redis_risk.with_label_values(&[risk.as_str()]);
        }
        for result in ReloadResult::ALL {
            m.pool_reloads.with_label_values(&[result.as_str()]);
            m.policy_reloads.with_label_values(&[result.as_str()]);
        }
        m
    }

    pub fn ledger_error(&self, ledger: LedgerKind, op: LedgerOp) {
        self.ledger_errors
            .with_label_values(&[ledger.as_str(), op.as_str()])
            .inc();
    }

    pub fn reload(&self, target: ReloadTarget, result: ReloadResult) {
        let counter = match target {
            ReloadTarget::FallbackPool => &self.pool_reloads,
            ReloadTarget::ChannelPolicy => &self.policy_reloads,
        };
        counter.with_label_values(&[result.as_str()]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_value_is_exported_at_zero() {
        let registry = Registry::new();
        let _m = FallbackMetrics::new(&registry);
        let families = registry.gather();
        let series = |name: &str| {
            families
                .iter()
                .find(|f| f.name() == name)
                .map_or(0, |f| f.get_metric().len())
        };
        assert_eq!(series("realtime_fallback_ledger_errors_total"), 12);
        assert_eq!(series("realtime_fallback_reloads_total"), 3);
        assert_eq!(series("realtime_channel_policy_reloads_total"), 3);
        assert_eq!(series("realtime_fallback_ledger_conflicts_total"), 1);
    }
}
