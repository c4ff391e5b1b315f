//! The state that outlives a request: the fallback pool with its ledger, the live channel
//! policy and the publish limiter, built from the configuration, with the background tasks
//! that keep them current (ledger backfill, reloads, SIGHUP) and the one token that stops
//! them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{load_policy, StartupError};
use crate::clock::Clock;
use crate::config::{Config, ConfigError, ConfigErrors};
use crate::fallback::ledger::Ledger;
use crate::fallback::metrics::FallbackMetrics;
use crate::fallback::reload::{self, ReloadHandle, ReloadResult, ReloadTarget};
use crate::fallback::TicketPool;
use crate::metrics::Metrics;
use crate::policy::live::LivePolicy;
use crate::ratelimit::{Limiter, LimiterMetrics, PublishLimiter, SharedLimiter};
use crate::redis_client::RedisClient;

pub(super) struct Stores {
    pub pool: TicketPool,
    pub policy: Arc<LivePolicy>,
    pub limiter: Limiter,
    pub background: Background,
}

pub(super) fn build(
    config: &Config,
    metrics: &Metrics,
    clock: &Clock,
) -> Result<Stores, StartupError> {
    // Background work (ledger backfill, reloads, SIGHUP) stops through this one token.
    let stop = CancellationToken::new();
    let redis = match &config.redis {
        Some(redis) => Some(
            RedisClient::connect_lazy(redis)
                .map_err(|e| ConfigErrors::from(e.to_config_error()))?,
        ),
        None => None,
    };
    // Registered without Redis too, so the alerts and the dashboard find every series in the
    // first scrape: no call fails and Redis is never reported unavailable.
    match &redis {
        Some(client) => client.metrics().register(metrics.registry()),
        None => crate::redis_client::RedisMetrics::default().register(metrics.registry()),
    }
    let fallback_metrics = FallbackMetrics::new(metrics.registry());
    let ledger = Ledger::build(
        &config.fallback.store.ledger,
        redis.clone(),
        &fallback_metrics,
    )
    .map_err(|e| {
        ConfigErrors::from(ConfigError::new(
            "FALLBACK_LEDGER_PATH",
            format!("the ledger cannot be opened: {e}"),
        ))
    })?;
    let pool = TicketPool::new(
        config.fallback.tickets_path.clone(),
        config.fallback.low_watermark,
        ledger,
        fallback_metrics.clone(),
        clock.clone(),
    );
    metrics.set_pool_status(pool.status());
    let mut tasks: Vec<_> = pool
        .ledger()
        .spawn_background(stop.clone())
        .into_iter()
        .chain(
            redis
                .as_ref()
                .and_then(|client| client.spawn_tls_watch(stop.clone())),
        )
        .collect();
    let policy = Arc::new(LivePolicy::new(
        config.policy_path.clone(),
        load_policy(config.policy_path.as_deref())?,
        clock.unix_seconds(),
    ));
    let (reload, reloader) = reload::spawn(
        config.fallback.store.reload_interval,
        vec![
            Arc::new(pool.clone()),
            reload::hook(ReloadTarget::ChannelPolicy, {
                let (policy, clock) = (policy.clone(), clock.clone());
                move || match policy.reload(clock.unix_seconds()) {
                    Ok(true) => ReloadResult::Changed,
                    Ok(false) => ReloadResult::Unchanged,
                    Err(_) => ReloadResult::Error,
                }
            }),
        ],
        fallback_metrics,
        stop.clone(),
    );
    tasks.push(reloader);
    match reload::spawn_sighup(reload.clone(), stop.clone()) {
        Ok(task) => tasks.push(task),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: reloads run on the interval only")
        }
    }
    let local_limiter = PublishLimiter::new(
        config.publish.rate_per_second,
        config.publish.burst,
        clock.clone(),
    );
    // Registered without Redis too: every family is in the first scrape (alerts and the
    // dashboard see 0, not absence).
    let limiter_metrics = LimiterMetrics::new(metrics.registry());
    let limiter = match redis {
        Some(client) => Limiter::Shared(SharedLimiter::new(
            client,
            config.publish.rate_per_second,
            config.publish.burst,
            local_limiter,
            limiter_metrics,
        )),
        None => Limiter::Local(local_limiter),
    };
    Ok(Stores {
        pool,
        policy,
        limiter,
        background: Background {
            stop,
            tasks,
            reload,
        },
    })
}

/// The background tasks (ledger backfill, reloads, SIGHUP) and the one token that stops them;
/// dropping it stops them too, so an application that never ran leaves nothing behind.
pub(super) struct Background {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    reload: ReloadHandle,
}

impl Background {
    pub(super) fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Stops every task and waits for them, briefly: none of them holds anything that
    /// must be finished.
    pub(super) async fn shut_down(mut self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await;
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What `check-config` says about the stores, as startup would find them: the pool's
/// tickets, the ledger, and what Redis answers to every command the service uses. Redis
/// unreachable is a fact, not a failure (the service starts and serves while Redis is down);
/// a refused password or a missing permission is a misconfiguration, returned as an error.
pub async fn describe_stores(config: &Config) -> (Vec<String>, Option<String>) {
    let mut lines = Vec::new();
    lines.push(match &config.fallback.tickets_path {
        None => "fallback pool: disabled (0 tickets)".to_owned(),
        Some(path) => match crate::fallback::set::load(path) {
            Ok(loaded) if loaded.set.is_empty() => "fallback pool: empty (0 tickets)".to_owned(),
            Ok(loaded) => format!("fallback pool: loaded ({} tickets)", loaded.set.len()),
            Err(e) => format!("fallback pool: {} (0 tickets)", e.status().as_str()),
        },
    });
    lines.push(format!(
        "fallback ledger: {}",
        config.fallback.store.ledger.kind.as_str()
    ));
    let mut misconfigured = None;
    if let Some(redis) = &config.redis {
        let answer = match RedisClient::connect_lazy(redis) {
            Ok(client) => match client.check(redis.variables()).await {
                Ok(()) => "answered every command the service uses".to_owned(),
                Err(failure) => {
                    if failure.reason.is_misconfiguration() {
                        misconfigured = Some(failure.to_string());
                    }
                    format!("{} ({})", failure.reason.as_str(), failure)
                }
            },
            Err(e) => format!("cannot be used ({e})"),
        };
        lines.push(format!("redis: {} {answer}", redis.redacted_url()));
        if let Ok(client) = RedisClient::connect_lazy(redis) {
            match crate::fallback::ledger::redis_risks(&client).await {
                Some(risks) if risks.warnings().is_empty() => lines.push(
                    "redis: keeps consumed marks (maxmemory-policy noeviction, persistence on)"
                        .to_owned(),
                ),
                Some(risks) => lines.extend(
                    risks
                        .warnings()
                        .into_iter()
                        .map(|w| format!("warning: {w}")),
                ),
                None => lines.push(
                    "redis: INFO refused or unanswered: cannot tell whether it evicts or persists"
                        .to_owned(),
                ),
            }
        }
    }
    (lines, misconfigured)
}

/// At startup: a Redis that refuses the password or lacks a permission is a configuration
/// error (exit 2), not an outage to ride out claiming locally for ever. Anything else
/// (unreachable, slow, TLS) is logged and the service starts.
pub(super) async fn check_redis(config: &Config) -> Result<(), StartupError> {
    let Some(redis) = &config.redis else {
        return Ok(());
    };
    let Ok(client) = RedisClient::connect_lazy(redis) else {
        // `build` reports it, naming the variable.
        return Ok(());
    };
    match client.check(redis.variables()).await {
        Ok(()) => {
            if config.fallback.store.ledger.kind == crate::fallback::config::LedgerKind::Redis {
                let risks = crate::fallback::ledger::redis_risks(&client).await;
                for warning in risks.map(|r| r.warnings()).unwrap_or_default() {
                    tracing::warn!("{warning}");
                }
            }
            Ok(())
        }
        Err(failure) if failure.reason.is_misconfiguration() => {
            Err(ConfigErrors::from(ConfigError::new(failure.variable(), failure.message())).into())
        }
        Err(failure) => {
            tracing::warn!(reason = failure.reason.as_str(), "{failure}; starting anyway: Redis-backed decisions are made locally until it answers");
            Ok(())
        }
    }
}
