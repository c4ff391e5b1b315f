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
use crate::fallback::ledger::Ledger;
use crate::fallback::metrics::FallbackMetrics;
use crate::fallback::reload::{self, ReloadHandle, ReloadResult, ReloadTarget};
use crate::fallback::TicketPool;
use crate::identity::{probe, Gateway, IdentityClient, OutageDetector};
use crate::metrics::Metrics;
use crate::policy::live::LivePolicy;
use crate::policy::{ChannelPolicy, PolicyError};
use crate::ratelimit::PublishLimiter;
use crate::ratelimit::{Limiter, LimiterMetrics, SharedLimiter};
use crate::redis_client::RedisClient;
use crate::rpc::RpcClient;
use crate::service::{self, ProxyService};
use crate::transport::grpc::{self, GrpcProxy, GrpcServer};
use crate::transport::http::limits::{self, InflightLimit};
use crate::transport::http::serve::{serve, ServeLimits, ServeMetrics};
use crate::transport::http::{self, auth::ProxyAuth, AppState, HttpState, Readiness};
use crate::transport::secret_files;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

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
    serve_limits: ServeLimits,
    serve_metrics: ServeMetrics,
    drain_delay: Duration,
    _probe: probe::ProbeGuard,
    background: Background,
    /// Re-reads the proxy secret files; `None` when the secrets come from variables.
    _secret_watcher: Option<secret_files::SecretWatcher>,
}

/// The background tasks (ledger backfill, reloads, SIGHUP) and the one token that stops them;
/// dropping it stops them too, so an application that never ran leaves nothing behind.
struct Background {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    reload: ReloadHandle,
}

impl Background {
    /// Stops every task and waits for them, briefly: none of them holds anything that
    /// must be finished.
    async fn shut_down(mut self) {
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
        // Background work (ledger backfill, reloads, SIGHUP) stops through this one token.
        let stop = CancellationToken::new();
        let redis =
            match &config.redis {
                Some(redis) => Some(RedisClient::connect_lazy(redis).map_err(|e| {
                    ConfigErrors::from(ConfigError::new("REDIS_URL", e.to_string()))
                })?),
                None => None,
            };
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
        let limiter = match redis {
            Some(client) => Limiter::Shared(SharedLimiter::new(
                client,
                config.publish.rate_per_second,
                config.publish.burst,
                local_limiter,
                LimiterMetrics::new(metrics.registry()),
            )),
            None => Limiter::Local(local_limiter),
        };
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
        let grpc = match config.listen.grpc {
            Some(addr) => {
                let tls = match &config.listen.grpc_tls {
                    Some(tls) => Some(grpc::tls_config(tls).map_err(ConfigErrors::from)?),
                    None => None,
                };
                let proxy = GrpcProxy::new(
                    service.clone(),
                    auth.clone(),
                    config.edge.max_body_bytes,
                    inflight.clone(),
                );
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
            serve_limits: ServeLimits {
                header_read_timeout: config.http.header_read_timeout,
                idle_timeout: config.http.idle_timeout,
                max_connections: config.http.max_connections,
                shutdown_timeout: config.shutdown_timeout,
                max_header_bytes: config.http.max_header_bytes,
            },
            serve_metrics,
            drain_delay: config.drain_delay,
            _probe: probe,
            background: Background {
                stop,
                tasks,
                reload,
            },
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
        self.background.reload.clone()
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
            serve_limits,
            serve_metrics,
            drain_delay,
            _probe,
            background,
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
            tokio::spawn(serve(
                listener,
                router,
                serve_limits,
                serve_metrics.clone(),
                stop,
            ))
        });
        let grpc_server = grpc.map(|server| {
            if let Ok(addr) = server.local_addr() {
                tracing::info!(%addr, "gRPC proxy listening");
            }
            let stop = stopped(stop_rx.clone());
            let task = tokio::spawn(server.run(stop));
            tokio::spawn(bounded_grpc_shutdown(
                task,
                stop_rx.clone(),
                serve_limits.shutdown_timeout,
            ))
        });
        let with_metrics = metrics_server.is_none();
        tracing::info!(
            addr = %listener.local_addr()?,
            auth = state.auth.mode().as_str(),
            pool_status = state.service.pool().status().as_str(),
            pool_size = state.service.pool().size(),
            "realtime-service listening"
        );
        let mut cut = serve(
            listener,
            http::router(state, with_metrics),
            serve_limits,
            serve_metrics,
            stopped(stop_rx),
        )
        .await;
        if let Some(server) = metrics_server {
            cut += server.await.map_err(std::io::Error::other)?;
        }
        if let Some(server) = grpc_server {
            server.await.map_err(std::io::Error::other)??;
        }
        background.shut_down().await;
        if cut > 0 {
            tracing::warn!(
                cut,
                "shutdown: {cut} connections were still busy after SHUTDOWN_TIMEOUT_MS and were cut"
            );
        } else {
            tracing::info!("shutdown: all requests finished");
        }
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

/// Waits for the gRPC server to finish its in-flight calls, at most `timeout` after the stop
/// signal; then cuts it (tonic would otherwise wait for a stalled call forever).
async fn bounded_grpc_shutdown(
    mut task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    stop: watch::Receiver<bool>,
    timeout: Duration,
) -> std::io::Result<()> {
    let deadline = async {
        stopped(stop).await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        result = &mut task => result.map_err(std::io::Error::other)?.map_err(std::io::Error::other),
        () = deadline => {
            task.abort();
            tracing::warn!("shutdown: gRPC calls were still in flight after SHUTDOWN_TIMEOUT_MS and were cut");
            Ok(())
        }
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

/// What `check-config` says about the stores, as startup would find them: the pool's
/// tickets, the ledger, and whether Redis answers (a fact, never a failure: the service
/// starts and serves while Redis is down).
pub async fn describe_stores(config: &Config) -> Vec<String> {
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
    if let Some(redis) = &config.redis {
        let answer = match RedisClient::connect_lazy(redis) {
            Ok(client) => match client.ping().await {
                Ok(()) => "answered PING".to_owned(),
                Err(e) => format!("did not answer ({e})"),
            },
            Err(e) => format!("cannot be used ({e})"),
        };
        lines.push(format!("redis: {} {answer}", redis.redacted_url()));
    }
    lines
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
