//! Logging and tracing, set up once at startup.
//!
//! One `tracing` subscriber built from layers: a text or JSON formatter (`LOG_FORMAT`)
//! filtered by `LOG_LEVEL` (checked by the configuration), and an OpenTelemetry layer with a
//! filter of its own (this crate's spans at info), so the log level never decides what is
//! traced.
//! The OpenTelemetry layer is installed when something uses it (an exporter, or JSON logs),
//! unless `OTEL_SDK_DISABLED=true` (the Rust SDK does not read that variable itself): it
//! gives every request span a trace id for the logs, and continues a caller's `traceparent`
//! to identity-service. Spans are exported over OTLP (HTTP/protobuf or gRPC, plain or TLS;
//! `otlp`: failures are counted and logged) only when an endpoint is configured, sampled as
//! `OTEL_TRACES_SAMPLER` says, with the resource `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_SERVICE_NAME` and the build's `service.version` describe.
//!
//! The W3C trace-context propagator is installed explicitly: the SDK's default global
//! propagator does nothing, and `traceparent` would silently vanish between Centrifugo's
//! caller and identity-service.
//!
//! Logging rules: a readable message plus fields; log once, at the boundary; never tickets,
//! secrets, signatures or request bodies.

use std::fmt;
use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, RootSampling, Sampling, Telemetry};

/// Flushes and shuts the tracer down when the service exits.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports what is buffered; called last on shutdown.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("realtime-service: flushing traces failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber and propagator. Call once, from `main`.
pub fn init(settings: &Telemetry) -> Result<TelemetryGuard, TelemetryError> {
    install_propagator();
    let provider = otel_layer_used(settings)
        .then(|| tracer_provider(settings))
        .transpose()?;
    let dispatch = subscriber(
        settings,
        provider.as_ref(),
        std::io::stdout,
        std::io::stdout().is_terminal(),
    )?;
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|e| TelemetryError::Install(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

/// Whether anything uses the OpenTelemetry layer: an exporter, or JSON lines that carry its
/// ids. It costs about 1.8 us of CPU per span (two per connect, a few percent of a request),
/// so a text-logging service without an exporter goes without it, as with
/// `OTEL_SDK_DISABLED=true` (no ids, and no `traceparent` passed on).
fn otel_layer_used(settings: &Telemetry) -> bool {
    settings.otel_enabled
        && (settings.traces_endpoint.is_some() || settings.log_format == LogFormat::Json)
}

/// The W3C header that carries a caller's trace. Without it the propagator finds nothing, so
/// the transports skip extraction: a global lock and a header scan per call, for a context
/// that would be empty.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C trace-context propagator, installed globally (the SDK's default does nothing).
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// The whole subscriber, writing log lines to `writer`; colours only if `ansi` (a terminal).
fn subscriber<W>(
    settings: &Telemetry,
    provider: Option<&SdkTracerProvider>,
    writer: W,
    ansi: bool,
) -> Result<Dispatch, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // The configuration has checked and normalised the directives already.
    let mut filter = EnvFilter::try_new(&settings.log_level)
        .map_err(|e| TelemetryError::LogLevel(e.to_string()))?;
    // h2 WARNs once for every connection it closes for resetting too many streams, which a
    // peer can repeat at will; the gRPC listener logs those itself, rate-limited. h2's own
    // lines stay available by naming it in LOG_LEVEL.
    if !names_target(&settings.log_level, "h2") {
        // A fixed directive that parses.
        if let Ok(quiet) = "h2=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let dispatch_slot = DispatchSlot::default();
    let fmt = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .event_format(JsonWithTraceIds {
                inner: tracing_subscriber::fmt::format().json().flatten_event(true),
                dispatch: dispatch_slot.clone(),
            })
            .boxed(),
    };
    // Each layer filters on its own: `LOG_LEVEL=warn` must not switch off the request spans
    // (info) that are exported and whose ids the warnings carry.
    let otel = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(settings.service_name.clone()))
            .with_filter(Targets::new().with_target(env!("CARGO_CRATE_NAME"), LevelFilter::INFO))
    });
    let dispatch = Dispatch::new(
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .with(otel),
    );
    // A formatter cannot ask for the current dispatcher while an event is being dispatched
    // (tracing's re-entrancy guard answers "none" then), so it is handed its own.
    let _ = dispatch_slot.0.set(dispatch.downgrade());
    Ok(dispatch)
}

/// Whether a directive of `log_level` is about `target` or a module of it.
fn names_target(log_level: &str, target: &str) -> bool {
    log_level.split(',').any(|directive| {
        directive
            .strip_prefix(target)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['=', ':', '[']))
    })
}

/// The tracer provider: always there (ids for logs, propagation), exporting only with an
/// endpoint.
fn tracer_provider(settings: &Telemetry) -> Result<SdkTracerProvider, TelemetryError> {
    // Built from the configuration alone (no detector reads the process environment behind
    // its back): OTEL_RESOURCE_ATTRIBUTES, then service.name as resolved (OTEL_SERVICE_NAME
    // over the attributes' service.name) and service.version of this build unless given.
    let mut attributes: Vec<KeyValue> = settings
        .resource_attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    if !settings
        .resource_attributes
        .iter()
        .any(|(k, _)| k == "service.version")
    {
        attributes.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    let resource = Resource::builder_empty()
        .with_attributes(attributes)
        .with_service_name(settings.service_name.clone())
        .build();
    let Some(endpoint) = &settings.traces_endpoint else {
        // Nothing is exported, so no root is worth recording; a caller's sampled flag is
        // still passed on, so that identity-service's part of its trace is kept.
        return Ok(SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .with_resource(resource)
            .build());
    };
    let exporter = crate::otlp::span_exporter(endpoint)
        .map_err(|e| TelemetryError::Exporter(endpoint.var, e))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(settings.sampling))
        .with_resource(resource)
        .build())
}

/// The SDK sampler for the configured sampling.
fn sampler(sampling: Sampling) -> Sampler {
    let root = match sampling.root {
        RootSampling::AlwaysOn => Sampler::AlwaysOn,
        RootSampling::AlwaysOff => Sampler::AlwaysOff,
        RootSampling::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
    };
    if sampling.parent_based {
        Sampler::ParentBased(Box::new(root))
    } else {
        root
    }
}

/// Set once the subscriber exists; weak, because the subscriber owns the formatter.
#[derive(Clone, Default)]
struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

/// The JSON line of tracing-subscriber, with `trace_id` and `span_id` (W3C hex) of the
/// OpenTelemetry span the event belongs to, when there is one.
struct JsonWithTraceIds {
    inner: Format<Json>,
    dispatch: DispatchSlot,
}

impl JsonWithTraceIds {
    fn ids<S, N>(&self, ctx: &FmtContext<'_, S, N>, event: &Event<'_>) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        // The span as the registry knows it, not as this layer's filter sees it: at
        // `LOG_LEVEL=warn` the request span is not logged, but its warnings carry its ids.
        let span = match event.parent() {
            Some(explicit) => explicit.clone(),
            None if event.is_contextual() => ctx.current_span().id()?.clone(),
            None => return None,
        };
        let dispatch = self.dispatch.0.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(&span, &dispatch)?;
        let otel_span = cx.span();
        let span_context = otel_span.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = self.ids(ctx, event) else {
            return self.inner.format_event(ctx, writer, event);
        };
        // The inner line is one JSON object: the ids go first (hex, nothing to escape).
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                r#"{{"trace_id":"{trace_id}","span_id":"{span_id}",{rest}"#
            ),
            None => writer.write_str(&line),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("LOG_LEVEL: {0}")]
    LogLevel(String),
    #[error("{0}: cannot build the OTLP exporter: {1}")]
    Exporter(&'static str, String),
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::sync::Mutex;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    #[test]
    fn samplers_become_the_sdk_samplers_of_the_same_name() {
        let cases = [
            ("always_on", "AlwaysOn"),
            ("always_off", "AlwaysOff"),
            ("traceidratio", "TraceIdRatioBased(1.0)"),
            ("parentbased_always_on", "ParentBased(AlwaysOn)"),
            ("parentbased_always_off", "ParentBased(AlwaysOff)"),
            (
                "parentbased_traceidratio",
                "ParentBased(TraceIdRatioBased(1.0))",
            ),
        ];
        for (name, sdk) in cases {
            let c = config(&[("OTEL_TRACES_SAMPLER", name)]);
            assert_eq!(format!("{:?}", sampler(c.sampling)), sdk, "{name}");
        }
        assert_eq!(
            format!("{:?}", sampler(config(&[]).sampling)),
            "ParentBased(TraceIdRatioBased(0.01))"
        );
    }

    #[test]
    fn the_otel_layer_is_installed_only_when_something_uses_it() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let disabled = ("OTEL_SDK_DISABLED", "true");
        for (env, used) in [
            (vec![], false),
            (vec![("LOG_FORMAT", "json")], true),
            (vec![endpoint], true),
            (vec![endpoint, ("LOG_FORMAT", "json"), disabled], false),
            (vec![("LOG_FORMAT", "json"), disabled], false),
        ] {
            assert_eq!(otel_layer_used(&config(&env)), used, "{env:?}");
        }
    }

    fn config(extra: &[(&str, &str)]) -> Telemetry {
        let mut pairs = vec![("CENTRIFUGO_PROXY_AUTH", "none")];
        pairs.extend_from_slice(extra);
        Config::from_pairs(pairs).expect("valid").telemetry
    }

    /// Log lines written by a subscriber built as `init` builds it.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into()
        }
    }

    fn capture(settings: &Telemetry, ansi: bool) -> (Dispatch, Capture) {
        let provider = tracer_provider(settings).expect("provider");
        let capture = Capture::default();
        let writer = capture.clone();
        let dispatch =
            subscriber(settings, Some(&provider), move || writer.clone(), ansi).expect("builds");
        (dispatch, capture)
    }

    fn line<'a>(lines: &'a [serde_json::Value], message: &str) -> &'a serde_json::Value {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no line {message:?} in {lines:?}"))
    }

    #[test]
    fn json_lines_carry_the_otel_ids_of_their_span_without_an_exporter() {
        let (dispatch, capture) = capture(&config(&[("LOG_FORMAT", "json")]), false);
        let (request, child) = tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("outside");
            let request = tracing::info_span!("request");
            let child = request.in_scope(|| {
                tracing::info!("inside");
                let child = tracing::info_span!("child");
                child.in_scope(|| tracing::warn!(field = 7, "nested"));
                child
            });
            (request.context(), child.context())
        });
        let lines: Vec<serde_json::Value> = capture
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let outside = line(&lines, "outside");
        assert!(outside.get("trace_id").is_none(), "{outside}");
        let request = request.span().span_context().clone();
        let child = child.span().span_context().clone();
        assert!(request.is_valid() && child.is_valid());
        let inside = line(&lines, "inside");
        assert_eq!(
            inside["trace_id"],
            request.trace_id().to_string(),
            "{inside}"
        );
        assert_eq!(inside["span_id"], request.span_id().to_string(), "{inside}");
        assert_eq!(inside["level"], "INFO");
        let nested = line(&lines, "nested");
        assert_eq!(
            nested["trace_id"],
            request.trace_id().to_string(),
            "same trace"
        );
        assert_eq!(
            nested["span_id"],
            child.span_id().to_string(),
            "its own span"
        );
        assert_eq!(
            nested["field"], 7,
            "the event's fields stay flattened: {nested}"
        );
        let hex = |v: &serde_json::Value, len| {
            v.as_str()
                .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        assert!(hex(&inside["trace_id"], 32) && hex(&inside["span_id"], 16));
    }

    #[test]
    fn warnings_carry_the_ids_of_a_span_the_log_level_hides() {
        let settings = config(&[("LOG_FORMAT", "json"), ("LOG_LEVEL", "warn")]);
        let (dispatch, capture) = capture(&settings, false);
        let request = tracing::dispatcher::with_default(&dispatch, || {
            let request = tracing::info_span!("request");
            request.in_scope(|| {
                tracing::info!("hidden");
                tracing::warn!("shown");
            });
            request.context()
        });
        let lines: Vec<serde_json::Value> = capture
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let shown = line(&lines, "shown");
        let request = request.span().span_context().clone();
        assert!(
            request.is_valid(),
            "the span exists for OpenTelemetry at warn"
        );
        assert_eq!(shown["trace_id"], request.trace_id().to_string(), "{shown}");
        assert_eq!(shown["span_id"], request.span_id().to_string(), "{shown}");
    }

    #[test]
    fn h2s_own_warnings_are_off_unless_log_level_names_h2() {
        for (level, shown) in [("info", false), ("debug", false), ("info,h2=warn", true)] {
            let (dispatch, capture) = capture(&config(&[("LOG_LEVEL", level)]), false);
            tracing::dispatcher::with_default(&dispatch, || {
                tracing::warn!(target: "h2::proto::streams", "reset streams reached limit");
                tracing::warn!("ours");
            });
            let text = capture.text();
            assert_eq!(text.contains("reset streams"), shown, "{level}: {text}");
            assert!(text.contains("ours"), "{level}: {text}");
        }
        assert!(names_target("warn,h2::proto=debug", "h2"));
        assert!(!names_target("h2o=debug,warn", "h2"));
    }

    #[test]
    fn text_lines_are_coloured_only_for_a_terminal() {
        let settings = config(&[("LOG_FORMAT", "text")]);
        for ansi in [false, true] {
            let (dispatch, capture) = capture(&settings, ansi);
            tracing::dispatcher::with_default(&dispatch, || tracing::warn!("plain"));
            let text = capture.text();
            assert!(text.contains("plain"), "{text}");
            assert_eq!(text.contains('\u{1b}'), ansi, "ansi={ansi}: {text:?}");
        }
    }
}
