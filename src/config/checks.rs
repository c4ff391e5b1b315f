//! The cross-field rules of each section, and the ready objects they produce.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::secrets::{check_secret, load_file, SecretFiles, MIN_SECRET_BYTES};
use super::value::Secret;
use super::{
    Auth, ClientIdentity, Fallback, GrpcTls, HttpServe, Identity, IdentityTls, Listen, Negotiation,
    ProxyAuthMode, RootSampling, Sampling, Settings, Telemetry, TracesEndpoint, TracesSampler,
    FALLBACK_TTL_RANGE_S,
};
use crate::config_error::{ConfigError, Problems};
use crate::fallback::config::FallbackConfig;
use crate::meta::ConnectionMeta;
use crate::redis_client::RedisConfig;

pub(super) fn positive(p: &mut Problems, var: &str, value: u64) {
    if value == 0 {
        p.push(var, "must be greater than 0");
    }
}

pub(super) fn non_empty_path(raw: Option<&str>) -> Option<PathBuf> {
    raw.map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// One accepted secret: from its variable or from its file, never both.
struct SecretSlot<'a> {
    var: &'static str,
    file_var: &'static str,
    /// The variable's value, when set and not empty.
    value: Option<&'a Secret>,
    file: Option<PathBuf>,
    /// The current secret must hold something; the previous one may be empty.
    required: bool,
}

impl<'a> SecretSlot<'a> {
    /// The secret as startup sees it, checked; problems name the variable it came from.
    fn new(
        var: &'static str,
        file_var: &'static str,
        value: Option<&'a Secret>,
        file: Option<&str>,
        required: bool,
    ) -> Self {
        Self {
            var,
            file_var,
            value: value.filter(|v| !v.expose_secret().is_empty()),
            file: non_empty_path(file),
            required,
        }
    }

    fn resolve(&self, mode: ProxyAuthMode, p: &mut Problems) -> Option<Secret> {
        match (self.value, &self.file) {
            (Some(_), Some(_)) => {
                p.push(
                    self.file_var,
                    format!(
                        "{} and {} are both set; set only one of them",
                        self.var, self.file_var
                    ),
                );
                None
            }
            (Some(value), None) => match check_secret(mode, value) {
                Ok(()) => Some(value.clone()),
                Err(e) => {
                    p.push(self.var, e);
                    None
                }
            },
            (None, Some(path)) => match load_file(mode, path) {
                Ok(Some(secret)) => Some(secret),
                Ok(None) => {
                    // An empty previous file is "no previous secret"; an empty current one
                    // leaves nothing to check against.
                    if self.required && mode != ProxyAuthMode::None {
                        p.push(self.file_var, format!("{} is empty", path.display()));
                    }
                    None
                }
                Err(e) => {
                    p.push(self.file_var, e);
                    None
                }
            },
            (None, None) => None,
        }
    }
}

pub(super) fn auth(s: &Settings, p: &mut Problems) -> Auth {
    let mode = s.centrifugo_proxy_auth;
    let current = SecretSlot::new(
        "CENTRIFUGO_PROXY_SECRET",
        "CENTRIFUGO_PROXY_SECRET_FILE",
        s.centrifugo_proxy_secret.as_ref(),
        s.centrifugo_proxy_secret_file.as_deref(),
        true,
    );
    let previous = SecretSlot::new(
        "CENTRIFUGO_PROXY_SECRET_PREVIOUS",
        "CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE",
        s.centrifugo_proxy_secret_previous.as_ref(),
        s.centrifugo_proxy_secret_previous_file.as_deref(),
        false,
    );
    let current_secret = current.resolve(mode, p);
    let previous_secret = previous.resolve(mode, p);
    // A rotation swaps both at once; one from a file and one from a variable cannot be.
    if current.file.is_some() && previous.value.is_some() {
        p.push(previous.var, MIXED_SOURCES);
    } else if current.value.is_some() && previous.file.is_some() {
        p.push(previous.file_var, MIXED_SOURCES);
    }
    if mode != ProxyAuthMode::None && current.value.is_none() && current.file.is_none() {
        p.push(current.var, missing_secret_message(mode));
    }
    let files = match (mode, &current.file) {
        (ProxyAuthMode::None, _) | (_, None) => None,
        (_, Some(path)) => Some(SecretFiles {
            current: path.clone(),
            previous: previous.file.clone(),
        }),
    };
    Auth {
        mode,
        secrets: current_secret.into_iter().chain(previous_secret).collect(),
        files,
    }
}

const MIXED_SOURCES: &str = "the current and the previous secret must both come from files (CENTRIFUGO_PROXY_SECRET_FILE, CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE) or both from variables";

/// Why a secret is needed, and which mode stock Centrifugo can use: it signs nothing, so the
/// default `hmac` needs a signer in front, and an operator who has none needs
/// `static_header`, not `none`.
fn missing_secret_message(mode: ProxyAuthMode) -> String {
    let mode_note = match mode {
        ProxyAuthMode::Hmac => "required when CENTRIFUGO_PROXY_AUTH=hmac (the default), which checks an HMAC signature that only a signer in front of this service adds: stock Centrifugo signs nothing. With stock Centrifugo use CENTRIFUGO_PROXY_AUTH=static_header, its mode (Centrifugo sends the secret itself via http.static_headers or grpc.static_metadata)",
        ProxyAuthMode::StaticHeader | ProxyAuthMode::None => "required when CENTRIFUGO_PROXY_AUTH=static_header (Centrifugo sends it via http.static_headers or grpc.static_metadata)",
    };
    format!(
        "{mode_note}. Set CENTRIFUGO_PROXY_SECRET or CENTRIFUGO_PROXY_SECRET_FILE (at least {MIN_SECRET_BYTES} bytes); only for local development, CENTRIFUGO_PROXY_AUTH=none runs without request authentication"
    )
}

pub(super) fn identity(s: &Settings, p: &mut Problems) -> Option<Identity> {
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
    let tls = identity_tls(s, uri.scheme_str() == Some("https"), p);
    Some(Identity {
        tls,
        uri,
        deadline: Duration::from_millis(s.identity_validate_deadline_ms),
        probe_interval: Duration::from_millis(s.identity_probe_interval_ms),
    })
}

/// The identity-service TLS settings (`None`: plaintext), with the files read now so that a
/// bad mount fails startup and `check-config`, naming its variable.
fn identity_tls(s: &Settings, tls: bool, p: &mut Problems) -> Option<IdentityTls> {
    const CA: &str = "IDENTITY_VALIDATE_TLS_CA_PATH";
    const CERT: &str = "IDENTITY_VALIDATE_TLS_CERT_PATH";
    const KEY: &str = "IDENTITY_VALIDATE_TLS_KEY_PATH";
    const NAME: &str = "IDENTITY_VALIDATE_TLS_SERVER_NAME";
    let ca = non_empty_path(s.identity_validate_tls_ca_path.as_deref());
    let cert = non_empty_path(s.identity_validate_tls_cert_path.as_deref());
    let key = non_empty_path(s.identity_validate_tls_key_path.as_deref());
    let server_name = s
        .identity_validate_tls_server_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if !tls {
        for (var, set) in [
            (CA, ca.is_some()),
            (CERT, cert.is_some()),
            (KEY, key.is_some()),
            (NAME, server_name.is_some()),
        ] {
            if set {
                p.push(
                    var,
                    "set, but identity-service is reached in plaintext: set IDENTITY_VALIDATE_NEGOTIATION_TYPE=tls (or an https:// address)",
                );
            }
        }
        return None;
    }
    let ca_pem = ca.and_then(|path| p.take(read_pem(CA, &path, PemKind::Certificates)));
    let client = match (cert, key) {
        (Some(cert), Some(key)) => {
            let cert_pem = p.take(read_pem(CERT, &cert, PemKind::Certificates));
            let key_pem = p.take(read_pem(KEY, &key, PemKind::PrivateKey));
            cert_pem
                .zip(key_pem)
                .map(|(cert_pem, key_pem)| ClientIdentity {
                    cert_pem,
                    key_pem: key_pem.into(),
                })
        }
        (Some(_), None) => {
            p.push(
                KEY,
                format!("required with {CERT} (the client certificate's key)"),
            );
            None
        }
        (None, Some(_)) => {
            p.push(CERT, format!("required with {KEY}"));
            None
        }
        (None, None) => None,
    };
    Some(IdentityTls {
        ca_pem,
        client,
        server_name,
    })
}

#[derive(Clone, Copy)]
enum PemKind {
    Certificates,
    PrivateKey,
}

/// Reads a PEM file and checks that it holds what it should; the error names `var`.
fn read_pem(var: &str, path: &std::path::Path, kind: PemKind) -> Result<Vec<u8>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::new(var, format!("cannot read {}: {e}", path.display())))?;
    let valid = match kind {
        PemKind::Certificates => {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
            certs.is_ok_and(|c| !c.is_empty())
        }
        PemKind::PrivateKey => PrivateKeyDer::from_pem_slice(&bytes).is_ok(),
    };
    if !valid {
        let what = match kind {
            PemKind::Certificates => "PEM certificates",
            PemKind::PrivateKey => "a PEM private key",
        };
        return Err(ConfigError::new(
            var,
            format!("{} does not hold {what}", path.display()),
        ));
    }
    Ok(bytes)
}

/// The identity-service URI with a scheme that matches the negotiation type.
pub(super) fn identity_uri(
    raw: &str,
    negotiation: Negotiation,
) -> Result<tonic::transport::Uri, ConfigError> {
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
pub(super) fn info_fields(raw: &str) -> Result<Vec<String>, ConfigError> {
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

/// The Redis connection settings through the client's own parser; `None` without `REDIS_URL`.
pub(super) fn redis(s: &Settings) -> Result<Option<RedisConfig>, ConfigError> {
    RedisConfig::from_lookup(&|var| match var {
        "REDIS_URL" => s.redis_url.as_ref().map(|u| u.expose().to_owned()),
        "REDIS_PASSWORD_FILE" => s.redis_password_file.clone(),
        "REDIS_KEY_PREFIX" => Some(s.redis_key_prefix.clone()),
        "REDIS_TIMEOUT_MS" => Some(s.redis_timeout_ms.clone()),
        _ => None,
    })
}

pub(super) fn fallback(
    s: &Settings,
    redis: Option<&RedisConfig>,
    p: &mut Problems,
) -> Option<Fallback> {
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
    let store = p.take_all(FallbackConfig::from_lookup(
        &|var| match var {
            "FALLBACK_LEDGER" => Some(s.fallback_ledger.clone()),
            "FALLBACK_LEDGER_PATH" => s.fallback_ledger_path.clone(),
            "FALLBACK_LEDGER_TTL_S" => Some(s.fallback_ledger_ttl_s.clone()),
            "FALLBACK_LEDGER_UNAVAILABLE" => Some(s.fallback_ledger_unavailable.clone()),
            "FALLBACK_RELOAD_INTERVAL_S" => Some(s.fallback_reload_interval_s.clone()),
            _ => None,
        },
        redis,
    ))?;
    Some(Fallback {
        tickets_path,
        window: Duration::from_millis(s.fallback_degraded_window_ms),
        low_watermark: s.fallback_low_watermark,
        store,
    })
}

pub(super) fn listen(s: &Settings, p: &mut Problems) -> Option<Listen> {
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

pub(super) fn grpc_tls(s: &Settings, p: &mut Problems) -> Option<GrpcTls> {
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

pub(super) fn telemetry(s: &Settings, p: &mut Problems) -> Option<Telemetry> {
    let log_level = p.take(log_filter(&s.log_level));
    let sampling = p.take(sampling(s.otel_traces_sampler, s.otel_traces_sampler_arg));
    let traces_endpoint = traces_endpoint(
        s.otel_exporter_otlp_traces_endpoint.as_deref(),
        s.otel_exporter_otlp_endpoint.as_deref(),
    )
    .filter(|_| !s.otel_sdk_disabled);
    // The exporter speaks OTLP/HTTP(S); any other scheme would fail on every export.
    if let Some(endpoint) = &traces_endpoint {
        if let Err(e) = crate::tls::check_http_url(&endpoint.url) {
            p.push(endpoint.var, e);
        }
    }
    Some(Telemetry {
        log_level: log_level?,
        log_format: s.log_format,
        otel_enabled: !s.otel_sdk_disabled,
        traces_endpoint,
        service_name: s.otel_service_name.clone(),
        sampling: sampling?,
    })
}

/// `LOG_LEVEL` as `EnvFilter` will read it (comma-separated directives, empty ones skipped),
/// normalised. `EnvFilter` takes a bare word that is not a level for a target name, so
/// `verbose` would silently log nothing at all: here a bare word must be a level, and
/// everything else a `target=level` or `[span{field}]` directive that parses.
pub(super) fn log_filter(raw: &str) -> Result<String, ConfigError> {
    use tracing_subscriber::filter::{Directive, LevelFilter};
    const VAR: &str = "LOG_LEVEL";
    const LEVELS: &str = "trace, debug, info, warn, error, off";
    let mut directives = Vec::new();
    for directive in raw.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if directive.parse::<LevelFilter>().is_ok() {
            directives.push(directive);
            continue;
        }
        let target_or_span = directive.contains('=') || directive.contains('[');
        if !target_or_span {
            return Err(ConfigError::new(
                VAR,
                format!("{directive:?} is not a level ({LEVELS}) nor a target=level directive"),
            ));
        }
        if directive.ends_with('=') {
            return Err(ConfigError::new(
                VAR,
                format!("{directive:?} has no level after '=' ({LEVELS})"),
            ));
        }
        directive.parse::<Directive>().map_err(|e| {
            ConfigError::new(
                VAR,
                format!("{directive:?} is not a valid filter directive ({e}); levels: {LEVELS}"),
            )
        })?;
        directives.push(directive);
    }
    if directives.is_empty() {
        return Ok("info".into());
    }
    Ok(directives.join(","))
}

/// When `OTEL_TRACES_SAMPLER` is unset: every callback from stock Centrifugo is a root span
/// (it sends no `traceparent`), so the spec's default (`parentbased_always_on`) would export
/// every request. 1 % of roots, and whatever a caller decided.
pub(super) const DEFAULT_ROOT_RATIO: f64 = 0.01;

/// The sampler the OpenTelemetry spec's two variables describe. The argument is read by the
/// ratio samplers only; a named ratio sampler without it samples 1.0, as the spec says.
pub(super) fn sampling(
    sampler: Option<TracesSampler>,
    arg: Option<f64>,
) -> Result<Sampling, ConfigError> {
    if let Some(ratio) = arg {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::new(
                "OTEL_TRACES_SAMPLER_ARG",
                format!("{ratio} is not a ratio between 0.0 and 1.0"),
            ));
        }
    }
    let (parent_based, root) = match sampler {
        None => (true, RootSampling::Ratio(arg.unwrap_or(DEFAULT_ROOT_RATIO))),
        Some(TracesSampler::AlwaysOn) => (false, RootSampling::AlwaysOn),
        Some(TracesSampler::AlwaysOff) => (false, RootSampling::AlwaysOff),
        Some(TracesSampler::TraceIdRatio) => (false, RootSampling::Ratio(arg.unwrap_or(1.0))),
        Some(TracesSampler::ParentBasedAlwaysOn) => (true, RootSampling::AlwaysOn),
        Some(TracesSampler::ParentBasedAlwaysOff) => (true, RootSampling::AlwaysOff),
        Some(TracesSampler::ParentBasedTraceIdRatio) => {
            (true, RootSampling::Ratio(arg.unwrap_or(1.0)))
        }
    };
    Ok(Sampling { parent_based, root })
}

/// The signal's own variable is a full URL used as is; the generic one is a base URL that
/// gets the signal's path, as the OTLP exporter spec defines them.
pub(super) fn traces_endpoint(
    traces: Option<&str>,
    generic: Option<&str>,
) -> Option<TracesEndpoint> {
    if let Some(url) = traces.map(str::trim).filter(|v| !v.is_empty()) {
        return Some(TracesEndpoint {
            url: url.to_owned(),
            var: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        });
    }
    generic
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|base| TracesEndpoint {
            url: format!("{}/v1/traces", base.trim_end_matches('/')),
            var: "OTEL_EXPORTER_OTLP_ENDPOINT",
        })
}

pub(super) fn resolve(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| ConfigError::new("LISTEN_HOST", format!("cannot resolve {host:?}: {e}")))?
        .next()
        .ok_or_else(|| ConfigError::new("LISTEN_HOST", format!("{host:?} resolves to no address")))
}

/// hyper refuses a smaller head buffer: its first read is this large.
const MIN_HEADER_BYTES: usize = 8192;

pub(super) fn http_serve(s: &Settings, p: &mut Problems) -> HttpServe {
    positive(
        p,
        "HTTP_HEADER_READ_TIMEOUT_MS",
        s.http_header_read_timeout_ms,
    );
    positive(p, "HTTP_IDLE_TIMEOUT_MS", s.http_idle_timeout_ms);
    if s.http_max_connections == 0 {
        p.push("HTTP_MAX_CONNECTIONS", "must be at least 1");
    }
    if s.http_max_header_bytes < MIN_HEADER_BYTES {
        p.push(
            "HTTP_MAX_HEADER_BYTES",
            format!(
                "must be at least {MIN_HEADER_BYTES} (the HTTP parser reads that much at once)"
            ),
        );
    }
    HttpServe {
        header_read_timeout: Duration::from_millis(s.http_header_read_timeout_ms),
        idle_timeout: Duration::from_millis(s.http_idle_timeout_ms),
        max_connections: s.http_max_connections,
        max_header_bytes: s.http_max_header_bytes,
    }
}
