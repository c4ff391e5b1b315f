//! Startup and shutdown: turns validated `Settings` into a bound, ready `Application`, and
//! runs it until a shutdown signal, draining the way Kubernetes expects.
//!
//! Tests and `main` start the service the same way: `Application::build`, then
//! `run_until(shutdown)`. Port 0 gives tests a free port, read back with `port()`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::connect::ConnectConfig;
use crate::fallback::ledger::{Ledger, MemoryLedger};
use crate::fallback::metrics::FallbackMetrics;
use crate::fallback::TicketPool;
use crate::http::{self, auth::ProxyAuth};
use crate::identity::{probe, Gateway, IdentityClient, OutageDetector};
use crate::metrics::Metrics;
use crate::policy::{ChannelPolicy, PolicyError};
use crate::ratelimit::{Limiter, PublishLimiter};
use crate::rpc::{Routes, RpcClient};
use crate::settings::{ConfigError, ProxyAuthMode, Settings};
use crate::state::{AppState, Readiness, Shared};

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGTERM: readiness 503 at once, keep serving for `SHUTDOWN_DRAIN_DELAY_MS` so
    /// endpoints can be updated, then stop accepting and finish in-flight requests.
    Drain,
    /// SIGINT (an interactive Ctrl-C): the same without the delay.
    Immediate,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("CHANNEL_POLICY_PATH: {0}")]
    Policy(#[from] PolicyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    drain_delay: Duration,
    _probe: probe::ProbeGuard,
}

impl Application {
    /// Builds with the real clock.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// Builds with an injected clock (tests move a manual one).
    pub async fn build_with_clock(settings: &Settings, clock: Clock) -> Result<Self, StartupError> {
        settings.validate()?;
        if settings.centrifugo_proxy_auth == ProxyAuthMode::None {
            tracing::warn!(
                "CENTRIFUGO_PROXY_AUTH=none: proxy calls are NOT authenticated; anyone who can reach this port can mint connections. Never run this in production."
            );
        }
        let metrics = Metrics::new();
        // Until the integration wires the configured ledger and the service registry in.
        let pool = TicketPool::new(
            settings.fallback_tickets_path(),
            settings.fallback_low_watermark,
            Ledger::Memory(MemoryLedger::default()),
            FallbackMetrics::new(&prometheus::Registry::new()),
            clock.clone(),
        );
        metrics.set_pool_status(pool.status().as_str());
        metrics
            .pool_low_watermark
            .set(i64::try_from(settings.fallback_low_watermark).unwrap_or(i64::MAX));

        let detector = OutageDetector::new(settings.degraded_window(), clock.clone());
        let identity = Gateway::new(IdentityClient::new(settings, metrics.clone())?, detector);
        let probe = probe::spawn(identity.clone(), settings.probe_interval());

        let state = AppState::new(Shared {
            auth: ProxyAuth::from_settings(settings),
            max_body_bytes: settings.proxy_max_body_bytes,
            status_mode: settings.proxy_http_status_mode,
            identity,
            pool,
            connect: ConnectConfig {
                info_fields: settings.info_fields()?,
                fallback_ttl: settings.fallback_ttl(),
                refresh_ttl: settings.refresh_ttl(),
            },
            policy: load_policy(settings)?,
            limiter: Limiter::Local(PublishLimiter::new(
                settings.publish_rate_per_second,
                settings.publish_burst,
                clock.clone(),
            )),
            rpc: RpcClient::new(
                Routes::parse(&settings.rpc_routes)?,
                settings.rpc_deadline(),
            )?,
            metrics,
            clock,
            readiness: Readiness::ready(),
        });
        state.refresh_gauges();

        let listener = bind(settings.listen_addr()?).await?;
        let metrics_listener = match settings.metrics_addr()? {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            state,
            drain_delay: settings.drain_delay(),
            _probe: probe,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = Shutdown> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            metrics_listener,
            state,
            drain_delay,
            _probe,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let readiness = state.readiness.clone();
        let sequence = async move {
            let kind = shutdown.await;
            readiness.begin_shutdown();
            if kind == Shutdown::Drain && !drain_delay.is_zero() {
                tracing::info!(
                    drain_ms = u64::try_from(drain_delay.as_millis()).unwrap_or(u64::MAX),
                    "shutdown: readiness is 503; still serving while endpoints update"
                );
                tokio::time::sleep(drain_delay).await;
            }
            tracing::info!("shutdown: no new connections; finishing in-flight requests");
            let _ = stop_tx.send(true);
        };
        tokio::spawn(sequence);

        let metrics_server = metrics_listener.map(|listener| {
            let router = http::metrics_router(state.clone());
            let stop = stopped(stop_rx.clone());
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await
            })
        });
        let with_metrics = metrics_server.is_none();
        tracing::info!(
            addr = %listener.local_addr()?,
            auth = state.auth.mode().as_str(),
            pool_status = state.pool.status().as_str(),
            pool_size = state.pool.size(),
            "realtime-service listening"
        );
        axum::serve(listener, http::router(state, with_metrics))
            .with_graceful_shutdown(stopped(stop_rx))
            .await?;
        if let Some(server) = metrics_server {
            server.await.map_err(std::io::Error::other)??;
        }
        tracing::info!("shutdown: all requests finished");
        Ok(())
    }
}

/// The channel policy from `CHANNEL_POLICY_PATH`, or the built-in default.
pub fn load_policy(settings: &Settings) -> Result<ChannelPolicy, PolicyError> {
    match settings.channel_policy_path() {
        Some(path) => {
            let policy = ChannelPolicy::load(&path)?;
            tracing::info!(path = %path.display(), namespaces = policy.namespaces().count(), "channel policy loaded");
            Ok(policy)
        }
        None => Ok(ChannelPolicy::builtin()),
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// SIGTERM drains; SIGINT stops at once.
pub async fn shutdown_signal() -> Shutdown {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C can stop us; wait for that instead.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = terminate => Shutdown::Drain,
        _ = tokio::signal::ctrl_c() => Shutdown::Immediate,
    }
}
