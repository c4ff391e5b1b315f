//! The cross-field rules of each section, and the ready objects they produce.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{ConfigError, Problems};
use super::value::Secret;
use super::{
    Auth, Fallback, GrpcTls, Identity, Listen, Negotiation, ProxyAuthMode, RootSampling, Sampling,
    Settings, Telemetry, TracesEndpoint, TracesSampler, FALLBACK_TTL_RANGE_S,
};
use crate::meta::ConnectionMeta;

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

pub(super) fn auth(s: &Settings, p: &mut Problems) -> Auth {
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
    Some(Identity {
        tls: uri.scheme_str() == Some("https"),
        uri,
        deadline: Duration::from_millis(s.identity_validate_deadline_ms),
        probe_interval: Duration::from_millis(s.identity_probe_interval_ms),
    })
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

pub(super) fn fallback(s: &Settings, p: &mut Problems) -> Fallback {
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
    Some(Telemetry {
        log_level: log_level?,
        log_format: s.log_format,
        otel_enabled: !s.otel_sdk_disabled,
        traces_endpoint: traces_endpoint(
            s.otel_exporter_otlp_traces_endpoint.as_deref(),
            s.otel_exporter_otlp_endpoint.as_deref(),
        )
        .filter(|_| !s.otel_sdk_disabled),
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
