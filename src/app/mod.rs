//! Startup and shutdown: turns the configuration into services and bound listeners (an
//! `Application`), and runs it until a shutdown signal, draining the way Kubernetes expects.
//!
//! Tests and `main` start the service the same way: `Application::build`, then
//! `run_until(shutdown)`. Port 0 gives tests a free port, read back with `port()`.

mod run;
mod stores;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

pub use run::{shutdown_signal, Shutdown};
pub use stores::describe_stores;

use crate::clock::Clock;
use crate::config::{Config, ConfigError, ConfigErrors, ProxyAuthMode, Settings};
use crate::fallback::reload::ReloadHandle;
use crate::identity::{probe, Gateway, IdentityClient, OutageDetector};
use crate::metrics::Metrics;
use crate::policy::{ChannelPolicy, PolicyError};
use crate::rpc::RpcClient;
use crate::service::{self, ProxyService};
use crate::transport::grpc::{self, GrpcLimits, GrpcProxy, GrpcServer, Shards};
use crate::transport::http::limits::{self, InflightLimit};
use crate::transport::http::serve::{ServeLimits, ServeMetrics};
use crate::transport::http::{auth::ProxyAuth, AppState, HttpState, Readiness};
use crate::transport::secret_files;

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
    serve_limits: ServeLimits,
    serve_metrics: ServeMetrics,
    drain_delay: Duration,
    _probe: probe::ProbeGuard,
    background: stores::Background,
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
        for warning in config.warnings() {
            tracing::warn!("configuration: {warning}");
        }
        let listeners = 1 + usize::from(config.listen.metrics.is_some());
        open_file_limit(
            config.http.max_connections * listeners,
            config.edge.max_inflight,
        );
        let metrics = Metrics::new();
        let inflight = InflightLimit::new(config.edge.max_inflight, metrics.registry());
        let serve_metrics = ServeMetrics::new(metrics.registry());
        stores::check_redis(&config).await?;
        let stores::Stores {
            pool,
            policy,
            limiter,
            background,
        } = stores::build(&config, &metrics, &clock)?;
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
        let rpc = RpcClient::new(
            config.rpc.routes.clone(),
            config.rpc.deadline,
            &config.rpc.tls,
        )
        .map_err(|e| {
            let var = match config.rpc.tls.ca_pem {
                Some(_) => "RPC_TLS_CA_PATH",
                None => "RPC_ROUTES",
            };
            ConfigErrors::from(ConfigError::new(
                var,
                format!("cannot build the HTTP client: {e}"),
            ))
        })?;

        let service = ProxyService::new(service::Parts {
            identity,
            pool,
            connect: config.connect.clone(),
            policy,
            limiter,
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
        let serve_limits = ServeLimits {
            header_read_timeout: config.http.header_read_timeout,
            idle_timeout: config.http.idle_timeout,
            max_connections: config.http.max_connections,
            shutdown_timeout: config.shutdown_timeout,
            max_header_bytes: config.http.max_header_bytes,
        };
        let grpc = match config.listen.grpc {
            Some(addr) => {
                let tls = match &config.listen.grpc_tls {
                    Some(tls) => Some(grpc::TlsFiles::load(tls).map_err(ConfigErrors::from)?),
                    None => None,
                };
                let limits = GrpcLimits {
                    serve: serve_limits,
                    message_timeout: config.edge.body_read_timeout,
                    max_message_bytes: config.edge.max_body_bytes,
                    max_age: config.listen.grpc_max_age,
                    max_age_grace: config.listen.grpc_max_age_grace,
                };
                let (service, auth, inflight) = (service.clone(), auth.clone(), inflight.clone());
                let warnings = std::sync::Arc::new(grpc::Warnings::default());
                let (identity_config, identity_metrics) =
                    (config.identity.clone(), metrics.clone());
                let shards = Shards::start(grpc_shard_count(), move || {
                    // Built once already above with the same configuration.
                    let client = IdentityClient::new(&identity_config, identity_metrics.clone())
                        .map_err(|e| format!("identity client: {e}"))?;
                    Ok(GrpcProxy::new(
                        service.with_identity_client(client),
                        auth.clone(),
                        inflight.clone(),
                        warnings.clone(),
                    ))
                })
                .map_err(|e| ConfigErrors::from(ConfigError::new("GRPC_PROXY_LISTEN_PORT", e)))?;
                Some(GrpcServer::new(
                    bind(addr).await?,
                    shards,
                    tls,
                    limits,
                    serve_metrics.grpc_evictions(),
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
            inflight,
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
            serve_limits,
            serve_metrics,
            drain_delay: config.drain_delay,
            _probe: probe,
            background,
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

    /// Reloads the fallback tickets and the channel policy now, as SIGHUP does, and waits
    /// for the round to finish.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.background.reload_handle()
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

/// Raises the soft open-file limit to the hard one, and warns when the connection caps do not
/// fit under it: running out of descriptors would silently refuse every connection,
/// health checks included.
fn open_file_limit(connections: usize, max_inflight: usize) {
    match limits::raise_open_file_limit() {
        Ok(limit) => {
            tracing::debug!(before = ?limit.before, after = ?limit.after, "open-file limit");
            if !limits::connections_fit(connections, max_inflight, limit.after) {
                tracing::warn!(
                    open_files = ?limit.after,
                    connections,
                    most = ?limits::max_connections_within(limit.after, max_inflight),
                    "HTTP_MAX_CONNECTIONS does not fit under the open-file limit; lower it to at most `most` per listener total"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

/// One gRPC shard per core the process may use (what the main runtime sizes itself by).
fn grpc_shard_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
