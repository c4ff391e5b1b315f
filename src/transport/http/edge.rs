//! What every `/centrifugo/*` call runs through, in order: a span that continues the caller's
//! trace, the in-flight bound (`PROXY_MAX_INFLIGHT`, before the body is read), the
//! authenticated body (`Verified`), the handler, then the request metrics and
//! `PROXY_HTTP_STATUS_MODE`.
//!
//! One plain async function rather than a stack of axum middleware: each `from_fn` layer
//! boxed the rest of the stack and cloned a service per request, together about a twentieth
//! of a connect's CPU, for nothing a function call does not do.

use std::time::Instant;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::extract::Verified;
use super::limits::overloaded_response;
use super::{handlers, AppState};
use crate::config::StatusMode;
use crate::proxy::{ProxyKind, Transport};
use crate::telemetry::TRACEPARENT;

pub async fn proxy(state: AppState, kind: ProxyKind, request: Request) -> Response {
    let proxy = kind.as_str();
    let span = tracing::info_span!(
        "proxy",
        otel.name = %format_args!("POST /centrifugo/{proxy}"),
        otel.kind = "server",
        proxy,
        http.response.status_code = tracing::field::Empty,
    );
    if request.headers().contains_key(TRACEPARENT) {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        // Only fails when no OpenTelemetry layer is installed, which is a valid configuration.
        let _ = span.set_parent(parent);
    }

    let started = Instant::now();
    let mut response = async {
        // Past the bound a call is answered at once, before its body is read.
        let Some(_permit) = state.inflight.try_acquire() else {
            return overloaded_response();
        };
        let body = match Verified::from_request(request, &state).await {
            Ok(body) => body,
            Err(refused) => return refused.into_response(),
        };
        match body.parse() {
            Ok(request) => handlers::handle(&state, kind, request).await,
            Err(refused) => refused.into_response(),
        }
    }
    .instrument(span.clone())
    .await;
    let status = response.status();

    span.record("http.response.status_code", status.as_u16());
    state
        .metrics
        .count_proxy_request(kind, status.as_str(), Transport::Http);
    state
        .metrics
        .observe_proxy_duration(kind, Transport::Http, started.elapsed().as_secs_f64());

    if state.edge.status_mode == StatusMode::Always200 {
        *response.status_mut() = StatusCode::OK;
    }
    response
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
