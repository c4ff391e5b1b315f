//! The service's Prometheus metrics: one documented struct, one registry, bounded labels.
//!
//! Labels only ever take values from fixed enums in this crate (proxy types, outcomes, gRPC
//! codes, rejection reasons): never user ids, tickets, channels or raw paths. Every label
//! value that can occur is initialised at startup, so that dashboards and alerts see a 0
//! series from the first scrape instead of an absent one.
//!
//! Besides the service's own `realtime_*` families, the registry serves the conventional
//! `process_*` families (CPU, memory, file descriptors), read from `/proc` at scrape time.

mod hot;
mod process;

use std::sync::Arc;

use crate::fallback::PoolStatus;
use crate::proxy::AuthFailure;
use hot::Hot;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The git commit the binary was built from (12 hex digits), or `unknown`: set by
/// `build.rs` (from `git`, or `REALTIME_GIT_COMMIT` where there is no checkout).
pub const GIT_COMMIT: &str = env!("REALTIME_GIT_COMMIT");

/// Buckets for local request handling and identity calls, in seconds. Proxy decisions take
/// microseconds and identity calls milliseconds, with the deadline (2.5 s by default) and
/// Centrifugo's timeout (1-3 s) as the interesting upper edges.
/// What a poll of the proxy secret files did (`realtime_proxy_secret_reloads_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretReload {
    /// The files changed and the new secrets are in use.
    Applied,
    /// The files break the rules (unreadable, empty, too short); the last good secrets stay.
    Rejected,
}

impl SecretReload {
    pub const ALL: &'static [Self] = &[Self::Applied, Self::Rejected];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Rejected => "rejected",
        }
    }
}

/// OTLP span batches that could not be exported. Process-wide, like the tracer provider that
/// counts into it (set up before any `Metrics` exists); every registry exports it.
pub static OTEL_EXPORT_FAILURES: std::sync::LazyLock<IntCounter> = std::sync::LazyLock::new(|| {
    IntCounter::new(
            "realtime_otel_export_failures_total",
            "OTLP span batches the exporter failed to deliver (collector unreachable, TLS or HTTP error).",
        )
        .expect("static metric definition")
});

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
    2.5, 3.0, 5.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Proxy calls answered, by proxy type, the HTTP status the service decided on (before
    /// `PROXY_HTTP_STATUS_MODE=always_200` rewrites it; for a gRPC call the status the same
    /// answer has over HTTP) and transport.
    pub proxy_requests: IntCounterVec,
    /// Time to answer a proxy call, by proxy type and transport.
    pub proxy_duration: HistogramVec,
    /// Connect decisions by outcome and transport.
    pub connect_outcomes: IntCounterVec,
    /// Decisions of the non-connect proxies, by proxy type, outcome and transport.
    pub proxy_decisions: IntCounterVec,
    /// identity-service Validate calls, by gRPC code (`transport` when no answer arrived) and
    /// by who called (`request` or the background `probe`).
    pub identity_duration: HistogramVec,
    /// 1 while identity-service has been unreachable for longer than the degraded window.
    pub identity_outage: IntGauge,
    /// Failed Validate calls in the current unbroken streak.
    pub identity_failures: IntGauge,
    /// Fallback tickets left in this replica's pool.
    pub pool_size: IntGauge,
    /// `FALLBACK_LOW_WATERMARK`, exported so alerts can compare without hard-coding it.
    pub pool_low_watermark: IntGauge,
    /// 1 for the pool's load status (disabled, loaded, missing, unreadable, empty).
    pub pool_status: IntGaugeVec,
    /// Calls refused by request authentication, by reason (missing, malformed, mismatch).
    pub auth_rejections: IntCounterVec,
    /// Constant 1, labelled with the running version and git commit.
    pub build_info: GaugeVec,
    /// Seconds since the current identity failure streak began; 0 without one.
    pub outage_age: Gauge,
    /// Polls of the proxy secret files, by result.
    pub secret_reloads: IntCounterVec,
    /// The series every proxy call touches, looked up once.
    hot: Arc<Hot>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let mut m = Self {
            proxy_requests: IntCounterVec::new(
                Opts::new(
                    "realtime_proxy_requests_total",
                    "Proxy calls answered, by proxy type, decided HTTP status (over gRPC: the status the same answer has over HTTP) and transport.",
                ),
                &["proxy", "status", "transport"],
            )
            .expect("static metric definition"),
            proxy_duration: HistogramVec::new(
                HistogramOpts::new(
                    "realtime_proxy_request_duration_seconds",
                    "Time to answer a Centrifugo proxy call, by proxy type and transport.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["proxy", "transport"],
            )
            .expect("static metric definition"),
            connect_outcomes: IntCounterVec::new(
                Opts::new(
                    "realtime_centrifugo_connect_total",
                    "Connect proxy decisions, by outcome and transport.",
                ),
                &["outcome", "transport"],
            )
            .expect("static metric definition"),
            proxy_decisions: IntCounterVec::new(
                Opts::new(
                    "realtime_proxy_decisions_total",
                    "Decisions of the refresh, subscribe, publish, sub_refresh and rpc proxies, by outcome and transport.",
                ),
                &["proxy", "outcome", "transport"],
            )
            .expect("static metric definition"),
            identity_duration: HistogramVec::new(
                HistogramOpts::new(
                    "realtime_identity_validate_duration_seconds",
                    "identity-service Validate call duration, by gRPC code and caller.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["code", "source"],
            )
            .expect("static metric definition"),
            identity_outage: IntGauge::new(
                "realtime_identity_outage",
                "1 while identity-service has been unreachable longer than the degraded window.",
            )
            .expect("static metric definition"),
            identity_failures: IntGauge::new(
                "realtime_identity_consecutive_failures",
                "Failed identity-service calls in the current unbroken failure streak.",
            )
            .expect("static metric definition"),
            outage_age: Gauge::new(
                "realtime_identity_outage_age_seconds",
                "Seconds since the current identity-service failure streak began; 0 without one.",
            )
            .expect("static metric definition"),
            pool_size: IntGauge::new(
                "realtime_fallback_pool_size",
                "Fallback tickets left in this replica's pool.",
            )
            .expect("static metric definition"),
            pool_low_watermark: IntGauge::new(
                "realtime_fallback_pool_low_watermark",
                "Configured FALLBACK_LOW_WATERMARK (0 = no warning).",
            )
            .expect("static metric definition"),
            pool_status: IntGaugeVec::new(
                Opts::new(
                    "realtime_fallback_pool_status",
                    "1 for the fallback pool's load status.",
                ),
                &["status"],
            )
            .expect("static metric definition"),
            auth_rejections: IntCounterVec::new(
                Opts::new(
                    "realtime_proxy_signature_rejections_total",
                    "Proxy calls refused by request authentication, by reason.",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
            build_info: GaugeVec::new(
                Opts::new(
                    "realtime_build_info",
                    "Constant 1, labelled with the version and the git commit of the build.",
                ),
                &["version", "commit"],
            )
            .expect("static metric definition"),
            secret_reloads: IntCounterVec::new(
                Opts::new(
                    "realtime_proxy_secret_reloads_total",
                    "Proxy secret file polls that applied changed secrets, or rejected the files (counted on every poll while they are bad).",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            registry,
            // Resolved below, once the families exist.
            hot: Arc::default(),
        };
        m.register_all();
        m.initialise_label_sets();
        m.hot = Arc::new(Hot::resolve(
            &m.proxy_requests,
            &m.proxy_duration,
            &m.connect_outcomes,
            &m.proxy_decisions,
            &m.identity_duration,
        ));
        m
    }

    fn register_all(&self) {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.proxy_requests.clone()),
            Box::new(self.proxy_duration.clone()),
            Box::new(self.connect_outcomes.clone()),
            Box::new(self.proxy_decisions.clone()),
            Box::new(self.identity_duration.clone()),
            Box::new(self.identity_outage.clone()),
            Box::new(self.identity_failures.clone()),
            Box::new(self.outage_age.clone()),
            Box::new(self.pool_size.clone()),
            Box::new(self.pool_low_watermark.clone()),
            Box::new(self.pool_status.clone()),
            Box::new(self.auth_rejections.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.secret_reloads.clone()),
            Box::new(OTEL_EXPORT_FAILURES.clone()),
            Box::new(process::ProcessCollector::new()),
        ];
        for c in collectors {
            self.registry
                .register(c)
                .expect("each metric is registered once");
        }
    }

    /// Every label set of the families outside [`Hot`] (resolving those creates theirs).
    fn initialise_label_sets(&self) {
        for reason in AuthFailure::ALL {
            self.auth_rejections.with_label_values(&[reason.as_str()]);
        }
        for status in PoolStatus::ALL {
            self.pool_status.with_label_values(&[status.as_str()]);
        }
        for result in SecretReload::ALL {
            self.secret_reloads.with_label_values(&[result.as_str()]);
        }
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), GIT_COMMIT])
            .set(1.0);
    }

    /// Sets the pool status gauge to 1 for `status` and 0 for the others.
    pub fn set_pool_status(&self, status: PoolStatus) {
        for s in PoolStatus::ALL {
            self.pool_status
                .with_label_values(&[s.as_str()])
                .set(i64::from(s == status));
        }
    }

    /// The registry components with metrics of their own (the HTTP server loop, the in-flight
    /// bound) register into, so one scrape shows everything.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn count_secret_reload(&self, result: SecretReload) {
        self.secret_reloads
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// Prometheus text exposition of everything registered.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
