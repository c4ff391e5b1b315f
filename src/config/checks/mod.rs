//! The cross-field rules of each section, and the ready objects they produce. identity-service
//! (address and TLS files) and telemetry (log filter, sampler, endpoints) have files of their own.

mod identity;
mod outgoing;
mod telemetry;

pub(in crate::config) use identity::identity;
pub(in crate::config) use outgoing::rpc_tls;
pub(in crate::config) use telemetry::telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::secrets::{check_secret, load_file, SecretFiles, MIN_SECRET_BYTES};
use super::value::Secret;
use super::{
    Auth, ClientIdentity, Fallback, GrpcTls, HttpServe, Identity, IdentityTls, Listen, Negotiation,
    OtlpProtocol, OutgoingTls, ProxyAuthMode, RootSampling, Sampling, Settings, Telemetry,
    TracesEndpoint, TracesSampler, FALLBACK_TTL_RANGE_S,
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
        "REDIS_TLS_CA_PATH" => s.redis_tls_ca_path.clone(),
        "REDIS_TLS_CERT_PATH" => s.redis_tls_cert_path.clone(),
        "REDIS_TLS_KEY_PATH" => s.redis_tls_key_path.clone(),
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
        grpc_max_age: (s.grpc_proxy_max_connection_age_s > 0)
            .then(|| Duration::from_secs(s.grpc_proxy_max_connection_age_s)),
        grpc_max_age_grace: Duration::from_secs(s.grpc_proxy_max_connection_age_grace_s),
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
