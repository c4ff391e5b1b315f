//! Configuration: one typed `Settings`, read from the environment once at startup, validated
//! once, and turned into ready objects (durations, URIs) so that nothing else reads raw
//! variables.
//!
//! Every field is an environment variable of the same name in upper case (envy's mapping).
//! Errors name the variable, because the person reading them is an operator looking at a
//! Deployment manifest, not at this code.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::meta::ConnectionMeta;

/// A secret string: never printed, not even by `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How Centrifugo's calls are authenticated (`CENTRIFUGO_PROXY_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ProxyAuthMode {
    /// `X-Centrifugo-Proxy-Signature`: hex HMAC-SHA256 of the raw body (added by a signer in front).
    Hmac,
    /// `X-Centrifugo-Proxy-Secret`: the shared secret itself, as stock Centrifugo's
    /// `http.static_headers` can send it.
    StaticHeader,
    /// No check at all. Only for local development; logged loudly.
    None,
}

impl ProxyAuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hmac => "hmac",
            Self::StaticHeader => "static_header",
            Self::None => "none",
        }
    }
}

/// `PROXY_HTTP_STATUS_MODE`: Centrifugo reads bodies of 200 answers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum StatusMode {
    /// Failures answer 401/503/400/413/500; Centrifugo maps them with `status_to_code_transforms`.
    Mapped,
    /// Every answer is 200 with the same body, so Centrifugo acts on the body itself.
    Always200,
}

/// `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    Text,
    Json,
}

/// `IDENTITY_VALIDATE_NEGOTIATION_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Negotiation {
    Plaintext,
    Tls,
}

/// Each enum variable parses from its documented spelling, with an error naming the variable
/// (envy's own message for an unknown variant does not say which variable it came from).
macro_rules! env_enum {
    ($ty:ident, $var:literal, { $($text:literal => $variant:ident),+ $(,)? }) => {
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                match value.trim() {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        concat!($var, ": unknown value {:?}; expected one of: ", $($text, " "),+),
                        other
                    )),
                }
            }
        }
    };
}

env_enum!(ProxyAuthMode, "CENTRIFUGO_PROXY_AUTH", { "hmac" => Hmac, "static_header" => StaticHeader, "none" => None });
env_enum!(StatusMode, "PROXY_HTTP_STATUS_MODE", { "mapped" => Mapped, "always_200" => Always200 });
env_enum!(LogFormat, "LOG_FORMAT", { "text" => Text, "json" => Json });
env_enum!(Negotiation, "IDENTITY_VALIDATE_NEGOTIATION_TYPE", { "plaintext" => Plaintext, "tls" => Tls });

/// The raw environment, as envy reads it. Field docs: variable, default, unit.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `LOG_LEVEL`: an `EnvFilter` directive, default `info`.
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    /// `LOG_FORMAT`: `text` (default) | `json` (one object per line, for log shippers).
    #[serde(default = "defaults::log_format")]
    pub log_format: LogFormat,
    /// `LISTEN_HOST`, default `0.0.0.0`.
    #[serde(default = "defaults::listen_host")]
    pub listen_host: String,
    /// `LISTEN_PORT`, default 9730. 0 picks a free port (tests).
    #[serde(default = "defaults::listen_port")]
    pub listen_port: u16,
    /// `METRICS_LISTEN_PORT`: when set (and different from `LISTEN_PORT`), `/metrics` is
    /// served only there, so a NetworkPolicy can give Prometheus and Centrifugo separate ports.
    #[serde(default)]
    pub metrics_listen_port: Option<u16>,

    /// `CENTRIFUGO_PROXY_AUTH`: `hmac` (default) | `static_header` | `none`.
    #[serde(default = "defaults::proxy_auth")]
    pub centrifugo_proxy_auth: ProxyAuthMode,
    /// `CENTRIFUGO_PROXY_SECRET`: required unless the mode is `none`.
    #[serde(default)]
    pub centrifugo_proxy_secret: Option<Secret>,
    /// `CENTRIFUGO_PROXY_SECRET_PREVIOUS`: also accepted, for rotation without downtime.
    #[serde(default)]
    pub centrifugo_proxy_secret_previous: Option<Secret>,
    /// `PROXY_MAX_BODY_BYTES`, default 65536 bytes; larger bodies answer 413.
    #[serde(default = "defaults::max_body_bytes")]
    pub proxy_max_body_bytes: usize,
    /// `PROXY_HTTP_STATUS_MODE`: `mapped` (default) | `always_200`.
    #[serde(default = "defaults::status_mode")]
    pub proxy_http_status_mode: StatusMode,
    /// `CONNECT_INFO_FIELDS`: comma list of meta fields also copied into public `info`.
    #[serde(default)]
    pub connect_info_fields: String,

    /// `IDENTITY_VALIDATE_GRPC_ADDRESS`, default `localhost:50051` (a scheme is optional).
    #[serde(default = "defaults::identity_address")]
    pub identity_validate_grpc_address: String,
    /// `IDENTITY_VALIDATE_NEGOTIATION_TYPE`: `plaintext` (default) | `tls`.
    #[serde(default = "defaults::negotiation")]
    pub identity_validate_negotiation_type: Negotiation,
    /// `IDENTITY_VALIDATE_DEADLINE_MS`, default 2500 ms: sent as `grpc-timeout` and enforced locally.
    #[serde(default = "defaults::deadline_ms")]
    pub identity_validate_deadline_ms: u64,
    /// `IDENTITY_PROBE_INTERVAL_MS`, default 1000 ms: background probe cadence during an outage.
    #[serde(default = "defaults::probe_interval_ms")]
    pub identity_probe_interval_ms: u64,

    /// `FALLBACK_TICKETS_PATH`: the static pool file; empty (default) disables the pool.
    #[serde(default)]
    pub fallback_tickets_path: String,
    /// `FALLBACK_DEGRADED_WINDOW_MS`, default 5000 ms: how long identity must be unreachable
    /// before pool tickets are accepted.
    #[serde(default = "defaults::window_ms")]
    pub fallback_degraded_window_ms: u64,
    /// `FALLBACK_LOW_WATERMARK`, default 1000 tickets; 0 disables the warning.
    #[serde(default = "defaults::low_watermark")]
    pub fallback_low_watermark: usize,
    /// `FALLBACK_CONNECT_TTL_S`, default 300 s: lifetime of a pool connection before refresh.
    #[serde(default = "defaults::fallback_ttl_s")]
    pub fallback_connect_ttl_s: u64,

    /// `CHANNEL_POLICY_PATH`: a TOML or JSON channel policy; unset uses the built-in default
    /// (`config/channel-policy.toml`).
    #[serde(default)]
    pub channel_policy_path: Option<String>,
    /// `CONNECTION_REFRESH_TTL_S`, default 3600 s: how far refresh extends a normal connection
    /// (and the connect `expire_at` when identity-service sets none).
    #[serde(default = "defaults::refresh_ttl_s")]
    pub connection_refresh_ttl_s: u64,
    /// `PUBLISH_RATE_PER_SECOND`, default 20: sustained client publishes per user.
    #[serde(default = "defaults::publish_rate")]
    pub publish_rate_per_second: f64,
    /// `PUBLISH_BURST`, default 40: publishes a user may make at once.
    #[serde(default = "defaults::publish_burst")]
    pub publish_burst: u32,
    /// `RPC_ROUTES`: `prefix=http://host:port/path` pairs, comma separated.
    #[serde(default)]
    pub rpc_routes: String,
    /// `RPC_DEADLINE_MS`, default 800 ms: the whole backend call for one rpc.
    #[serde(default = "defaults::rpc_deadline_ms")]
    pub rpc_deadline_ms: u64,

    /// `SHUTDOWN_DRAIN_DELAY_MS`, default 5000 ms: time between SIGTERM (readiness 503) and
    /// closing the listener, so endpoints can be updated first.
    #[serde(default = "defaults::drain_ms")]
    pub shutdown_drain_delay_ms: u64,

    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: OTLP/HTTP collector base URL; unset disables export.
    #[serde(default)]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`, default `realtime-service`.
    #[serde(default = "defaults::service_name")]
    pub otel_service_name: String,
    /// `OTEL_TRACES_SAMPLER_ARG`, default 1.0: ratio of root traces sampled.
    #[serde(default = "defaults::sampler_arg")]
    pub otel_traces_sampler_arg: f64,
    /// `OTEL_SDK_DISABLED`: `true` turns tracing export off whatever else is set.
    #[serde(default)]
    pub otel_sdk_disabled: bool,
}

mod defaults {
    use super::*;
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn log_format() -> LogFormat {
        LogFormat::Text
    }
    pub fn listen_host() -> String {
        "0.0.0.0".into()
    }
    pub fn listen_port() -> u16 {
        9730
    }
    pub fn proxy_auth() -> ProxyAuthMode {
        ProxyAuthMode::Hmac
    }
    pub fn max_body_bytes() -> usize {
        65536
    }
    pub fn status_mode() -> StatusMode {
        StatusMode::Mapped
    }
    pub fn identity_address() -> String {
        "localhost:50051".into()
    }
    pub fn negotiation() -> Negotiation {
        Negotiation::Plaintext
    }
    pub fn deadline_ms() -> u64 {
        2500
    }
    pub fn probe_interval_ms() -> u64 {
        1000
    }
    pub fn window_ms() -> u64 {
        5000
    }
    pub fn low_watermark() -> usize {
        1000
    }
    pub fn fallback_ttl_s() -> u64 {
        300
    }
    pub fn refresh_ttl_s() -> u64 {
        3600
    }
    pub fn publish_rate() -> f64 {
        20.0
    }
    pub fn publish_burst() -> u32 {
        40
    }
    pub fn rpc_deadline_ms() -> u64 {
        800
    }
    pub fn drain_ms() -> u64 {
        5000
    }
    pub fn service_name() -> String {
        "realtime-service".into()
    }
    pub fn sampler_arg() -> f64 {
        1.0
    }
}

/// Why the configuration was refused. Every message names the variable(s) to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {message}")]
    Invalid { var: String, message: String },
}

pub(crate) fn invalid(var: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var: var.to_owned(),
        message: message.into(),
    }
}

/// The fallback pool is bounded to this TTL range so that a pool connection is re-checked
/// (refresh) within the hour, but not so often that a long outage turns into a refresh storm.
pub const FALLBACK_TTL_RANGE_S: std::ops::RangeInclusive<u64> = 60..=3600;

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_pairs(std::env::vars())
    }

    /// Reads explicit pairs: tests use this instead of mutating the process environment.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let settings: Settings = envy::from_iter(pairs).map_err(envy_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Cross-field rules that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let secret_set = self
            .centrifugo_proxy_secret
            .as_ref()
            .is_some_and(|s| !s.is_empty());
        if self.centrifugo_proxy_auth != ProxyAuthMode::None && !secret_set {
            return Err(invalid(
                "CENTRIFUGO_PROXY_SECRET",
                format!(
                    "required when CENTRIFUGO_PROXY_AUTH={} (set CENTRIFUGO_PROXY_AUTH=none explicitly to run without request authentication)",
                    self.centrifugo_proxy_auth.as_str()
                ),
            ));
        }
        if self.centrifugo_proxy_auth == ProxyAuthMode::StaticHeader {
            // The secret travels as an HTTP header value and is compared exactly.
            let secrets = [
                ("CENTRIFUGO_PROXY_SECRET", &self.centrifugo_proxy_secret),
                (
                    "CENTRIFUGO_PROXY_SECRET_PREVIOUS",
                    &self.centrifugo_proxy_secret_previous,
                ),
            ];
            for (var, secret) in secrets {
                if let Some(secret) = secret.as_ref().filter(|s| !s.is_empty()) {
                    if !secret.expose().iter().all(u8::is_ascii_graphic) {
                        return Err(invalid(
                            var,
                            "must be visible ASCII without spaces in static_header mode (it is sent as an HTTP header value)",
                        ));
                    }
                }
            }
        }
        if self.proxy_max_body_bytes == 0 {
            return Err(invalid("PROXY_MAX_BODY_BYTES", "must be greater than 0"));
        }
        if self.identity_validate_deadline_ms == 0 {
            return Err(invalid(
                "IDENTITY_VALIDATE_DEADLINE_MS",
                "must be greater than 0",
            ));
        }
        if self.identity_probe_interval_ms == 0 {
            return Err(invalid(
                "IDENTITY_PROBE_INTERVAL_MS",
                "must be greater than 0",
            ));
        }
        self.identity_uri()?;
        self.info_fields()?;
        if self.pool_enabled() {
            if self.fallback_degraded_window_ms == 0 {
                return Err(invalid(
                    "FALLBACK_DEGRADED_WINDOW_MS",
                    "must be greater than 0 when FALLBACK_TICKETS_PATH is set (0 would open the fallback pool on the first failed call)",
                ));
            }
            if self.fallback_degraded_window_ms < self.identity_validate_deadline_ms {
                return Err(invalid(
                    "FALLBACK_DEGRADED_WINDOW_MS",
                    format!(
                        "{} ms is shorter than IDENTITY_VALIDATE_DEADLINE_MS ({} ms): a single slow call would open the fallback pool",
                        self.fallback_degraded_window_ms, self.identity_validate_deadline_ms
                    ),
                ));
            }
            if !FALLBACK_TTL_RANGE_S.contains(&self.fallback_connect_ttl_s) {
                return Err(invalid(
                    "FALLBACK_CONNECT_TTL_S",
                    format!(
                        "{} is outside {}..={} seconds",
                        self.fallback_connect_ttl_s,
                        FALLBACK_TTL_RANGE_S.start(),
                        FALLBACK_TTL_RANGE_S.end()
                    ),
                ));
            }
        }
        if self.connection_refresh_ttl_s == 0 {
            return Err(invalid(
                "CONNECTION_REFRESH_TTL_S",
                "must be greater than 0",
            ));
        }
        if !(self.publish_rate_per_second.is_finite() && self.publish_rate_per_second > 0.0) {
            return Err(invalid(
                "PUBLISH_RATE_PER_SECOND",
                "must be a number greater than 0",
            ));
        }
        if self.publish_burst == 0 {
            return Err(invalid("PUBLISH_BURST", "must be at least 1"));
        }
        if self.rpc_deadline_ms == 0 {
            return Err(invalid("RPC_DEADLINE_MS", "must be greater than 0"));
        }
        crate::rpc::Routes::parse(&self.rpc_routes)?;
        if !(0.0..=1.0).contains(&self.otel_traces_sampler_arg) {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER_ARG",
                "must be between 0.0 and 1.0",
            ));
        }
        if let Some(port) = self.metrics_listen_port {
            if port == 0 && self.listen_port != 0 {
                return Err(invalid("METRICS_LISTEN_PORT", "must not be 0"));
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        resolve(&self.listen_host, self.listen_port, "LISTEN_HOST")
    }

    /// The separate metrics listener, if one is configured.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.metrics_listen_port {
            Some(port) if port != self.listen_port || port == 0 => {
                resolve(&self.listen_host, port, "LISTEN_HOST").map(Some)
            }
            _ => Ok(None),
        }
    }

    pub fn pool_enabled(&self) -> bool {
        !self.fallback_tickets_path.trim().is_empty()
    }

    pub fn fallback_tickets_path(&self) -> Option<PathBuf> {
        self.pool_enabled()
            .then(|| PathBuf::from(self.fallback_tickets_path.trim()))
    }

    pub fn validate_deadline(&self) -> Duration {
        Duration::from_millis(self.identity_validate_deadline_ms)
    }
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.identity_probe_interval_ms)
    }
    pub fn degraded_window(&self) -> Duration {
        Duration::from_millis(self.fallback_degraded_window_ms)
    }
    pub fn fallback_ttl(&self) -> Duration {
        Duration::from_secs(self.fallback_connect_ttl_s)
    }
    pub fn refresh_ttl(&self) -> Duration {
        Duration::from_secs(self.connection_refresh_ttl_s)
    }
    pub fn rpc_deadline(&self) -> Duration {
        Duration::from_millis(self.rpc_deadline_ms)
    }
    pub fn channel_policy_path(&self) -> Option<PathBuf> {
        self.channel_policy_path
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.shutdown_drain_delay_ms)
    }

    /// The identity-service URI with a scheme that matches the negotiation type.
    pub fn identity_uri(&self) -> Result<tonic::transport::Uri, ConfigError> {
        const VAR: &str = "IDENTITY_VALIDATE_GRPC_ADDRESS";
        let raw = self.identity_validate_grpc_address.trim();
        if raw.is_empty() {
            return Err(invalid(VAR, "must not be empty"));
        }
        let with_scheme = if raw.contains("://") {
            raw.to_owned()
        } else {
            match self.identity_validate_negotiation_type {
                Negotiation::Plaintext => format!("http://{raw}"),
                Negotiation::Tls => format!("https://{raw}"),
            }
        };
        let uri: tonic::transport::Uri = with_scheme
            .parse()
            .map_err(|e| invalid(VAR, format!("not a host:port or URI ({e})")))?;
        if uri.host().is_none() {
            return Err(invalid(VAR, "has no host"));
        }
        Ok(uri)
    }

    /// The meta fields copied into public `info` (`CONNECT_INFO_FIELDS`).
    pub fn info_fields(&self) -> Result<Vec<String>, ConfigError> {
        let fields: Vec<String> = self
            .connect_info_fields
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        for field in &fields {
            if !ConnectionMeta::FIELDS.contains(&field.as_str()) {
                return Err(invalid(
                    "CONNECT_INFO_FIELDS",
                    format!(
                        "unknown field {field:?}; known: {}",
                        ConnectionMeta::FIELDS.join(", ")
                    ),
                ));
            }
        }
        Ok(fields)
    }

    /// `VAR=value` lines for `check-config`, secrets redacted.
    pub fn redacted_lines(&self) -> Vec<String> {
        fn secret(s: &Option<Secret>) -> &'static str {
            match s {
                Some(s) if !s.is_empty() => "<redacted>",
                _ => "<unset>",
            }
        }
        fn opt<T: fmt::Display>(v: &Option<T>) -> String {
            v.as_ref().map_or_else(|| "<unset>".into(), T::to_string)
        }
        vec![
            format!("LOG_LEVEL={}", self.log_level),
            format!(
                "LOG_FORMAT={}",
                match self.log_format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                }
            ),
            format!("LISTEN_HOST={}", self.listen_host),
            format!("LISTEN_PORT={}", self.listen_port),
            format!("METRICS_LISTEN_PORT={}", opt(&self.metrics_listen_port)),
            format!(
                "CENTRIFUGO_PROXY_AUTH={}",
                self.centrifugo_proxy_auth.as_str()
            ),
            format!(
                "CENTRIFUGO_PROXY_SECRET={}",
                secret(&self.centrifugo_proxy_secret)
            ),
            format!(
                "CENTRIFUGO_PROXY_SECRET_PREVIOUS={}",
                secret(&self.centrifugo_proxy_secret_previous)
            ),
            format!("PROXY_MAX_BODY_BYTES={}", self.proxy_max_body_bytes),
            format!(
                "PROXY_HTTP_STATUS_MODE={}",
                match self.proxy_http_status_mode {
                    StatusMode::Mapped => "mapped",
                    StatusMode::Always200 => "always_200",
                }
            ),
            format!("CONNECT_INFO_FIELDS={}", self.connect_info_fields),
            format!(
                "IDENTITY_VALIDATE_GRPC_ADDRESS={}",
                self.identity_validate_grpc_address
            ),
            format!(
                "IDENTITY_VALIDATE_NEGOTIATION_TYPE={}",
                match self.identity_validate_negotiation_type {
                    Negotiation::Plaintext => "plaintext",
                    Negotiation::Tls => "tls",
                }
            ),
            format!(
                "IDENTITY_VALIDATE_DEADLINE_MS={}",
                self.identity_validate_deadline_ms
            ),
            format!(
                "IDENTITY_PROBE_INTERVAL_MS={}",
                self.identity_probe_interval_ms
            ),
            format!("FALLBACK_TICKETS_PATH={}", self.fallback_tickets_path),
            format!(
                "FALLBACK_DEGRADED_WINDOW_MS={}",
                self.fallback_degraded_window_ms
            ),
            format!("FALLBACK_LOW_WATERMARK={}", self.fallback_low_watermark),
            format!("FALLBACK_CONNECT_TTL_S={}", self.fallback_connect_ttl_s),
            format!("CHANNEL_POLICY_PATH={}", opt(&self.channel_policy_path)),
            format!("CONNECTION_REFRESH_TTL_S={}", self.connection_refresh_ttl_s),
            format!("PUBLISH_RATE_PER_SECOND={}", self.publish_rate_per_second),
            format!("PUBLISH_BURST={}", self.publish_burst),
            format!("RPC_ROUTES={}", self.rpc_routes),
            format!("RPC_DEADLINE_MS={}", self.rpc_deadline_ms),
            format!("SHUTDOWN_DRAIN_DELAY_MS={}", self.shutdown_drain_delay_ms),
            format!(
                "OTEL_EXPORTER_OTLP_ENDPOINT={}",
                opt(&self.otel_exporter_otlp_endpoint)
            ),
            format!("OTEL_SERVICE_NAME={}", self.otel_service_name),
            format!("OTEL_TRACES_SAMPLER_ARG={}", self.otel_traces_sampler_arg),
            format!("OTEL_SDK_DISABLED={}", self.otel_sdk_disabled),
        ]
    }
}

fn resolve(host: &str, port: u16, var: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| invalid(var, format!("cannot resolve {host:?}: {e}")))?
        .next()
        .ok_or_else(|| invalid(var, format!("{host:?} resolves to no address")))
}

/// Turns envy's message (which names the lower-case field) into one naming the variable.
fn envy_error(err: envy::Error) -> ConfigError {
    match err {
        envy::Error::MissingValue(field) => invalid(&field.to_uppercase(), "is required"),
        envy::Error::Custom(message) => {
            let is_var = |v: &&str| {
                !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
            };
            // Our enums say "VAR: ..."; envy says "... provided by VAR" for parse errors.
            if let Some((var, rest)) = message.split_once(": ").filter(|(v, _)| is_var(v)) {
                return invalid(var, rest);
            }
            let var = message
                .rsplit("provided by ")
                .next()
                .filter(is_var)
                .unwrap_or("environment")
                .to_owned();
            ConfigError::Invalid { var, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![("CENTRIFUGO_PROXY_SECRET", "s3cret")]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Result<Settings, ConfigError> {
        let mut pairs = base();
        pairs.extend_from_slice(extra);
        Settings::from_pairs(pairs)
    }

    fn err_text(extra: &[(&'static str, &'static str)]) -> String {
        with(extra).expect_err("must be rejected").to_string()
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let s = with(&[]).expect("valid");
        assert_eq!(s.listen_port, 9730);
        assert_eq!(s.listen_host, "0.0.0.0");
        assert_eq!(s.centrifugo_proxy_auth, ProxyAuthMode::Hmac);
        assert_eq!(s.proxy_max_body_bytes, 65536);
        assert_eq!(s.proxy_http_status_mode, StatusMode::Mapped);
        assert_eq!(s.identity_validate_deadline_ms, 2500);
        assert_eq!(s.identity_probe_interval_ms, 1000);
        assert_eq!(s.fallback_degraded_window_ms, 5000);
        assert_eq!(s.fallback_low_watermark, 1000);
        assert_eq!(s.fallback_connect_ttl_s, 300);
        assert_eq!(s.shutdown_drain_delay_ms, 5000);
        assert_eq!(s.otel_service_name, "realtime-service");
        assert!(!s.pool_enabled());
        assert_eq!(
            s.identity_uri().expect("uri").to_string(),
            "http://localhost:50051/"
        );
    }

    #[test]
    fn secret_is_required_unless_auth_is_none() {
        let err = Settings::from_pairs(Vec::<(String, String)>::new())
            .expect_err("no secret")
            .to_string();
        assert!(err.starts_with("CENTRIFUGO_PROXY_SECRET:"), "{err}");
        let err = Settings::from_pairs([("CENTRIFUGO_PROXY_SECRET", "")])
            .expect_err("empty secret")
            .to_string();
        assert!(err.starts_with("CENTRIFUGO_PROXY_SECRET:"), "{err}");
        Settings::from_pairs([("CENTRIFUGO_PROXY_AUTH", "none")]).expect("none needs no secret");
    }

    #[test]
    fn static_header_secrets_must_be_header_safe() {
        let err = Settings::from_pairs([
            ("CENTRIFUGO_PROXY_AUTH", "static_header"),
            ("CENTRIFUGO_PROXY_SECRET", "has a space"),
        ])
        .expect_err("space")
        .to_string();
        assert!(
            err.starts_with("CENTRIFUGO_PROXY_SECRET:") && !err.contains("has a space"),
            "{err}"
        );
        let err = Settings::from_pairs([
            ("CENTRIFUGO_PROXY_AUTH", "static_header"),
            ("CENTRIFUGO_PROXY_SECRET", "ok"),
            ("CENTRIFUGO_PROXY_SECRET_PREVIOUS", "tab\there"),
        ])
        .expect_err("tab")
        .to_string();
        assert!(
            err.starts_with("CENTRIFUGO_PROXY_SECRET_PREVIOUS:"),
            "{err}"
        );
        // HMAC keys are bytes that are never sent: anything goes.
        Settings::from_pairs([("CENTRIFUGO_PROXY_SECRET", "has a space")]).expect("hmac key");
    }

    #[test]
    fn parse_errors_name_the_variable() {
        let err = err_text(&[("LISTEN_PORT", "nine")]);
        assert!(err.starts_with("LISTEN_PORT:"), "{err}");
        let err = err_text(&[("CENTRIFUGO_PROXY_AUTH", "basic")]);
        assert!(err.starts_with("CENTRIFUGO_PROXY_AUTH:"), "{err}");
        let err = err_text(&[("PROXY_HTTP_STATUS_MODE", "sometimes")]);
        assert!(err.starts_with("PROXY_HTTP_STATUS_MODE:"), "{err}");
    }

    #[test]
    fn pool_invariants_are_checked_only_when_the_pool_is_enabled() {
        let pool = ("FALLBACK_TICKETS_PATH", "/tmp/tickets");
        let err = err_text(&[pool, ("FALLBACK_DEGRADED_WINDOW_MS", "0")]);
        assert!(err.starts_with("FALLBACK_DEGRADED_WINDOW_MS:"), "{err}");
        let err = err_text(&[pool, ("FALLBACK_DEGRADED_WINDOW_MS", "2000")]);
        assert!(err.contains("IDENTITY_VALIDATE_DEADLINE_MS"), "{err}");
        // Equal is allowed: the window is "at least one full deadline".
        with(&[pool, ("FALLBACK_DEGRADED_WINDOW_MS", "2500")]).expect("equal ok");
        for ttl in ["59", "3601", "0"] {
            let err = err_text(&[pool, ("FALLBACK_CONNECT_TTL_S", ttl)]);
            assert!(err.starts_with("FALLBACK_CONNECT_TTL_S:"), "{err}");
        }
        with(&[pool, ("FALLBACK_CONNECT_TTL_S", "60")]).expect("lower bound ok");
        with(&[pool, ("FALLBACK_CONNECT_TTL_S", "3600")]).expect("upper bound ok");
        // Without a pool the same values are irrelevant and accepted.
        with(&[
            ("FALLBACK_DEGRADED_WINDOW_MS", "0"),
            ("FALLBACK_CONNECT_TTL_S", "1"),
        ])
        .expect("pool disabled");
    }

    #[test]
    fn info_fields_must_be_meta_fields() {
        let s = with(&[("CONNECT_INFO_FIELDS", "user, subscription_tier")]).expect("valid");
        assert_eq!(
            s.info_fields().expect("fields"),
            ["user", "subscription_tier"]
        );
        let err = err_text(&[("CONNECT_INFO_FIELDS", "user,ticket")]);
        assert!(err.starts_with("CONNECT_INFO_FIELDS:"), "{err}");
    }

    #[test]
    fn identity_address_gets_a_scheme_from_the_negotiation_type() {
        let s = with(&[
            ("IDENTITY_VALIDATE_GRPC_ADDRESS", "identity:443"),
            ("IDENTITY_VALIDATE_NEGOTIATION_TYPE", "tls"),
        ])
        .expect("valid");
        assert_eq!(s.identity_uri().expect("uri").scheme_str(), Some("https"));
        let err = err_text(&[("IDENTITY_VALIDATE_GRPC_ADDRESS", "")]);
        assert!(err.starts_with("IDENTITY_VALIDATE_GRPC_ADDRESS:"), "{err}");
    }

    #[test]
    fn redacted_lines_never_contain_secrets() {
        let s = with(&[("CENTRIFUGO_PROXY_SECRET_PREVIOUS", "old-one")]).expect("valid");
        let text = s.redacted_lines().join("\n");
        assert!(
            !text.contains("s3cret") && !text.contains("old-one"),
            "{text}"
        );
        assert!(text.contains("CENTRIFUGO_PROXY_SECRET=<redacted>"));
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
