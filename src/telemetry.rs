//! Logging and tracing, set up once at startup.
//!
//! One `tracing` subscriber built from layers: an `EnvFilter` from `LOG_LEVEL`, a text or
//! JSON formatter (`LOG_FORMAT`), and an OpenTelemetry layer that exports spans over OTLP/HTTP
//! or HTTPS (`otlp`: failures are counted and logged) when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not `true`; the Rust
//! SDK does not read that variable itself). The W3C trace-context propagator is installed
//! explicitly: the SDK's default global propagator does nothing, and `traceparent` would
//! silently vanish between Centrifugo's caller and identity-service.
//!
//! Logging rules: a readable message plus fields; log once, at the boundary; never tickets,
//! secrets, signatures or request bodies.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, Telemetry};

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

    let filter = EnvFilter::try_new(&settings.log_level)
        .map_err(|e| TelemetryError::LogLevel(e.to_string()))?;
    let fmt = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
    };

    let provider = tracer_provider(settings)?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer().with_tracer(p.tracer(settings.service_name.clone()))
    });

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Install(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

/// The W3C trace-context propagator, installed globally (the SDK's default does nothing).
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

fn tracer_provider(settings: &Telemetry) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let Some(endpoint) = &settings.otlp_endpoint else {
        return Ok(None);
    };
    // The variable is the collector's base URL (as the OTel spec defines it); the HTTP
    // exporter wants the signal's own path.
    let url = format!("{}/v1/traces", endpoint.trim().trim_end_matches('/'));
    let exporter = crate::otlp::span_exporter(url, std::time::Duration::from_secs(5))
        .map_err(TelemetryError::Exporter)?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // Follow the caller's sampling decision; sample new root traces at the configured ratio.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampler_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    Ok(Some(provider))
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("LOG_LEVEL: {0}")]
    LogLevel(String),
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}
