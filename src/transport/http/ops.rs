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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::error::json_bytes;
use super::AppState;
use crate::fallback::PoolSnapshot;
use crate::policy::live::PolicySnapshot;

#[derive(Serialize)]
struct Health {
    status: &'static str,
    identity_outage: IdentityOutage,
    fallback_pool: PoolSnapshot,
    channel_policy: PolicySnapshot,
    proxy_auth: &'static str,
}

#[derive(Serialize)]
struct IdentityOutage {
    degraded: bool,
    consecutive_failure_count: u64,
}

pub async fn health(State(state): State<AppState>) -> Response {
    let service = &state.service;
    let outage = service.identity().detector().snapshot();
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
        fallback_pool: service.pool().snapshot(),
        channel_policy: service.policy().snapshot(),
        proxy_auth: state.auth.mode().as_str(),
    };
    // Serialising our own plain struct cannot fail.
    json_bytes(
        StatusCode::OK,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
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
    state.service.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Readiness: true from startup until shutdown begins.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn ready() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn begin_shutdown(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}
