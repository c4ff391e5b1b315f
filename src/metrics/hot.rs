//! The series every proxy call touches, resolved once at startup and found by enum position
//! (`with_label_values` hashes the label values and takes the family's lock on every call,
//! four times per connect), and the methods the request path counts with.

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

use super::Metrics;
use crate::proxy::{ConnectOutcome, Outcome, ProxyKind, Transport};

/// HTTP statuses the edge answers on every route (and connect's own 500 and 503, and the two
/// only a gRPC call can end with): the `status` values of `realtime_proxy_requests_total`
/// that exist from the first scrape. A gRPC call is counted with the status the same
/// decision has over HTTP, so one expression (`status=~"5.."`) reads both transports.
const EDGE_STATUSES: &[&str] = &["200", "400", "401", "408", "413", "429"];
const CONNECT_STATUSES: &[&str] = &["500", "503"];
/// 499: the client reset the stream (nginx's "client closed request"); 504: the call's
/// `grpc-timeout` expired before its answer.
const GRPC_STATUSES: &[&str] = &["499", "504"];
const STATUSES: [&[&str]; 3] = [EDGE_STATUSES, CONNECT_STATUSES, GRPC_STATUSES];
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
pub(super) struct Hot {
    /// `[kind][transport]`
    proxy_duration: Vec<Histogram>,
    /// `[outcome][transport]`
    connect_outcomes: Vec<IntCounter>,
    /// `[kind][outcome][transport]`
    proxy_decisions: Vec<Option<IntCounter>>,
    /// `[kind][EDGE_STATUSES ++ CONNECT_STATUSES ++ GRPC_STATUSES][transport]`
    proxy_requests: Vec<Option<IntCounter>>,
    /// `[IDENTITY_CODES][IDENTITY_SOURCES]`
    identity_duration: Vec<Histogram>,
}

fn position<T: PartialEq>(all: &[T], value: &T) -> Option<usize> {
    all.iter().position(|v| v == value)
}

impl Hot {
    pub(super) fn resolve(
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
            for status in STATUSES.iter().flat_map(|s| s.iter()) {
                for transport in transports {
                    let exists = EDGE_STATUSES.contains(status)
                        || (CONNECT_STATUSES.contains(status) && *kind == ProxyKind::Connect)
                        || (GRPC_STATUSES.contains(status) && *transport == Transport::Grpc);
                    hot.proxy_requests.push(exists.then(|| {
                        proxy_requests.with_label_values(&[
                            kind.as_str(),
                            status,
                            transport.as_str(),
                        ])
                    }));
                }
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

    /// `realtime_proxy_requests_total{proxy, status, transport}`.
    pub fn count_proxy_request(&self, kind: ProxyKind, status: &str, via: Transport) {
        let statuses: usize = STATUSES.iter().map(|s| s.len()).sum();
        let s = STATUSES
            .iter()
            .flat_map(|s| s.iter())
            .position(|s| *s == status);
        let at = match (
            position(ProxyKind::ALL, &kind),
            s,
            position(Transport::ALL, &via),
        ) {
            (Some(k), Some(s), Some(t)) => Some((k * statuses + s) * Transport::ALL.len() + t),
            _ => None,
        };
        match at.and_then(|at| self.hot.proxy_requests[at].as_ref()) {
            Some(counter) => counter.inc(),
            None => self
                .proxy_requests
                .with_label_values(&[kind.as_str(), status, via.as_str()])
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
            for status in STATUSES.iter().flat_map(|s| s.iter()) {
                for &via in Transport::ALL {
                    let m = Metrics::new();
                    m.count_proxy_request(kind, status, via);
                    for &t in Transport::ALL {
                        let labels = [kind.as_str(), status, t.as_str()];
                        let counter = m.proxy_requests.with_label_values(&labels);
                        assert_eq!(counter.get(), u64::from(t == via), "{kind:?} {status}");
                    }
                }
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
        for transport in ["http", "grpc"] {
            for (series, shown) in [
                (r#"proxy="subscribe",status="429""#, true),
                (r#"proxy="connect",status="503""#, true),
                (r#"proxy="subscribe",status="503""#, false),
                (r#"proxy="publish",status="499""#, transport == "grpc"),
                (r#"proxy="connect",status="504""#, transport == "grpc"),
            ] {
                let series = format!(
                    "realtime_proxy_requests_total{{{series},transport=\"{transport}\"}} 0"
                );
                assert_eq!(exposed(&m, &series), shown, "{series}");
            }
        }
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
        m.count_proxy_request(ProxyKind::Subscribe, "503", Transport::Http);
        assert!(exposed(
            &m,
            r#"realtime_proxy_requests_total{proxy="subscribe",status="503",transport="http"} 1"#
        ));
    }
}
