//! The HTTP edge: routing, request authentication, body limit, the status mode, metrics and
//! tracing for every proxy route, and the mapping of edge failures to Centrifugo-shaped
//! answers (in one place: `error`).

pub mod auth;
pub mod connect;
pub mod edge;
pub mod error;
pub mod extract;
pub mod ops;
pub mod proxies;
pub mod serve;

use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

/// The proxy routes plus the operational ones; `/metrics` too unless it has its own listener.
pub fn router(state: AppState, with_metrics: bool) -> Router {
    let proxies = Router::new()
        .route("/centrifugo/connect", post(connect::connect))
        .route("/centrifugo/refresh", post(proxies::handle))
        .route("/centrifugo/subscribe", post(proxies::handle))
        .route("/centrifugo/publish", post(proxies::handle))
        .route("/centrifugo/sub_refresh", post(proxies::handle))
        .route("/centrifugo/rpc", post(proxies::handle))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            edge::proxy_edge,
        ));
    let mut ops = ops_router(with_metrics);
    ops = ops.fallback(error::not_found);
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
