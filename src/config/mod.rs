//! Configuration, set up once at startup in two steps:
//! 1. `Settings`: the environment, one typed field per variable (`settings.rs`).
//! 2. `Config`: the sections each component needs, as ready objects (durations, socket
//!    addresses, URIs, parsed routes, paths), after the cross-field rules.
//!
//! Both steps report every problem at once, each naming its variable, because the reader is
//! an operator looking at a Deployment manifest, not at this code.

pub mod error;
mod settings;
pub(crate) mod value;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors};
pub use settings::Settings;
use value::env_enum;
pub use value::Secret;

use crate::meta::ConnectionMeta;
use crate::rpc::Routes;
use error::Problems;

env_enum! {
    /// How Centrifugo's calls are authenticated (`CENTRIFUGO_PROXY_AUTH`).
    pub enum ProxyAuthMode {
        /// HTTP: hex HMAC-SHA256 of the raw body (added by a signer in front).
        Hmac = "hmac",
        /// HTTP: the shared secret itself in a header, as stock Centrifugo's
        /// `http.static_headers` sends it.
        StaticHeader = "static_header",
        /// No check at all. Only for local development; logged loudly.
        None = "none",
    }
}

env_enum! {
    /// `PROXY_HTTP_STATUS_MODE`: Centrifugo reads bodies of 200 answers only.
    pub enum StatusMode {
        /// Failures answer 401/503/400/413/500; Centrifugo maps them with
        /// `status_to_code_transforms`.
        Mapped = "mapped",
        /// Every answer is 200 with the same body, so Centrifugo acts on the body itself.
        Always200 = "always_200",
    }
}

env_enum! {
    /// `LOG_FORMAT`.
    pub enum LogFormat { Text = "text", Json = "json" }
}

env_enum! {
    /// `IDENTITY_VALIDATE_NEGOTIATION_TYPE`.
    pub enum Negotiation { Plaintext = "plaintext", Tls = "tls" }
}

/// The fallback pool is bounded to this TTL range so that a pool connection is re-checked
/// (refresh) within the hour, but not so often that a long outage turns into a refresh storm.
pub const FALLBACK_TTL_RANGE_S: std::ops::RangeInclusive<u64> = 60..=3600;

/// Connect settings the decisions need, prepared once at startup.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// Meta fields also copied into public `info` (`CONNECT_INFO_FIELDS`).
    pub info_fields: Vec<String>,
    /// Lifetime of a pool connection (`FALLBACK_CONNECT_TTL_S`), and the longest a degraded
    /// connection lives before the refresh proxy re-checks it.
    pub fallback_ttl: Duration,
    /// `CONNECTION_REFRESH_TTL_S`: `expire_at` when identity-service sets none, so the refresh
    /// proxy is called periodically for every connection.
    pub refresh_ttl: Duration,
}

/// Everything the service is built from.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub auth: Auth,
    pub edge: Edge,
    pub identity: Identity,
    pub fallback: Fallback,
    pub connect: ConnectConfig,
    pub policy_path: Option<PathBuf>,
    pub publish: Publish,
    pub rpc: Rpc,
    pub drain_delay: Duration,
    pub telemetry: Telemetry,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub http: SocketAddr,
    /// A separate `/metrics` listener.
    pub metrics: Option<SocketAddr>,
    /// Centrifugo's gRPC proxy protocol.
    pub grpc: Option<SocketAddr>,
    pub grpc_tls: Option<GrpcTls>,
}

#[derive(Debug, Clone)]
pub struct GrpcTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Request authentication: the mode and the accepted secrets, current first.
#[derive(Debug, Clone)]
pub struct Auth {
    pub mode: ProxyAuthMode,
    pub secrets: Vec<Secret>,
}

#[derive(Debug, Clone, Copy)]
pub struct Edge {
    pub max_body_bytes: usize,
    pub status_mode: StatusMode,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub uri: tonic::transport::Uri,
    pub tls: bool,
    pub deadline: Duration,
    pub probe_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Fallback {
    /// `None`: no pool at all.
    pub tickets_path: Option<PathBuf>,
    pub window: Duration,
    pub low_watermark: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Publish {
    pub rate_per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone)]
pub struct Rpc {
    pub routes: Routes,
    pub deadline: Duration,
}

#[derive(Debug, Clone)]
pub struct Telemetry {
    pub log_level: String,
    pub log_format: LogFormat,
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    pub sampler_ratio: f64,
}

impl Config {
    /// Reads and checks explicit pairs in one go (tests and `check-config`).
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self::from_settings(&Settings::from_pairs(pairs)?)
    }

    /// The cross-field rules, and every section turned into ready objects. All problems are
    /// reported together.
    pub fn from_settings(s: &Settings) -> Result<Self, ConfigErrors> {
        let mut p = Problems::default();
        let auth = auth(s, &mut p);
        if s.proxy_max_body_bytes == 0 {
            p.push("PROXY_MAX_BODY_BYTES", "must be greater than 0");
        }
        let identity = identity(s, &mut p);
        let info_fields = p.take(info_fields(&s.connect_info_fields));
        let fallback = fallback(s, &mut p);
        positive(
            &mut p,
            "CONNECTION_REFRESH_TTL_S",
            s.connection_refresh_ttl_s,
        );
        if !(s.publish_rate_per_second.is_finite() && s.publish_rate_per_second > 0.0) {
            p.push("PUBLISH_RATE_PER_SECOND", "must be a number greater than 0");
        }
        if s.publish_burst == 0 {
            p.push("PUBLISH_BURST", "must be at least 1");
        }
        positive(&mut p, "RPC_DEADLINE_MS", s.rpc_deadline_ms);
        let routes =
            p.take(Routes::parse(&s.rpc_routes).map_err(|e| ConfigError::new("RPC_ROUTES", e.0)));
        if !(0.0..=1.0).contains(&s.otel_traces_sampler_arg) {
            p.push("OTEL_TRACES_SAMPLER_ARG", "must be between 0.0 and 1.0");
        }
        let listen = listen(s, &mut p);
        p.finish(|| Self {
            listen: listen.unwrap_or_else(|| unreachable!("errors were reported")),
            auth,
            edge: Edge {
                max_body_bytes: s.proxy_max_body_bytes,
                status_mode: s.proxy_http_status_mode,
            },
            identity: identity.unwrap_or_else(|| unreachable!("errors were reported")),
            fallback,
            connect: ConnectConfig {
                info_fields: info_fields.unwrap_or_default(),
                fallback_ttl: Duration::from_secs(s.fallback_connect_ttl_s),
                refresh_ttl: Duration::from_secs(s.connection_refresh_ttl_s),
            },
            policy_path: non_empty_path(s.channel_policy_path.as_deref()),
            publish: Publish {
                rate_per_second: s.publish_rate_per_second,
                burst: s.publish_burst,
            },
            rpc: Rpc {
                routes: routes.unwrap_or_default(),
                deadline: Duration::from_millis(s.rpc_deadline_ms),
            },
            drain_delay: Duration::from_millis(s.shutdown_drain_delay_ms),
            telemetry: telemetry(s),
        })
    }
}

fn positive(p: &mut Problems, var: &str, value: u64) {
    if value == 0 {
        p.push(var, "must be greater than 0");
    }
}

fn non_empty_path(raw: Option<&str>) -> Option<PathBuf> {
    raw.map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

fn auth(s: &Settings, p: &mut Problems) -> Auth {
    let secrets: Vec<(&str, &Secret)> = [
        ("CENTRIFUGO_PROXY_SECRET", &s.centrifugo_proxy_secret),
        (
            "CENTRIFUGO_PROXY_SECRET_PREVIOUS",
            &s.centrifugo_proxy_secret_previous,
        ),
    ]
    .into_iter()
    .filter_map(|(var, secret)| secret.as_ref().filter(|s| !s.is_empty()).map(|s| (var, s)))
    .collect();
    let current_set = secrets
        .first()
        .is_some_and(|(var, _)| *var == "CENTRIFUGO_PROXY_SECRET");
    if s.centrifugo_proxy_auth != ProxyAuthMode::None && !current_set {
        p.push(
            "CENTRIFUGO_PROXY_SECRET",
            format!(
                "required when CENTRIFUGO_PROXY_AUTH={} (set CENTRIFUGO_PROXY_AUTH=none explicitly to run without request authentication)",
                s.centrifugo_proxy_auth.as_str()
            ),
        );
    }
    if s.centrifugo_proxy_auth == ProxyAuthMode::StaticHeader {
        // The secret travels as an HTTP header value and is compared exactly.
        for (var, secret) in &secrets {
            if !secret.expose().iter().all(u8::is_ascii_graphic) {
                p.push(
                    var,
                    "must be visible ASCII without spaces in static_header mode (it is sent as an HTTP header value)",
                );
            }
        }
    }
    Auth {
        mode: s.centrifugo_proxy_auth,
        secrets: secrets.into_iter().map(|(_, s)| s.clone()).collect(),
    }
}

fn identity(s: &Settings, p: &mut Problems) -> Option<Identity> {
    positive(
        p,
        "IDENTITY_VALIDATE_DEADLINE_MS",
        s.identity_validate_deadline_ms,
    );
    positive(
        p,
        "IDENTITY_PROBE_INTERVAL_MS",
        s.identity_probe_interval_ms,
    );
    let uri = p.take(identity_uri(
        &s.identity_validate_grpc_address,
        s.identity_validate_negotiation_type,
    ))?;
    Some(Identity {
        tls: uri.scheme_str() == Some("https"),
        uri,
        deadline: Duration::from_millis(s.identity_validate_deadline_ms),
        probe_interval: Duration::from_millis(s.identity_probe_interval_ms),
    })
}

/// The identity-service URI with a scheme that matches the negotiation type.
fn identity_uri(raw: &str, negotiation: Negotiation) -> Result<tonic::transport::Uri, ConfigError> {
    const VAR: &str = "IDENTITY_VALIDATE_GRPC_ADDRESS";
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ConfigError::new(VAR, "must not be empty"));
    }
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        match negotiation {
            Negotiation::Plaintext => format!("http://{raw}"),
            Negotiation::Tls => format!("https://{raw}"),
        }
    };
    let uri: tonic::transport::Uri = with_scheme
        .parse()
        .map_err(|e| ConfigError::new(VAR, format!("not a host:port or URI ({e})")))?;
    if uri.host().is_none() {
        return Err(ConfigError::new(VAR, "has no host"));
    }
    Ok(uri)
}

/// The meta fields copied into public `info` (`CONNECT_INFO_FIELDS`).
fn info_fields(raw: &str) -> Result<Vec<String>, ConfigError> {
    let fields: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    for field in &fields {
        if !ConnectionMeta::FIELDS.contains(&field.as_str()) {
            return Err(ConfigError::new(
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

fn fallback(s: &Settings, p: &mut Problems) -> Fallback {
    let tickets_path = non_empty_path(Some(&s.fallback_tickets_path));
    // The pool's invariants only matter when there is a pool.
    if tickets_path.is_some() {
        if s.fallback_degraded_window_ms == 0 {
            p.push(
                "FALLBACK_DEGRADED_WINDOW_MS",
                "must be greater than 0 when FALLBACK_TICKETS_PATH is set (0 would open the fallback pool on the first failed call)",
            );
        } else if s.fallback_degraded_window_ms < s.identity_validate_deadline_ms {
            p.push(
                "FALLBACK_DEGRADED_WINDOW_MS",
                format!(
                    "{} ms is shorter than IDENTITY_VALIDATE_DEADLINE_MS ({} ms): a single slow call would open the fallback pool",
                    s.fallback_degraded_window_ms, s.identity_validate_deadline_ms
                ),
            );
        }
        if !FALLBACK_TTL_RANGE_S.contains(&s.fallback_connect_ttl_s) {
            p.push(
                "FALLBACK_CONNECT_TTL_S",
                format!(
                    "{} is outside {}..={} seconds",
                    s.fallback_connect_ttl_s,
                    FALLBACK_TTL_RANGE_S.start(),
                    FALLBACK_TTL_RANGE_S.end()
                ),
            );
        }
    }
    Fallback {
        tickets_path,
        window: Duration::from_millis(s.fallback_degraded_window_ms),
        low_watermark: s.fallback_low_watermark,
    }
}

fn listen(s: &Settings, p: &mut Problems) -> Option<Listen> {
    let http = p.take(resolve(&s.listen_host, s.listen_port));
    let metrics = match s.metrics_listen_port {
        Some(0) if s.listen_port != 0 => {
            p.push("METRICS_LISTEN_PORT", "must not be 0");
            None
        }
        Some(port) if port != s.listen_port || port == 0 => p.take(resolve(&s.listen_host, port)),
        _ => None,
    };
    let grpc = match s.grpc_proxy_listen_port {
        Some(port)
            if port != 0 && (port == s.listen_port || Some(port) == s.metrics_listen_port) =>
        {
            p.push(
                "GRPC_PROXY_LISTEN_PORT",
                format!("{port} is already LISTEN_PORT or METRICS_LISTEN_PORT"),
            );
            None
        }
        Some(port) => p.take(resolve(&s.listen_host, port)),
        None => None,
    };
    let grpc_tls = grpc_tls(s, p);
    if grpc_tls.is_some() && s.grpc_proxy_listen_port.is_none() {
        p.push(
            "GRPC_PROXY_TLS_CERT_PATH",
            "set, but GRPC_PROXY_LISTEN_PORT is not: there is no gRPC listener to use it",
        );
    }
    Some(Listen {
        http: http?,
        metrics,
        grpc,
        grpc_tls,
    })
}

fn grpc_tls(s: &Settings, p: &mut Problems) -> Option<GrpcTls> {
    let cert = non_empty_path(s.grpc_proxy_tls_cert_path.as_deref());
    let key = non_empty_path(s.grpc_proxy_tls_key_path.as_deref());
    let client_ca = non_empty_path(s.grpc_proxy_tls_client_ca_path.as_deref());
    match (cert, key) {
        (Some(cert), Some(key)) => Some(GrpcTls {
            cert,
            key,
            client_ca,
        }),
        (None, None) => {
            if client_ca.is_some() {
                p.push(
                    "GRPC_PROXY_TLS_CLIENT_CA_PATH",
                    "requires GRPC_PROXY_TLS_CERT_PATH and GRPC_PROXY_TLS_KEY_PATH",
                );
            }
            None
        }
        (Some(_), None) => {
            p.push(
                "GRPC_PROXY_TLS_KEY_PATH",
                "required with GRPC_PROXY_TLS_CERT_PATH",
            );
            None
        }
        (None, Some(_)) => {
            p.push(
                "GRPC_PROXY_TLS_CERT_PATH",
                "required with GRPC_PROXY_TLS_KEY_PATH",
            );
            None
        }
    }
}

fn telemetry(s: &Settings) -> Telemetry {
    Telemetry {
        log_level: s.log_level.clone(),
        log_format: s.log_format,
        otlp_endpoint: s
            .otel_exporter_otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty() && !s.otel_sdk_disabled)
            .map(str::to_owned),
        service_name: s.otel_service_name.clone(),
        sampler_ratio: s.otel_traces_sampler_arg,
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| ConfigError::new("LISTEN_HOST", format!("cannot resolve {host:?}: {e}")))?
        .next()
        .ok_or_else(|| ConfigError::new("LISTEN_HOST", format!("{host:?} resolves to no address")))
}

#[cfg(test)]
mod tests;
