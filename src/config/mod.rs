//! Configuration, set up once at startup in two steps:
//! 1. `Settings`: the environment, one typed field per variable (`settings.rs`).
//! 2. `Config`: the sections each component needs, as ready objects (durations, socket
//!    addresses, URIs, parsed routes, paths), after the cross-field rules.
//!
//! Both steps report every problem at once, each naming its variable, because the reader is
//! an operator looking at a Deployment manifest, not at this code.

mod checks;
pub mod secrets;
mod settings;
pub(crate) mod value;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::config_error::{ConfigError, ConfigErrors};
pub use secrets::SecretFiles;
pub use settings::Settings;
// TLS material as the configuration reads it; defined beside the clients that use it.
pub use crate::tls::{ClientIdentity, OutgoingTls};
use value::env_enum;
pub use value::Secret;

use crate::config_error::Problems;
use crate::fallback::config::FallbackConfig;
use crate::redis_client::RedisConfig;
use crate::rpc::Routes;
use checks::*;

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
    /// `OTEL_TRACES_SAMPLER`: the names the OpenTelemetry specification defines (the remote
    /// Jaeger and X-Ray samplers are not supported).
    pub enum TracesSampler {
        AlwaysOn = "always_on",
        AlwaysOff = "always_off",
        TraceIdRatio = "traceidratio",
        ParentBasedAlwaysOn = "parentbased_always_on",
        ParentBasedAlwaysOff = "parentbased_always_off",
        ParentBasedTraceIdRatio = "parentbased_traceidratio",
    }
}

env_enum! {
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: the OTLP transports the spec defines, less JSON.
    pub enum OtlpProtocol { HttpProtobuf = "http/protobuf", Grpc = "grpc" }
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
    /// `REDIS_URL` and friends: the one Redis the ledger and the limiter share.
    pub redis: Option<RedisConfig>,
    pub rpc: Rpc,
    pub http: HttpServe,
    pub drain_delay: Duration,
    /// After the drain delay, how long in-flight work may take before it is cut.
    pub shutdown_timeout: Duration,
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
    /// `GRPC_PROXY_MAX_CONNECTION_AGE_S` (`None`: off) and its grace.
    pub grpc_max_age: Option<Duration>,
    pub grpc_max_age_grace: Duration,
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
    /// As read at startup.
    pub secrets: Vec<Secret>,
    /// Set when the secrets come from files: they are re-read while running.
    pub files: Option<SecretFiles>,
}

/// The bounds every proxy call is held to, whatever the client does.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    pub max_body_bytes: usize,
    pub status_mode: StatusMode,
    pub body_read_timeout: Duration,
    pub max_inflight: usize,
}

/// The HTTP server loop's bounds.
#[derive(Debug, Clone, Copy)]
pub struct HttpServe {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub uri: tonic::transport::Uri,
    /// `None`: plaintext.
    pub tls: Option<IdentityTls>,
    pub deadline: Duration,
    pub probe_interval: Duration,
}

/// TLS to identity-service, files already read.
#[derive(Debug, Clone)]
pub struct IdentityTls {
    /// PEM CA bundle (`IDENTITY_VALIDATE_TLS_CA_PATH`); `None`: the webpki roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate for mTLS.
    pub client: Option<ClientIdentity>,
    /// `IDENTITY_VALIDATE_TLS_SERVER_NAME`; `None`: the address's host.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Fallback {
    /// `None`: no pool at all.
    pub tickets_path: Option<PathBuf>,
    pub window: Duration,
    pub low_watermark: usize,
    /// The consumed-ticket ledger and the reload interval.
    pub store: FallbackConfig,
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
    /// `RPC_TLS_CA_PATH`, read: the CA of `https://` backends.
    pub tls: OutgoingTls,
}

#[derive(Debug, Clone)]
pub struct Telemetry {
    /// `LOG_LEVEL`, checked and normalised (trimmed directives, no empty ones), so that
    /// `EnvFilter` accepts it and means what it says.
    pub log_level: String,
    pub log_format: LogFormat,
    /// `false` with `OTEL_SDK_DISABLED=true`: no OpenTelemetry layer at all, so no trace ids
    /// in logs and no `traceparent` passed on. (Without an exporter and JSON logs there is
    /// none either: nothing would use it.)
    pub otel_enabled: bool,
    /// Where spans are exported; `None`: nowhere (with JSON logs, spans still get ids for
    /// the logs and propagation).
    pub traces_endpoint: Option<TracesEndpoint>,
    /// `OTEL_SERVICE_NAME`, else `service.name` of `OTEL_RESOURCE_ATTRIBUTES`, else
    /// `realtime-service`.
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, decoded, without `service.name` (in `service_name`).
    pub resource_attributes: Vec<(String, String)>,
    pub sampling: Sampling,
}

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct TracesEndpoint {
    /// The full URL: OTLP/HTTP's `/v1/traces` URL, or the gRPC collector's address.
    pub url: String,
    /// The variable the URL came from (for error messages).
    pub var: &'static str,
    pub protocol: OtlpProtocol,
    /// How long one export may take.
    pub timeout: Duration,
    pub tls: OutgoingTls,
}

/// Which spans are sampled (exported), from `OTEL_TRACES_SAMPLER` and its argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Follow the caller's decision (`traceparent`'s sampled flag) when there is a caller.
    pub parent_based: bool,
    /// The decision for a span without a parent: every callback from stock Centrifugo.
    pub root: RootSampling,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampling {
    AlwaysOn,
    AlwaysOff,
    /// This fraction of trace ids, 0.0..=1.0.
    Ratio(f64),
}

/// Kubernetes' default `terminationGracePeriodSeconds`: drain delay and shutdown timeout
/// must fit inside it, or the kubelet kills the pod mid-shutdown.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

impl Config {
    /// Combinations that start but deserve a warning (`check-config` and startup print them).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let shutdown = self.drain_delay + self.shutdown_timeout;
        if shutdown >= DEFAULT_GRACE_PERIOD {
            warnings.push(format!(
                "SHUTDOWN_DRAIN_DELAY_MS + SHUTDOWN_TIMEOUT_MS = {} ms does not fit a 30 s grace period: set the pod's terminationGracePeriodSeconds above it",
                shutdown.as_millis()
            ));
        }
        if self.http.idle_timeout <= Duration::from_secs(90) {
            warnings.push(format!(
                "HTTP_IDLE_TIMEOUT_MS = {} ms is not above the 90 s Centrifugo's HTTP client keeps idle connections: a request sent on one as it closes fails",
                self.http.idle_timeout.as_millis()
            ));
        }
        warnings
    }

    /// Reads and checks explicit pairs in one go (tests and `check-config`).
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self::from_settings(&Settings::from_pairs(pairs)?)
    }

    /// Both steps over the process environment: see [`Config::load_pairs`].
    pub fn load_env() -> Result<(Settings, Self), ConfigErrors> {
        Self::load_pairs(std::env::vars())
    }

    /// Both steps at once, every problem of either reported in one run (an operator fixes a
    /// manifest once): a variable that does not parse is judged by the cross-field rules at
    /// its default, and what they would say about it is left out.
    pub fn load_pairs<I, K, V>(pairs: I) -> Result<(Settings, Self), ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let (settings, mut problems) = Settings::read_leniently(pairs);
        match Self::from_settings(&settings) {
            Ok(config) => problems.finish(|| (settings, config)),
            Err(errors) => {
                problems.extend_unreported(errors);
                Err(problems.into_errors())
            }
        }
    }

    /// The cross-field rules, and every section turned into ready objects. All problems are
    /// reported together.
    pub fn from_settings(s: &Settings) -> Result<Self, ConfigErrors> {
        let mut p = Problems::default();
        let auth = auth(s, &mut p);
        if s.proxy_max_body_bytes == 0 {
            p.push("PROXY_MAX_BODY_BYTES", "must be greater than 0");
        }
        let http = http_serve(s, &mut p);
        if s.proxy_max_inflight == 0 {
            p.push("PROXY_MAX_INFLIGHT", "must be at least 1");
        }
        positive(
            &mut p,
            "HTTP_BODY_READ_TIMEOUT_MS",
            s.http_body_read_timeout_ms,
        );
        let identity = identity(s, &mut p);
        let info_fields = p.take(info_fields(&s.connect_info_fields));
        let redis = p.take(redis(s)).flatten();
        let fallback = fallback(s, redis.as_ref(), &mut p);
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
        let rpc_tls = rpc_tls(s, &mut p);
        let telemetry = telemetry(s, &mut p);
        let listen = listen(s, &mut p);
        p.finish(|| Self {
            listen: listen.unwrap_or_else(|| unreachable!("errors were reported")),
            auth,
            edge: Edge {
                max_body_bytes: s.proxy_max_body_bytes,
                status_mode: s.proxy_http_status_mode,
                body_read_timeout: Duration::from_millis(s.http_body_read_timeout_ms),
                max_inflight: s.proxy_max_inflight,
            },
            http,
            identity: identity.unwrap_or_else(|| unreachable!("errors were reported")),
            fallback: fallback.unwrap_or_else(|| unreachable!("errors were reported")),
            redis,
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
                tls: rpc_tls.unwrap_or_default(),
            },
            drain_delay: Duration::from_millis(s.shutdown_drain_delay_ms),
            shutdown_timeout: Duration::from_millis(s.shutdown_timeout_ms),
            telemetry: telemetry.unwrap_or_else(|| unreachable!("errors were reported")),
        })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[path = "telemetry_tests.rs"]
mod telemetry_tests;
