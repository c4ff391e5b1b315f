//! The HTTP transport: routing, request authentication (`auth`, `extract`), body limit, the
//! status mode, metrics and spans for every proxy route (`edge`), the wire format (`wire`),
//! edge failures and the outcome -> status mapping (`error`), thin handlers (`handlers`) and
//! the operational endpoints (`ops`).

pub mod auth;
mod edge;
pub mod error;
mod extract;
mod handlers;
pub mod limits;
pub mod ops;
pub mod serve;
pub mod wire;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::routing::{get, post};
use axum::Router;

use crate::config::Edge;
use crate::metrics::Metrics;
use crate::proxy::ProxyKind;
use crate::service::ProxyService;
use auth::ProxyAuth;
pub use ops::Readiness;
// The fuzz targets parse bodies exactly as the extractor does.
pub(crate) use extract::parse_body;

/// What every HTTP handler can reach.
pub struct HttpState {
    pub service: ProxyService,
    pub auth: ProxyAuth,
    pub edge: Edge,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// `PROXY_MAX_INFLIGHT`, shared with the gRPC transport.
    pub inflight: limits::InflightLimit,
}

/// Axum clones the state for every request, so it is one `Arc`: a clone is a single atomic
/// increment, however many handles the service grows.
#[derive(Clone)]
pub struct AppState(Arc<HttpState>);

impl AppState {
    pub fn new(state: HttpState) -> Self {
        Self(Arc::new(state))
    }
}

impl std::ops::Deref for AppState {
    type Target = HttpState;
    fn deref(&self) -> &HttpState {
        &self.0
    }
}

/// The proxy routes plus the operational ones; `/metrics` too unless it has its own listener.
pub fn router(state: AppState, with_metrics: bool) -> Router {
    let mut proxies = Router::new();
    for &kind in ProxyKind::ALL {
        proxies = proxies.route(
            &format!("/centrifugo/{}", kind.as_str()),
            post(move |State(state): State<AppState>, request: Request| {
                edge::proxy(state, kind, request)
            }),
        );
    }
    let ops = ops_router(with_metrics).fallback(error::not_found);
    proxies.merge(ops).with_state(state)
}

/// The router for a separate metrics listener (`METRICS_LISTEN_PORT`).
pub fn metrics_router(state: AppState) -> Router {
    ops_router(true).with_state(state)
}

fn ops_router(with_metrics: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/health", get(ops::health))
        .route("/livez", get(ops::livez))
        .route("/readyz", get(ops::readyz));
    if with_metrics {
        router.route("/metrics", get(ops::metrics))
    } else {
        router
    }
}
