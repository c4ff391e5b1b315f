//! The middleware every `/centrifugo/*` route runs in: a span that continues the caller's
//! trace, the request metrics, and `PROXY_HTTP_STATUS_MODE`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::AppState;
use crate::config::StatusMode;
use crate::proxy::{ProxyKind, Transport};

pub async fn proxy_edge(
    State(state): State<AppState>,
    matched: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let proxy = proxy_kind(matched.as_str()).map_or("unknown", ProxyKind::as_str);
    let span = tracing::info_span!(
        "proxy",
        otel.name = %format_args!("POST /centrifugo/{proxy}"),
        otel.kind = "server",
        proxy,
        http.response.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    // Only fails when no OpenTelemetry layer is installed, which is a valid configuration.
    let _ = span.set_parent(parent);

    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();

    span.record("http.response.status_code", status.as_u16());
    state
        .metrics
        .proxy_requests
        .with_label_values(&[proxy, status.as_str()])
        .inc();
    state
        .metrics
        .proxy_duration
        .with_label_values(&[proxy, Transport::Http.as_str()])
        .observe(started.elapsed().as_secs_f64());

    if state.edge.status_mode == StatusMode::Always200 {
        *response.status_mut() = StatusCode::OK;
    }
    response
}

/// `/centrifugo/connect` -> `Connect`; the route table is fixed, so this is a bounded label.
fn proxy_kind(route: &str) -> Option<ProxyKind> {
    let name = route.rsplit('/').next().unwrap_or_default();
    ProxyKind::ALL.iter().copied().find(|p| p.as_str() == name)
}

struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}
