//! Operational endpoints: `/health` (JSON for operators), `/livez`, `/readyz` (Kubernetes)
//! and `/metrics` (Prometheus).
//!
//! Readiness never follows identity-service: the fallback pool exists for exactly the time
//! identity-service is down, and pulling every replica out of the Service then would turn a
//! degraded mode into a full outage.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::json_response;
use crate::state::AppState;

#[derive(Serialize)]
struct Health {
    status: &'static str,
    identity_outage: IdentityOutage,
    fallback_pool: FallbackPool,
    proxy_auth: &'static str,
}

#[derive(Serialize)]
struct IdentityOutage {
    degraded: bool,
    consecutive_failure_count: u64,
}

#[derive(Serialize)]
struct FallbackPool {
    size: usize,
    status: &'static str,
}

pub async fn health(State(state): State<AppState>) -> Response {
    let outage = state.identity.detector().snapshot();
    let status = if !state.readiness.is_ready() {
        "shutting_down"
    } else if outage.degraded {
        "degraded"
    } else {
        "ok"
    };
    let body = Health {
        status,
        identity_outage: IdentityOutage {
            degraded: outage.degraded,
            consecutive_failure_count: outage.consecutive_failures,
        },
        fallback_pool: FallbackPool {
            size: state.pool.size(),
            status: state.pool.status().as_str(),
        },
        proxy_auth: state.auth.mode().as_str(),
    };
    json_response(StatusCode::OK, &body)
}

pub async fn livez() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    state.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
