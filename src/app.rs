//! Startup and shutdown: turns the configuration into services and bound listeners (an
//! `Application`), and runs it until a shutdown signal, draining the way Kubernetes expects.
//!
//! Tests and `main` start the service the same way: `Application::build`, then
//! `run_until(shutdown)`. Port 0 gives tests a free port, read back with `port()`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{Config, ConfigError, ConfigErrors, ProxyAuthMode, Settings};
use crate::fallback::TicketPool;
use crate::identity::{probe, Gateway, IdentityClient, OutageDetector};
use crate::metrics::Metrics;
use crate::policy::{ChannelPolicy, PolicyError};
use crate::ratelimit::PublishLimiter;
use crate::rpc::RpcClient;
use crate::service::{self, ProxyService};
use crate::transport::grpc::{self, GrpcProxy, GrpcServer};
use crate::transport::http::{self, auth::ProxyAuth, AppState, HttpState, Readiness};
use crate::transport::secret_files;

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
    Config(#[from] ConfigErrors),
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
    grpc: Option<GrpcServer>,
    state: AppState,
    drain_delay: Duration,
    _probe: probe::ProbeGuard,
    /// Re-reads the proxy secret files; `None` when the secrets come from variables.
    _secret_watcher: Option<secret_files::SecretWatcher>,
}

impl Application {
    /// Builds with the real clock.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// Builds with an injected clock (tests move a manual one).
    pub async fn build_with_clock(settings: &Settings, clock: Clock) -> Result<Self, StartupError> {
        Self::from_config(Config::from_settings(settings)?, clock).await
    }

    /// Builds from a checked configuration: services first, then the listeners.
    pub async fn from_config(config: Config, clock: Clock) -> Result<Self, StartupError> {
        crate::tls::install_crypto_provider();
        if config.auth.mode == ProxyAuthMode::None {
            tracing::warn!(
                "CENTRIFUGO_PROXY_AUTH=none: proxy calls are NOT authenticated; anyone who can reach this port can mint connections. Never run this in production."
            );
        }
        let metrics = Metrics::new();
        let pool = TicketPool::load(
            config.fallback.tickets_path.as_deref(),
            config.fallback.low_watermark,
        );
        metrics.set_pool_status(pool.status());
        metrics
            .pool_low_watermark
            .set(i64::try_from(config.fallback.low_watermark).unwrap_or(i64::MAX));

        let detector = OutageDetector::new(config.fallback.window, clock.clone());
        let client = IdentityClient::new(&config.identity, metrics.clone()).map_err(|e| {
            // The files were read and parsed as PEM already; what is left is a key that does
            // not fit its certificate, or a CA that rustls cannot use.
            let var = match config.identity.tls.as_ref().map(|t| t.client.is_some()) {
                Some(true) => "IDENTITY_VALIDATE_TLS_CERT_PATH",
                _ => "IDENTITY_VALIDATE_NEGOTIATION_TYPE",
            };
            ConfigErrors::from(ConfigError::new(var, format!("cannot set up TLS: {e}")))
        })?;
        let identity = Gateway::new(client, detector);
        let probe = probe::spawn(identity.clone(), config.identity.probe_interval);
        let rpc = RpcClient::new(config.rpc.routes.clone(), config.rpc.deadline).map_err(|e| {
            ConfigErrors::from(ConfigError::new(
                "RPC_ROUTES",
                format!("cannot build the HTTP client: {e}"),
            ))
        })?;

        let service = ProxyService::new(service::Parts {
            identity,
            pool,
            connect: config.connect.clone(),
            policy: load_policy(config.policy_path.as_deref())?,
            limiter: PublishLimiter::new(
                config.publish.rate_per_second,
                config.publish.burst,
                clock.clone(),
            ),
            rpc,
            clock,
            metrics: metrics.clone(),
        });
        service.refresh_gauges();
        // One check, one set of secrets: the gRPC listener, the HTTP edge and the file
        // watcher share it, so a rotation reaches both transports at once.
        let auth = ProxyAuth::new(&config.auth);
        let secret_watcher = config.auth.files.clone().map(|files| {
            tracing::info!(
                path = %files.current.display(),
                every_ms = u64::try_from(secret_files::POLL_INTERVAL.as_millis()).unwrap_or(u64::MAX),
                "proxy secrets come from files and are re-read while running"
            );
            secret_files::spawn(
                config.auth.mode,
                files,
                &config.auth.secrets,
                auth.secrets().clone(),
                metrics.clone(),
            )
        });
        let grpc = match config.listen.grpc {
            Some(addr) => {
                let tls = match &config.listen.grpc_tls {
                    Some(tls) => Some(grpc::tls_config(tls).map_err(ConfigErrors::from)?),
                    None => None,
                };
                let proxy =
                    GrpcProxy::new(service.clone(), auth.clone(), config.edge.max_body_bytes);
                Some(GrpcServer::new(
                    bind(addr).await?,
                    proxy,
                    tls,
                    config.edge.max_body_bytes,
                ))
            }
            None => None,
        };
        let state = AppState::new(HttpState {
            service,
            auth,
            edge: config.edge,
            metrics,
            readiness: Readiness::ready(),
        });

        let listener = bind(config.listen.http).await?;
        let metrics_listener = match config.listen.metrics {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            metrics_listener,
            grpc,
            state,
            drain_delay: config.drain_delay,
            _probe: probe,
            _secret_watcher: secret_watcher,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// The gRPC proxy listener's port, when one is configured.
    pub fn grpc_port(&self) -> Option<u16> {
        self.grpc
            .as_ref()
            .and_then(|g| g.local_addr().ok())
            .map(|a| a.port())
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
            grpc,
            state,
            drain_delay,
            _probe,
            _secret_watcher,
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
        let grpc_server = grpc.map(|server| {
            if let Ok(addr) = server.local_addr() {
                tracing::info!(%addr, "gRPC proxy listening");
            }
            let stop = stopped(stop_rx.clone());
            tokio::spawn(server.run(stop))
        });
        let with_metrics = metrics_server.is_none();
        tracing::info!(
            addr = %listener.local_addr()?,
            auth = state.auth.mode().as_str(),
            pool_status = state.service.pool().status().as_str(),
            pool_size = state.service.pool().len(),
            "realtime-service listening"
        );
        axum::serve(listener, http::router(state, with_metrics))
            .with_graceful_shutdown(stopped(stop_rx))
            .await?;
        if let Some(server) = metrics_server {
            server.await.map_err(std::io::Error::other)??;
        }
        if let Some(server) = grpc_server {
            server
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
        }
        tracing::info!("shutdown: all requests finished");
        Ok(())
    }
}

/// The channel policy from `CHANNEL_POLICY_PATH`, or the built-in default.
pub fn load_policy(path: Option<&std::path::Path>) -> Result<ChannelPolicy, PolicyError> {
    match path {
        Some(path) => {
            let policy = ChannelPolicy::load(path)?;
            tracing::info!(path = %path.display(), namespaces = policy.namespaces().count(), "channel policy loaded");
            Ok(policy)
        }
        None => Ok(ChannelPolicy::builtin()),
    }
}

/// The pool as startup would load it, for `check-config`: `status (N tickets)`.
pub fn pool_status(config: &Config) -> String {
    let pool = TicketPool::load(
        config.fallback.tickets_path.as_deref(),
        config.fallback.low_watermark,
    );
    format!("{} ({} tickets)", pool.status().as_str(), pool.len())
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
