//! The service's Prometheus metrics: one documented struct, one registry, bounded labels.
//!
//! Labels only ever take values from fixed enums in this crate (proxy types, outcomes, gRPC
//! codes, rejection reasons): never user ids, tickets, channels or raw paths. Every label
//! value that can occur is initialised at startup, so that dashboards and alerts see a 0
//! series from the first scrape instead of an absent one.
//!
//! Besides the service's own `realtime_*` families, the registry serves the conventional
//! `process_*` families (CPU, memory, file descriptors), read from `/proc` at scrape time.

mod process;

use crate::fallback::PoolStatus;
use crate::proxy::{AuthFailure, ConnectOutcome, Outcome, ProxyKind, Transport};
use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// Proxy calls answered, by proxy type and the HTTP status the service decided on (before
    /// `PROXY_HTTP_STATUS_MODE=always_200` rewrites it).
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

/// HTTP statuses the edge answers on every route (and connect's own 500 and 503): the
/// `status` values of `realtime_proxy_requests_total` that exist from the first scrape.
const EDGE_STATUSES: &[&str] = &["200", "400", "401", "408", "413", "429"];
const CONNECT_STATUSES: &[&str] = &["500", "503"];
/// `code` and `source` of `realtime_identity_validate_duration_seconds`.
const IDENTITY_CODES: &[&str] = &[
    "ok",
    "unavailable",
    "deadline_exceeded",
    "cancelled",
    "transport",
];
const IDENTITY_SOURCES: &[&str] = &["request", "probe"];

/// The series of the request path, resolved at startup and found by enum position:
/// `with_label_values` hashes the label values and takes the family's lock on every call,
/// four times per connect. Resolving creates the series, so these families show every label
/// set that can occur from the first scrape. `None` marks a combination that cannot occur (an
/// outcome a proxy type cannot have, a 500 on a route other than connect); it is looked up the
/// slow way should it ever occur, and is not shown before.
#[derive(Default)]
struct Hot {
    /// `[kind][transport]`
    proxy_duration: Vec<Histogram>,
    /// `[outcome][transport]`
    connect_outcomes: Vec<IntCounter>,
    /// `[kind][outcome][transport]`
    proxy_decisions: Vec<Option<IntCounter>>,
    /// `[kind][EDGE_STATUSES ++ CONNECT_STATUSES]`
    proxy_requests: Vec<Option<IntCounter>>,
    /// `[IDENTITY_CODES][IDENTITY_SOURCES]`
    identity_duration: Vec<Histogram>,
}

fn position<T: PartialEq>(all: &[T], value: &T) -> Option<usize> {
    all.iter().position(|v| v == value)
}

impl Hot {
    fn resolve(
        proxy_requests: &IntCounterVec,
        proxy_duration: &HistogramVec,
        connect_outcomes: &IntCounterVec,
        proxy_decisions: &IntCounterVec,
        identity_duration: &HistogramVec,
    ) -> Self {
        let transports = Transport::ALL;
        let mut hot = Self::default();
        for kind in ProxyKind::ALL {
            for transport in transports {
                hot.proxy_duration
                    .push(proxy_duration.with_label_values(&[kind.as_str(), transport.as_str()]));
            }
            for outcome in Outcome::ALL {
                let possible = Outcome::possible_for(*kind).contains(outcome);
                for transport in transports {
                    hot.proxy_decisions.push(possible.then(|| {
                        proxy_decisions.with_label_values(&[
                            kind.as_str(),
                            outcome.as_str(),
                            transport.as_str(),
                        ])
                    }));
                }
            }
            for status in EDGE_STATUSES.iter().chain(CONNECT_STATUSES) {
                let exists = EDGE_STATUSES.contains(status) || *kind == ProxyKind::Connect;
                hot.proxy_requests.push(
                    exists.then(|| proxy_requests.with_label_values(&[kind.as_str(), status])),
                );
            }
        }
        for outcome in ConnectOutcome::ALL {
            for transport in transports {
                hot.connect_outcomes.push(
                    connect_outcomes.with_label_values(&[outcome.as_str(), transport.as_str()]),
                );
            }
        }
        for code in IDENTITY_CODES {
            for source in IDENTITY_SOURCES {
                hot.identity_duration
                    .push(identity_duration.with_label_values(&[code, source]));
            }
        }
        hot
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let mut m = Self {
            proxy_requests: IntCounterVec::new(
                Opts::new(
                    "realtime_proxy_requests_total",
                    "Proxy calls answered, by proxy type and decided HTTP status.",
                ),
                &["proxy", "status"],
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

    /// `realtime_proxy_request_duration_seconds{proxy, transport}`.
    pub fn observe_proxy_duration(&self, kind: ProxyKind, via: Transport, seconds: f64) {
        match (
            position(ProxyKind::ALL, &kind),
            position(Transport::ALL, &via),
        ) {
            (Some(k), Some(t)) => {
                self.hot.proxy_duration[k * Transport::ALL.len() + t].observe(seconds)
            }
            _ => self
                .proxy_duration
                .with_label_values(&[kind.as_str(), via.as_str()])
                .observe(seconds),
        }
    }

    /// `realtime_centrifugo_connect_total{outcome, transport}`.
    pub fn count_connect(&self, outcome: ConnectOutcome, via: Transport) {
        match (
            position(ConnectOutcome::ALL, &outcome),
            position(Transport::ALL, &via),
        ) {
            (Some(o), Some(t)) => self.hot.connect_outcomes[o * Transport::ALL.len() + t].inc(),
            _ => self
                .connect_outcomes
                .with_label_values(&[outcome.as_str(), via.as_str()])
                .inc(),
        }
    }

    /// `realtime_proxy_decisions_total{proxy, outcome, transport}`.
    pub fn count_decision(&self, kind: ProxyKind, outcome: Outcome, via: Transport) {
        let at = match (
            position(ProxyKind::ALL, &kind),
            position(Outcome::ALL, &outcome),
            position(Transport::ALL, &via),
        ) {
            (Some(k), Some(o), Some(t)) => {
                Some((k * Outcome::ALL.len() + o) * Transport::ALL.len() + t)
            }
            _ => None,
        };
        match at.and_then(|at| self.hot.proxy_decisions[at].as_ref()) {
            Some(counter) => counter.inc(),
            None => self
                .proxy_decisions
                .with_label_values(&[kind.as_str(), outcome.as_str(), via.as_str()])
                .inc(),
        }
    }

    /// `realtime_proxy_requests_total{proxy, status}`.
    pub fn count_proxy_request(&self, kind: ProxyKind, status: &str) {
        let statuses = EDGE_STATUSES.len() + CONNECT_STATUSES.len();
        let s = position(EDGE_STATUSES, &status)
            .or_else(|| position(CONNECT_STATUSES, &status).map(|s| EDGE_STATUSES.len() + s));
        let at = position(ProxyKind::ALL, &kind)
            .zip(s)
            .map(|(k, s)| k * statuses + s);
        match at.and_then(|at| self.hot.proxy_requests[at].as_ref()) {
            Some(counter) => counter.inc(),
            None => self
                .proxy_requests
                .with_label_values(&[kind.as_str(), status])
                .inc(),
        }
    }

    /// `realtime_identity_validate_duration_seconds{code, source}`.
    pub fn observe_identity(&self, code: &str, source: &str, seconds: f64) {
        match (
            position(IDENTITY_CODES, &code),
            position(IDENTITY_SOURCES, &source),
        ) {
            (Some(c), Some(s)) => {
                self.hot.identity_duration[c * IDENTITY_SOURCES.len() + s].observe(seconds)
            }
            _ => self
                .identity_duration
                .with_label_values(&[code, source])
                .observe(seconds),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn exposed(m: &Metrics, series: &str) -> bool {
        m.encode().lines().any(|l| l.starts_with(series))
    }

    /// Each fast path lands on the series its labels name, and on no other: a wrong index
    /// would count into a neighbour.
    #[test]
    fn hot_series_are_the_labelled_ones() {
        for &kind in ProxyKind::ALL {
            for &via in Transport::ALL {
                let m = Metrics::new();
                m.observe_proxy_duration(kind, via, 0.001);
                for &other in ProxyKind::ALL {
                    for &t in Transport::ALL {
                        let count = m
                            .proxy_duration
                            .with_label_values(&[other.as_str(), t.as_str()])
                            .get_sample_count();
                        assert_eq!(count, u64::from(other == kind && t == via));
                    }
                }
                for &outcome in Outcome::possible_for(kind) {
                    m.count_decision(kind, outcome, via);
                    let labels = [kind.as_str(), outcome.as_str(), via.as_str()];
                    assert_eq!(m.proxy_decisions.with_label_values(&labels).get(), 1);
                }
            }
            for status in EDGE_STATUSES.iter().chain(CONNECT_STATUSES) {
                let m = Metrics::new();
                m.count_proxy_request(kind, status);
                let counter = m.proxy_requests.with_label_values(&[kind.as_str(), status]);
                assert_eq!(counter.get(), 1, "{kind:?} {status}");
            }
        }
        for &outcome in ConnectOutcome::ALL {
            for &via in Transport::ALL {
                let m = Metrics::new();
                m.count_connect(outcome, via);
                for &other in ConnectOutcome::ALL {
                    for &t in Transport::ALL {
                        let labels = [other.as_str(), t.as_str()];
                        let value = m.connect_outcomes.with_label_values(&labels).get();
                        assert_eq!(value, u64::from(other == outcome && t == via));
                    }
                }
            }
        }
        for code in IDENTITY_CODES {
            for source in IDENTITY_SOURCES {
                let m = Metrics::new();
                m.observe_identity(code, source, 0.002);
                let histogram = m.identity_duration.with_label_values(&[code, source]);
                assert_eq!(histogram.get_sample_count(), 1);
            }
        }
    }

    /// Every label set that can occur is shown from the first scrape, and none that cannot.
    #[test]
    fn possible_label_sets_exist_before_any_call() {
        let m = Metrics::new();
        assert!(exposed(
            &m,
            r#"realtime_proxy_requests_total{proxy="subscribe",status="429"} 0"#
        ));
        assert!(exposed(
            &m,
            r#"realtime_proxy_requests_total{proxy="connect",status="503"} 0"#
        ));
        assert!(!exposed(
            &m,
            r#"realtime_proxy_requests_total{proxy="subscribe",status="503"}"#
        ));
        assert!(exposed(
            &m,
            r#"realtime_proxy_request_duration_seconds_count{proxy="rpc",transport="grpc"} 0"#
        ));
        assert!(exposed(
            &m,
            r#"realtime_identity_validate_duration_seconds_count{code="cancelled",source="probe"} 0"#
        ));
        for &kind in ProxyKind::ALL {
            for &outcome in Outcome::ALL {
                let series = format!(
                    "realtime_proxy_decisions_total{{outcome=\"{}\",proxy=\"{}\",transport=\"http\"}}",
                    outcome.as_str(),
                    kind.as_str()
                );
                let possible = Outcome::possible_for(kind).contains(&outcome);
                assert_eq!(exposed(&m, &series), possible, "{series}");
            }
        }
        // An impossible combination still counts if it ever happens.
        m.count_proxy_request(ProxyKind::Subscribe, "503");
        assert!(exposed(
            &m,
            r#"realtime_proxy_requests_total{proxy="subscribe",status="503"} 1"#
        ));
    }
}
