//! Telemetry: `LOG_LEVEL` as a filter that cannot silently log nothing, the sampler the
//! OpenTelemetry spec defines, and which OTLP endpoint wins.

use super::outgoing;
use super::*;

pub(in crate::config) fn telemetry(s: &Settings, p: &mut Problems) -> Option<Telemetry> {
    let log_level = p.take(log_filter(&s.log_level));
    let sampling = p.take(sampling(s.otel_traces_sampler, s.otel_traces_sampler_arg));
    let protocol = s
        .otel_exporter_otlp_traces_protocol
        .or(s.otel_exporter_otlp_protocol)
        .unwrap_or(OtlpProtocol::HttpProtobuf);
    let timeout_ms = [
        (
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            s.otel_exporter_otlp_traces_timeout,
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", s.otel_exporter_otlp_timeout),
    ]
    .into_iter()
    .find_map(|(var, ms)| ms.map(|ms| (var, ms)));
    if let Some((var, ms)) = timeout_ms {
        positive(p, var, ms);
    }
    let timeout = Duration::from_millis(timeout_ms.map_or(DEFAULT_EXPORT_TIMEOUT_MS, |(_, ms)| ms));
    // The exporter reads these itself; a malformed list would be dropped without a word.
    for (var, headers) in [
        ("OTEL_EXPORTER_OTLP_HEADERS", &s.otel_exporter_otlp_headers),
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            &s.otel_exporter_otlp_traces_headers,
        ),
    ] {
        if let Some(headers) = headers {
            if let Err(e) = outgoing::key_values(headers.expose_secret()) {
                p.push(var, e);
            }
        }
    }
    let mut resource_attributes = p
        .take(
            outgoing::key_values(&s.otel_resource_attributes)
                .map_err(|e| ConfigError::new("OTEL_RESOURCE_ATTRIBUTES", e)),
        )
        .unwrap_or_default();
    let from_attributes = resource_attributes
        .iter()
        .position(|(k, _)| k == "service.name")
        .map(|at| resource_attributes.remove(at).1);
    let service_name = s
        .otel_service_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .or(from_attributes)
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let traces_endpoint = traces_endpoint(
        s.otel_exporter_otlp_traces_endpoint.as_deref(),
        s.otel_exporter_otlp_endpoint.as_deref(),
        protocol,
    )
    .filter(|_| !s.otel_sdk_disabled)
    .map(|(url, var)| {
        // Both exporters speak HTTP(S) (gRPC is HTTP/2); any other scheme would fail on
        // every export.
        if let Err(e) = crate::tls::check_http_url(&url) {
            p.push(var, e);
        }
        let tls = outgoing::otlp_tls(s, &url, p);
        TracesEndpoint {
            url,
            var,
            protocol,
            timeout,
            tls,
        }
    });
    Some(Telemetry {
        log_level: log_level?,
        log_format: s.log_format,
        otel_enabled: !s.otel_sdk_disabled,
        traces_endpoint,
        service_name,
        resource_attributes,
        sampling: sampling?,
    })
}

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub(in crate::config) const DEFAULT_SERVICE_NAME: &str = "realtime-service";

/// One export's bound when `OTEL_EXPORTER_OTLP_TIMEOUT` is unset: below the spec's 10 s, so
/// the last flush fits the 5 s the manifests' shutdown budget holds for it.
pub(in crate::config) const DEFAULT_EXPORT_TIMEOUT_MS: u64 = 5000;

/// `LOG_LEVEL` as `EnvFilter` will read it (comma-separated directives, empty ones skipped),
/// normalised. `EnvFilter` takes a bare word that is not a level for a target name, so
/// `verbose` would silently log nothing at all: here a bare word must be a level, and
/// everything else a `target=level` or `[span{field}]` directive that parses.
pub(in crate::config) fn log_filter(raw: &str) -> Result<String, ConfigError> {
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
pub(in crate::config) fn sampling(
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
/// gets the signal's path over OTLP/HTTP, and is the collector's address as it is over gRPC,
/// as the OTLP exporter spec defines them. Returns the URL and the variable it came from.
pub(in crate::config) fn traces_endpoint(
    traces: Option<&str>,
    generic: Option<&str>,
    protocol: OtlpProtocol,
) -> Option<(String, &'static str)> {
    if let Some(url) = traces.map(str::trim).filter(|v| !v.is_empty()) {
        return Some((url.to_owned(), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
    }
    let base = generic.map(str::trim).filter(|v| !v.is_empty())?;
    let url = match protocol {
        OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        OtlpProtocol::Grpc => base.to_owned(),
    };
    Some((url, "OTEL_EXPORTER_OTLP_ENDPOINT"))
}
