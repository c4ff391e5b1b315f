//! The one Redis client shared by the fallback ledger and the publish limiter.
//!
//! Built once at startup and connecting lazily, so the service starts and serves while Redis
//! is down. Every call is bounded by `REDIS_TIMEOUT_MS`: the caller decides what an
//! unanswered call means (the ledger claims locally or denies, the limiter decides locally).
//! The password (from the URL or `REDIS_PASSWORD_FILE`) never appears in `Debug`, `Display`
//! or a log line.
//!
//! A breaker (`breaker`) sits in front of every call: while Redis does not answer, calls fail
//! at once and one probe at a time asks Redis. A connection Redis dropped (a restart) is
//! retried once on a fresh one before the call counts as failed. Failures are classified
//! (`failure`) for the `realtime_redis_errors_total{reason}` metric and for `check-config`.

mod breaker;
mod check;
mod failure;
mod tls;

pub use self::breaker::PROBE_INTERVAL;
pub use self::check::Variables;
pub use self::failure::{Failure, RedisMetrics};
pub use self::tls::TlsFiles;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;

use self::breaker::Breaker;
use crate::config_error::{invalid, ConfigError};

/// `REDIS_KEY_PREFIX` default.
pub const DEFAULT_KEY_PREFIX: &str = "realtime:";
/// `REDIS_TIMEOUT_MS` default.
pub const DEFAULT_TIMEOUT_MS: u64 = 100;
/// A TCP connect plus a TLS handshake can take longer than one command; calls are still
/// bounded by the command timeout, the connection attempt just goes on in the background.
/// `check-config` and the startup check wait this long for each command, connecting included.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where Redis is and how to talk to it. `Debug` never shows the password.
#[derive(Clone)]
pub struct RedisConfig {
    /// `REDIS_URL`, `redis://` or `rediss://`, kept as given (it may carry a password).
    url: String,
    /// `REDIS_PASSWORD_FILE`: read at client construction, overrides a password in the URL.
    pub password_file: Option<PathBuf>,
    /// `REDIS_TLS_CA_PATH`, `REDIS_TLS_CERT_PATH`, `REDIS_TLS_KEY_PATH`.
    pub tls: TlsFiles,
    /// `REDIS_KEY_PREFIX`, default `realtime:`.
    pub key_prefix: String,
    /// `REDIS_TIMEOUT_MS`, default 100 ms: the bound on every call.
    pub timeout: Duration,
}

impl RedisConfig {
    /// Reads `REDIS_URL`, `REDIS_PASSWORD_FILE`, the `REDIS_TLS_*` files, `REDIS_KEY_PREFIX`
    /// and `REDIS_TIMEOUT_MS` through `get`; `Ok(None)` when `REDIS_URL` is unset or empty.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let url = get("REDIS_URL").unwrap_or_default();
        if url.trim().is_empty() {
            return Ok(None);
        }
        let url = parse_url(url.trim())?;
        let password_file = get("REDIS_PASSWORD_FILE")
            .filter(|p| !p.trim().is_empty())
            .map(|p| PathBuf::from(p.trim()));
        let tls = TlsFiles::from_lookup(get, url.starts_with("rediss://"))?;
        let key_prefix = get("REDIS_KEY_PREFIX").unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
        let timeout = match get("REDIS_TIMEOUT_MS") {
            Some(v) if !v.trim().is_empty() => parse_timeout_ms(&v)?,
            _ => Duration::from_millis(DEFAULT_TIMEOUT_MS),
        };
        Ok(Some(Self {
            url,
            password_file,
            tls,
            key_prefix,
            timeout,
        }))
    }

    /// Which of the optional variables are set: what a failed check names.
    pub fn variables(&self) -> Variables {
        Variables {
            password_file: self.password_file.is_some(),
            tls_ca: self.tls.ca.is_some(),
            tls_client: self.tls.cert.is_some(),
        }
    }

    /// The URL with any password replaced by `***`, for `check-config` and logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `REDIS_URL`: a `redis://` or `rediss://` URL the client accepts. The error never repeats
/// the value, which may hold a password.
pub fn parse_url(url: &str) -> Result<String, ConfigError> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(invalid(
            "REDIS_URL",
            "must start with redis:// or rediss://",
        ));
    }
    url.into_connection_info()
        .map_err(|_| invalid("REDIS_URL", "is not a valid Redis URL"))?;
    Ok(url.to_owned())
}

/// `REDIS_TIMEOUT_MS`: 1 ms to 10 s. Longer would hold a connect callback past Centrifugo's
/// own proxy timeout.
pub fn parse_timeout_ms(value: &str) -> Result<Duration, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(ms @ 1..=10_000) => Ok(Duration::from_millis(ms)),
        _ => Err(invalid(
            "REDIS_TIMEOUT_MS",
            "must be a whole number of milliseconds from 1 to 10000",
        )),
    }
}

fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    // Userinfo ends at the last '@' before the path: a password may itself contain '@'.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // `redis://secret@host` puts the password in the user slot for some clients.
                "***".to_owned()
            };
            format!("{scheme}://{shown}@{}", &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// Why a Redis call produced no answer. The caller maps it (local claim, deny, local limit).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The breaker is open: not asked at all, a probe is finding out when Redis is back.
    #[error("Redis is not answering (a probe asks it every {PROBE_INTERVAL:?})")]
    Down,
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

impl CallError {
    /// The `reason` of a call that reached (or tried to reach) Redis; `None` for `Down`.
    pub fn reason(&self) -> Option<Failure> {
        match self {
            Self::Timeout(_) => Some(Failure::Timeout),
            Self::Down => None,
            Self::Redis(e) => Some(Failure::of(e)),
        }
    }
}

/// Why the client could not be built (a startup error).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("REDIS_PASSWORD_FILE: cannot read: {0}")]
    PasswordFile(std::io::ErrorKind),
    #[error("REDIS_URL: is not a valid Redis URL")]
    Url,
    #[error("REDIS_URL: cannot create the client: {0}")]
    Client(String),
    #[error(transparent)]
    TlsFile(tls::TlsFileError),
    #[error("REDIS_TLS_CERT_PATH: the TLS files cannot be used: {0}")]
    Tls(String),
}

impl SetupError {
    /// The variable to fix, and what is wrong with it.
    pub fn to_config_error(&self) -> ConfigError {
        let text = self.to_string();
        match text.split_once(": ") {
            Some((var, message)) if var.starts_with("REDIS_") => ConfigError::new(var, message),
            _ => ConfigError::new("REDIS_URL", text),
        }
    }
}

/// A lazily connecting manager for `config`, with `tls` when the TLS files are set.
fn build_manager(
    config: &RedisConfig,
    tls: Option<&redis::TlsCertificates>,
) -> Result<ConnectionManager, SetupError> {
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|_| SetupError::Url)?;
    if let Some(path) = &config.password_file {
        let password =
            std::fs::read_to_string(path).map_err(|e| SetupError::PasswordFile(e.kind()))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_password(password.trim_end_matches(['\r', '\n']));
        info = info.set_redis_settings(settings);
    }
    // Nagle would hold each pipelined command until the previous reply's ACK arrives:
    // a round trip of Redis's time added to every claim made while another is in flight.
    info = info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = match tls {
        // The library's text names what is wrong with a file (a bad PEM), never its content.
        Some(certificates) => redis::Client::build_with_tls(info, certificates.clone())
            .map_err(|e| SetupError::Tls(e.to_string()))?,
        None => {
            redis::Client::open(info).map_err(|e| SetupError::Client(format!("{:?}", e.kind())))?
        }
    };
    // Few, short retries: a call waits at most `timeout` anyway, and the next call after a
    // failed connection starts a fresh attempt.
    let manager_config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200))
        .set_connection_timeout(Some(CONNECT_TIMEOUT.max(config.timeout)))
        .set_response_timeout(Some(config.timeout));
    client
        .get_connection_manager_lazy(manager_config)
        .map_err(|e| SetupError::Client(format!("{:?}", e.kind())))
}

/// Cheap-to-clone handle: one multiplexed, self-reconnecting connection for the process.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced when the TLS files change; cloned (cheaply) for each call.
    manager: std::sync::RwLock<ConnectionManager>,
    /// What a new connection manager is built from.
    config: RedisConfig,
    /// The digest of the TLS files the manager uses.
    tls_digest: std::sync::Mutex<Option<[u8; 32]>>,
    prefix: String,
    timeout: Duration,
    /// Whether the last call got an answer; false until the first one does.
    reachable: AtomicBool,
    breaker: Breaker,
    metrics: RedisMetrics,
}

impl RedisClient {
    /// Builds the client without connecting: the first call connects.
    pub fn connect_lazy(config: &RedisConfig) -> Result<Self, SetupError> {
        let tls = match config.tls.is_set() {
            true => Some(config.tls.read().map_err(SetupError::TlsFile)?),
            false => None,
        };
        let manager = build_manager(config, tls.as_ref().map(|t| &t.certificates))?;
        Ok(Self {
            inner: Arc::new(Inner {
                manager: std::sync::RwLock::new(manager),
                config: config.clone(),
                tls_digest: std::sync::Mutex::new(tls.map(|t| t.digest)),
                prefix: config.key_prefix.clone(),
                timeout: config.timeout,
                reachable: AtomicBool::new(false),
                breaker: Breaker::default(),
                metrics: RedisMetrics::default(),
            }),
        })
    }

    fn manager(&self) -> ConnectionManager {
        self.inner
            .manager
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the TLS files again; when their content changed, later calls use a new
    /// connection built with them. `Ok(true)` when it changed.
    pub fn reload_tls(&self) -> Result<bool, SetupError> {
        let inner = &self.inner;
        if !inner.config.tls.is_set() {
            return Ok(false);
        }
        let material = inner.config.tls.read().map_err(SetupError::TlsFile)?;
        let mut digest = inner
            .tls_digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *digest == Some(material.digest) {
            return Ok(false);
        }
        let manager = build_manager(&inner.config, Some(&material.certificates))?;
        *inner
            .manager
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = manager;
        *digest = Some(material.digest);
        Ok(true)
    }

    /// Polls the TLS files until `stop` (see `tls`); `None` without TLS files.
    pub fn spawn_tls_watch(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !self.inner.config.tls.is_set() {
            return None;
        }
        let client = self.clone();
        Some(tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(tls::POLL_INTERVAL) => {}
                }
                match client.reload_tls() {
                    Ok(changed) => {
                        if changed {
                            tracing::info!("the Redis TLS files changed: new connections use them");
                        }
                        failing = false;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot use the Redis TLS files; keeping the ones last applied");
                        }
                        failing = true;
                    }
                }
            }
        }))
    }

    /// The client's metrics, for the application to register once.
    pub fn metrics(&self) -> &RedisMetrics {
        &self.inner.metrics
    }

    /// `prefix` + `suffix`: every key this service writes.
    pub fn key(&self, suffix: &str) -> String {
        self.key_of(&[suffix])
    }

    /// `prefix` + every part, in one allocation.
    pub fn key_of(&self, parts: &[&str]) -> String {
        let len = self.inner.prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut key = String::with_capacity(len);
        key.push_str(&self.inner.prefix);
        for part in parts {
            key.push_str(part);
        }
        key
    }

    /// Whether the last call got an answer from Redis.
    pub fn reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::Relaxed)
    }

    /// Whether calls go to Redis (the breaker is closed).
    pub fn available(&self) -> bool {
        self.inner.breaker.is_closed()
    }

    /// Returns once calls go to Redis again (at once while they do).
    pub async fn until_available(&self) {
        self.inner.breaker.closed().await;
    }

    /// Runs one call on the shared connection, bounded by `REDIS_TIMEOUT_MS`; fails at once
    /// while the breaker is open. `f` may run twice: a connection found dropped is retried
    /// once on the fresh one the manager opens.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, CallError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.inner.breaker.is_closed() {
            self.inner.metrics.fast_failures.inc();
            self.inner.reachable.store(false, Ordering::Relaxed);
            return Err(CallError::Down);
        }
        let result = self.attempt(&f).await;
        match &result {
            Ok(_) => self.answered(),
            Err(e) => self.failed(e),
        }
        result
    }

    /// Like `call`, but asked even while the breaker is open: for the few calls that must
    /// reach Redis as soon as it can (the release of a refused claim, sent right behind it).
    pub async fn call_through<T, F, Fut>(&self, f: F) -> Result<T, CallError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let result = self.attempt(&f).await;
        match &result {
            Ok(_) => self.answered(),
            Err(e) if self.inner.breaker.is_closed() => self.failed(e),
            Err(e) => {
                if let Some(reason) = e.reason() {
                    self.inner.metrics.failed(reason);
                }
            }
        }
        result
    }

    /// Like `call`, for a command the service can do without (`INFO`, `CONFIG GET`): Redis
    /// refusing it (an ACL, a managed service that renames `CONFIG`) is an answer, not a
    /// failure, so it neither opens the breaker nor counts in `realtime_redis_errors_total`.
    pub async fn call_optional<T, F, Fut>(&self, f: F) -> Result<T, CallError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.inner.breaker.is_closed() {
            return Err(CallError::Down);
        }
        let result = self.attempt(&f).await;
        match &result {
            Ok(_) => self.answered(),
            Err(e) if matches!(e.reason(), Some(Failure::Permission | Failure::Server)) => {}
            Err(e) => self.failed(e),
        }
        result
    }

    /// One call, and one retry when the connection turns out to have been dropped, both
    /// within one `REDIS_TIMEOUT_MS`.
    async fn attempt<T, F, Fut>(&self, f: &F) -> Result<T, CallError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.attempt_within(f, self.inner.timeout).await
    }

    /// `attempt` bounded by `timeout` instead of `REDIS_TIMEOUT_MS`.
    async fn attempt_within<T, F, Fut>(&self, f: &F, timeout: Duration) -> Result<T, CallError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let once = || tokio::time::timeout_at(deadline, f(self.manager()));
        match once().await {
            Ok(Ok(value)) => Ok(value),
            // A restarted Redis closed the connection since the last call: the manager has
            // started a fresh one, which this retry waits for.
            Ok(Err(e)) if e.is_connection_dropped() => match once().await {
                Ok(answer) => answer.map_err(CallError::Redis),
                Err(_) => Err(CallError::Timeout(timeout)),
            },
            Ok(Err(e)) => Err(CallError::Redis(e)),
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    /// "Reachable" means usable: a server error (NOAUTH, OOM, READONLY) fails every call
    /// just as surely as a closed port.
    fn failed(&self, e: &CallError) {
        let inner = &self.inner;
        inner.reachable.store(false, Ordering::Relaxed);
        inner.metrics.available.set(0);
        let reason = e.reason().unwrap_or(Failure::Unreachable);
        inner.metrics.failed(reason);
        let opened = inner.breaker.open(Instant::now());
        if let Some(held_back) = opened.warn {
            tracing::warn!(
                reason = reason.as_str(),
                error = %e,
                flaps_not_logged = held_back,
                "Redis does not answer: fallback claims follow FALLBACK_LEDGER_UNAVAILABLE and publishes are limited per replica until it does"
            );
        } else if opened.now {
            tracing::debug!(reason = reason.as_str(), error = %e, "Redis stopped answering again");
        }
        if opened.start_probe {
            spawn_probe(Arc::downgrade(inner));
        }
    }

    fn answered(&self) {
        let inner = &self.inner;
        inner.reachable.store(true, Ordering::Relaxed);
        inner.metrics.available.set(1);
        if inner.breaker.close() {
            tracing::info!("Redis answers again: claims and publish limits go to Redis");
        }
    }

    /// `PING`: refreshes `reachable`.
    pub async fn ping(&self) -> Result<(), CallError> {
        self.call(ping).await
    }
}

async fn ping(mut c: ConnectionManager) -> redis::RedisResult<()> {
    redis::cmd("PING").query_async::<()>(&mut c).await
}

/// The one probe while the breaker is open: a `PING` every `PROBE_INTERVAL` until Redis
/// answers (which closes the breaker) or the client is dropped.
fn spawn_probe(client: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            let Some(inner) = client.upgrade() else {
                return;
            };
            let client = RedisClient { inner };
            match client.attempt(&ping).await {
                Ok(()) => {
                    // Done before closing: a failure right after the close then starts a
                    // new probe rather than finding this one still marked running.
                    client.inner.breaker.probe_done();
                    client.answered();
                    return;
                }
                // Not counted: the failure that opened the breaker was, and the probe's are
                // one per interval whatever the traffic.
                Err(e) => tracing::debug!(error = %e, "Redis probe: no answer yet"),
            }
        }
    });
}

/// Test helpers: a Redis of the test's own, and unique key prefixes.
#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tls_tests;

#[cfg(test)]
mod tests;
