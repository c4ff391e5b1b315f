//! The environment as read: one typed field per variable, declared once in the table below.
//! The table generates the struct, the reader (which reports every bad variable at once)
//! and the redacted listing that `check-config` prints, so the three cannot drift apart.
//!
//! Cross-field rules and ready objects (durations, addresses, parsed routes) are the next
//! step: `Config::from_settings`.

use std::collections::HashMap;

use super::value::{EnvValue, RedisUrl, Secret};
use super::{LogFormat, Negotiation, OtlpProtocol, ProxyAuthMode, StatusMode, TracesSampler};
use crate::config_error::{ConfigErrors, Problems};

macro_rules! settings_table {
    ($( $(#[doc = $doc:literal])+ $field:ident : $ty:ty = $var:literal, $default:expr; )+) => {
        /// The raw environment, typed. Field docs: meaning, default, unit.
        #[derive(Debug, Clone)]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
        }

        impl Settings {
            /// Every variable the service reads, in table order.
            pub const VARIABLES: &'static [&'static str] = &[$($var),+];

            fn read(env: &mut Reader<'_>) -> Self {
                Self { $( $field: env.get($var, || $default), )+ }
            }

            /// `VAR=value` lines for `check-config`; secrets are redacted by their type.
            pub fn redacted_lines(&self) -> Vec<String> {
                vec![$( format!("{}={}", $var, EnvValue::render(&self.$field)), )+]
            }
        }
    };
}

settings_table! {
    /// `LOG_LEVEL`: a level or comma-separated `target=level` directives, default `info`;
    /// empty is the default.
    log_level: String = "LOG_LEVEL", "info".into();
    /// `LOG_FORMAT`: `text` (default) | `json`.
    log_format: LogFormat = "LOG_FORMAT", LogFormat::Text;
    /// `LISTEN_HOST`, default `0.0.0.0`: every listener binds this host.
    listen_host: String = "LISTEN_HOST", "0.0.0.0".into();
    /// `LISTEN_PORT`, default 9730 (HTTP). 0 picks a free port (tests).
    listen_port: u16 = "LISTEN_PORT", 9730;
    /// `METRICS_LISTEN_PORT`: when set (and different from `LISTEN_PORT`), `/metrics` is
    /// served only there.
    metrics_listen_port: Option<u16> = "METRICS_LISTEN_PORT", None;
    /// `GRPC_PROXY_LISTEN_PORT`: Centrifugo's gRPC proxy protocol on this port; unset or
    /// empty: no gRPC listener.
    grpc_proxy_listen_port: Option<u16> = "GRPC_PROXY_LISTEN_PORT", None;
    /// `GRPC_PROXY_MAX_CONNECTION_AGE_S`, default 300 s (0: off): a gRPC connection gets a
    /// graceful GOAWAY after this long (jittered by +-10%), so Centrifugo reconnects and new
    /// replicas get calls after a scale-out.
    grpc_proxy_max_connection_age_s: u64 = "GRPC_PROXY_MAX_CONNECTION_AGE_S", 300;
    /// `GRPC_PROXY_MAX_CONNECTION_AGE_GRACE_S`, default 30 s: how long calls in flight may
    /// finish after that GOAWAY before the connection is closed.
    grpc_proxy_max_connection_age_grace_s: u64 = "GRPC_PROXY_MAX_CONNECTION_AGE_GRACE_S", 30;
    /// `GRPC_PROXY_TLS_CERT_PATH`: PEM certificate chain for the gRPC listener.
    grpc_proxy_tls_cert_path: Option<String> = "GRPC_PROXY_TLS_CERT_PATH", None;
    /// `GRPC_PROXY_TLS_KEY_PATH`: PEM private key for the gRPC listener.
    grpc_proxy_tls_key_path: Option<String> = "GRPC_PROXY_TLS_KEY_PATH", None;
    /// `GRPC_PROXY_TLS_CLIENT_CA_PATH`: PEM CA bundle; when set, clients must present a
    /// certificate it signed.
    grpc_proxy_tls_client_ca_path: Option<String> = "GRPC_PROXY_TLS_CLIENT_CA_PATH", None;

    /// `CENTRIFUGO_PROXY_AUTH`: `hmac` (default) | `static_header` | `none`.
    centrifugo_proxy_auth: ProxyAuthMode = "CENTRIFUGO_PROXY_AUTH", ProxyAuthMode::Hmac;
    /// `CENTRIFUGO_PROXY_SECRET`: required unless the mode is `none` (or the secret comes from
    /// `CENTRIFUGO_PROXY_SECRET_FILE`); at least 16 bytes.
    centrifugo_proxy_secret: Option<Secret> = "CENTRIFUGO_PROXY_SECRET", None;
    /// `CENTRIFUGO_PROXY_SECRET_PREVIOUS`: also accepted, for rotation without downtime.
    centrifugo_proxy_secret_previous: Option<Secret> = "CENTRIFUGO_PROXY_SECRET_PREVIOUS", None;
    /// `CENTRIFUGO_PROXY_SECRET_FILE`: a file holding the secret (a mounted Secret), re-read
    /// while running; excludes `CENTRIFUGO_PROXY_SECRET`.
    centrifugo_proxy_secret_file: Option<String> = "CENTRIFUGO_PROXY_SECRET_FILE", None;
    /// `CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE`: the previous secret from a file (empty file:
    /// none); excludes `CENTRIFUGO_PROXY_SECRET_PREVIOUS`.
    centrifugo_proxy_secret_previous_file: Option<String> = "CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE", None;
    /// `PROXY_MAX_BODY_BYTES`, default 65536 bytes; larger bodies answer 413 (HTTP) or 107
    /// (gRPC).
    proxy_max_body_bytes: usize = "PROXY_MAX_BODY_BYTES", 65536;
    /// `PROXY_HTTP_STATUS_MODE`: `mapped` (default) | `always_200`.
    proxy_http_status_mode: StatusMode = "PROXY_HTTP_STATUS_MODE", StatusMode::Mapped;
    /// `PROXY_MAX_INFLIGHT`, default 256: proxy requests being read or processed at once;
    /// past it the answer is 429 with error 111 at once (nothing queues).
    proxy_max_inflight: usize = "PROXY_MAX_INFLIGHT", 256;
    /// `HTTP_HEADER_READ_TIMEOUT_MS`, default 10000 ms: a request head must arrive within this.
    http_header_read_timeout_ms: u64 = "HTTP_HEADER_READ_TIMEOUT_MS", 10_000;
    /// `HTTP_BODY_READ_TIMEOUT_MS`, default 10000 ms: a body must arrive within this, else 408.
    http_body_read_timeout_ms: u64 = "HTTP_BODY_READ_TIMEOUT_MS", 10_000;
    /// `HTTP_IDLE_TIMEOUT_MS`, default 120000 ms: idle keep-alive connections are closed after
    /// this; longer than the 90 s Centrifugo's HTTP client keeps them pooled.
    http_idle_timeout_ms: u64 = "HTTP_IDLE_TIMEOUT_MS", 120_000;
    /// `HTTP_MAX_CONNECTIONS`, default 4096: open connections per HTTP listener.
    http_max_connections: usize = "HTTP_MAX_CONNECTIONS", 4096;
    /// `HTTP_MAX_HEADER_BYTES`, default 16384 (at least 8192): the largest request head; larger
    /// heads answer 431.
    http_max_header_bytes: usize = "HTTP_MAX_HEADER_BYTES", 16 * 1024;
    /// `CONNECT_INFO_FIELDS`: comma list of meta fields also copied into public `info`.
    connect_info_fields: String = "CONNECT_INFO_FIELDS", String::new();

    /// `IDENTITY_VALIDATE_GRPC_ADDRESS`, default `localhost:50051` (a scheme is optional).
    identity_validate_grpc_address: String = "IDENTITY_VALIDATE_GRPC_ADDRESS", "localhost:50051".into();
    /// `IDENTITY_VALIDATE_NEGOTIATION_TYPE`: `plaintext` (default) | `tls`.
    identity_validate_negotiation_type: Negotiation = "IDENTITY_VALIDATE_NEGOTIATION_TYPE", Negotiation::Plaintext;
    /// `IDENTITY_VALIDATE_TLS_CA_PATH`: PEM CA bundle that signs identity-service's
    /// certificate (instead of the public roots); needs `tls` negotiation.
    identity_validate_tls_ca_path: Option<String> = "IDENTITY_VALIDATE_TLS_CA_PATH", None;
    /// `IDENTITY_VALIDATE_TLS_CERT_PATH`: PEM client certificate chain for mTLS.
    identity_validate_tls_cert_path: Option<String> = "IDENTITY_VALIDATE_TLS_CERT_PATH", None;
    /// `IDENTITY_VALIDATE_TLS_KEY_PATH`: PEM private key of the client certificate.
    identity_validate_tls_key_path: Option<String> = "IDENTITY_VALIDATE_TLS_KEY_PATH", None;
    /// `IDENTITY_VALIDATE_TLS_SERVER_NAME`: the name identity-service's certificate is checked
    /// against (and sent as SNI); default: the address's host.
    identity_validate_tls_server_name: Option<String> = "IDENTITY_VALIDATE_TLS_SERVER_NAME", None;
    /// `IDENTITY_VALIDATE_DEADLINE_MS`, default 2500 ms: sent as `grpc-timeout` and enforced
    /// locally.
    identity_validate_deadline_ms: u64 = "IDENTITY_VALIDATE_DEADLINE_MS", 2500;
    /// `IDENTITY_PROBE_INTERVAL_MS`, default 1000 ms: background probe cadence during an outage.
    identity_probe_interval_ms: u64 = "IDENTITY_PROBE_INTERVAL_MS", 1000;

    /// `FALLBACK_TICKETS_PATH`: the static pool file; empty (default) disables the pool.
    fallback_tickets_path: String = "FALLBACK_TICKETS_PATH", String::new();
    /// `FALLBACK_DEGRADED_WINDOW_MS`, default 5000 ms: how long identity must be unreachable
    /// before pool tickets are accepted.
    fallback_degraded_window_ms: u64 = "FALLBACK_DEGRADED_WINDOW_MS", 5000;
    /// `FALLBACK_LOW_WATERMARK`, default 1000 tickets; 0 disables the warning.
    fallback_low_watermark: usize = "FALLBACK_LOW_WATERMARK", 1000;
    /// `FALLBACK_CONNECT_TTL_S`, default 300 s: lifetime of a pool connection before refresh.
    fallback_connect_ttl_s: u64 = "FALLBACK_CONNECT_TTL_S", 300;
    /// `FALLBACK_RELOAD_INTERVAL_S`, default 30 s (0 = only on SIGHUP): how often the pool
    /// and the channel policy are re-read.
    fallback_reload_interval_s: String = "FALLBACK_RELOAD_INTERVAL_S", "30".into();
    /// `FALLBACK_LEDGER`: `memory` (default) | `file` | `redis`: where consumed tickets are
    /// recorded.
    fallback_ledger: String = "FALLBACK_LEDGER", "memory".into();
    /// `FALLBACK_LEDGER_PATH`: the append-only ledger file (required with `file`).
    fallback_ledger_path: Option<String> = "FALLBACK_LEDGER_PATH", None;
    /// `FALLBACK_LEDGER_TTL_S`, default 2592000 s: how long Redis keeps a consumed mark.
    fallback_ledger_ttl_s: String = "FALLBACK_LEDGER_TTL_S", "2592000".into();
    /// `FALLBACK_LEDGER_UNAVAILABLE`: `local` (default) | `deny`: what a take does while Redis
    /// does not answer.
    fallback_ledger_unavailable: String = "FALLBACK_LEDGER_UNAVAILABLE", "local".into();

    /// `REDIS_URL`: `redis://` or `rediss://`; set, it holds the ledger (`FALLBACK_LEDGER=redis`)
    /// and the publish rate limit across replicas. Printed without its password.
    redis_url: Option<RedisUrl> = "REDIS_URL", None;
    /// `REDIS_PASSWORD_FILE`: the password from a file instead of the URL.
    redis_password_file: Option<String> = "REDIS_PASSWORD_FILE", None;
    /// `REDIS_TLS_CA_PATH`: PEM CA certificate(s) that sign the Redis server's certificate
    /// (`rediss://` only); unset: the system's roots. Re-read when it changes.
    redis_tls_ca_path: Option<String> = "REDIS_TLS_CA_PATH", None;
    /// `REDIS_TLS_CERT_PATH`: PEM client certificate for Redis (with `REDIS_TLS_KEY_PATH`).
    redis_tls_cert_path: Option<String> = "REDIS_TLS_CERT_PATH", None;
    /// `REDIS_TLS_KEY_PATH`: PEM private key of `REDIS_TLS_CERT_PATH`.
    redis_tls_key_path: Option<String> = "REDIS_TLS_KEY_PATH", None;
    /// `REDIS_KEY_PREFIX`, default `realtime:`.
    redis_key_prefix: String = "REDIS_KEY_PREFIX", "realtime:".into();
    /// `REDIS_TIMEOUT_MS`, default 100 ms: the bound on every Redis call.
    redis_timeout_ms: String = "REDIS_TIMEOUT_MS", "100".into();

    /// `CHANNEL_POLICY_PATH`: a TOML or JSON channel policy; unset uses the built-in default.
    channel_policy_path: Option<String> = "CHANNEL_POLICY_PATH", None;
    /// `CONNECTION_REFRESH_TTL_S`, default 3600 s: how far refresh extends a connection.
    connection_refresh_ttl_s: u64 = "CONNECTION_REFRESH_TTL_S", 3600;
    /// `PUBLISH_RATE_PER_SECOND`, default 20: sustained client publishes per user.
    publish_rate_per_second: f64 = "PUBLISH_RATE_PER_SECOND", 20.0;
    /// `PUBLISH_BURST`, default 40: publishes a user may make at once.
    publish_burst: u32 = "PUBLISH_BURST", 40;
    /// `RPC_ROUTES`: `prefix=http://host:port/path` pairs, comma separated.
    rpc_routes: String = "RPC_ROUTES", String::new();
    /// `RPC_DEADLINE_MS`, default 800 ms: the whole backend call for one rpc.
    rpc_deadline_ms: u64 = "RPC_DEADLINE_MS", 800;
    /// `RPC_TLS_CA_PATH`: PEM CA bundle that signs the `https://` backends' certificates
    /// (instead of the public roots).
    rpc_tls_ca_path: Option<String> = "RPC_TLS_CA_PATH", None;

    /// `SHUTDOWN_DRAIN_DELAY_MS`, default 5000 ms: time between SIGTERM (readiness 503) and
    /// closing the listeners, so endpoints can be updated first.
    shutdown_drain_delay_ms: u64 = "SHUTDOWN_DRAIN_DELAY_MS", 5000;
    /// `SHUTDOWN_TIMEOUT_MS`, default 15000 ms: after the drain delay, how long in-flight
    /// requests may take; what is left is cut.
    shutdown_timeout_ms: u64 = "SHUTDOWN_TIMEOUT_MS", 15_000;

    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: OTLP/HTTP collector base URL (`/v1/traces` is
    /// appended); unset (and no traces endpoint) disables export.
    otel_exporter_otlp_endpoint: Option<String> = "OTEL_EXPORTER_OTLP_ENDPOINT", None;
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the full traces URL, used as is; wins over
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    otel_exporter_otlp_traces_endpoint: Option<String> = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None;
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (default) | `grpc`.
    otel_exporter_otlp_protocol: Option<OtlpProtocol> = "OTEL_EXPORTER_OTLP_PROTOCOL", None;
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`: the same for traces; wins.
    otel_exporter_otlp_traces_protocol: Option<OtlpProtocol> = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", None;
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`: ms one export may take, default 5000.
    otel_exporter_otlp_timeout: Option<u64> = "OTEL_EXPORTER_OTLP_TIMEOUT", None;
    /// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`: the same for traces; wins.
    otel_exporter_otlp_traces_timeout: Option<u64> = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", None;
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE`: PEM CA bundle that signs an `https://` collector's
    /// certificate (instead of the public roots).
    otel_exporter_otlp_certificate: Option<String> = "OTEL_EXPORTER_OTLP_CERTIFICATE", None;
    /// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`: PEM client certificate chain for mTLS.
    otel_exporter_otlp_client_certificate: Option<String> = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", None;
    /// `OTEL_EXPORTER_OTLP_CLIENT_KEY`: PEM private key of the client certificate.
    otel_exporter_otlp_client_key: Option<String> = "OTEL_EXPORTER_OTLP_CLIENT_KEY", None;
    /// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,...` sent with every export (read by the
    /// exporter itself; checked here, printed redacted: they often carry an API key).
    otel_exporter_otlp_headers: Option<Secret> = "OTEL_EXPORTER_OTLP_HEADERS", None;
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`: the same for traces; wins.
    otel_exporter_otlp_traces_headers: Option<Secret> = "OTEL_EXPORTER_OTLP_TRACES_HEADERS", None;
    /// `OTEL_SERVICE_NAME`: wins over `service.name` in `OTEL_RESOURCE_ATTRIBUTES`; neither:
    /// `realtime-service`.
    otel_service_name: Option<String> = "OTEL_SERVICE_NAME", None;
    /// `OTEL_RESOURCE_ATTRIBUTES`: `key=value,...` (values percent-encoded) on every span.
    otel_resource_attributes: String = "OTEL_RESOURCE_ATTRIBUTES", String::new();
    /// `OTEL_TRACES_SAMPLER`: a sampler name of the OpenTelemetry spec; unset:
    /// `parentbased_traceidratio` at 0.01 (every callback is a root span).
    otel_traces_sampler: Option<TracesSampler> = "OTEL_TRACES_SAMPLER", None;
    /// `OTEL_TRACES_SAMPLER_ARG`: the ratio of the ratio samplers, 0.0..=1.0; unset: 1.0 (the
    /// spec's default) for a named sampler, 0.01 when `OTEL_TRACES_SAMPLER` is unset too.
    otel_traces_sampler_arg: Option<f64> = "OTEL_TRACES_SAMPLER_ARG", None;
    /// `OTEL_SDK_DISABLED`: `true` turns tracing export off whatever else is set.
    otel_sdk_disabled: bool = "OTEL_SDK_DISABLED", false;
}

/// Reads variables, recording every one that does not parse.
struct Reader<'a> {
    vars: &'a HashMap<String, String>,
    problems: Problems,
}

impl Reader<'_> {
    fn get<T: EnvValue>(&mut self, var: &str, default: impl FnOnce() -> T) -> T {
        let Some(raw) = self.vars.get(var) else {
            return default();
        };
        T::parse(raw).unwrap_or_else(|message| {
            self.problems.push(var, message);
            default()
        })
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_pairs(std::env::vars())
    }

    /// Reads explicit pairs: tests use this instead of mutating the process environment.
    /// Only per-variable parsing happens here; `Config::from_settings` checks the rest.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let (settings, problems) = Self::read_leniently(pairs);
        problems.finish(|| settings)
    }

    /// Reads every variable, past the ones that do not parse: each of those is recorded and
    /// read as its default, so the cross-field rules can still judge the rest in the same run
    /// (`Config::load_pairs`).
    pub(crate) fn read_leniently<I, K, V>(pairs: I) -> (Self, Problems)
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars: HashMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let mut reader = Reader {
            vars: &vars,
            problems: Problems::default(),
        };
        let settings = Self::read(&mut reader);
        (settings, reader.problems)
    }
}
