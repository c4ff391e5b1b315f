//! `POST /centrifugo/{refresh,subscribe,publish,sub_refresh,rpc}`: one handler for the
//! proxies that follow connect. They share a shape (read the identity context from meta,
//! decide, answer 200 with the decision), so one piece of code serves all five; the
//! per-type decisions are plain functions in `crate::authorize`.

use axum::extract::{MatchedPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::value::RawValue;

use super::error::json_response;
use super::extract::Verified;
use crate::authorize::{self, Decision, RefreshInputs};
use crate::centrifugo::ProxyRequest;
use crate::rpc::BackendRequest;
use crate::state::AppState;

pub async fn handle(
    State(state): State<AppState>,
    route: MatchedPath,
    Verified(request): Verified<ProxyRequest>,
) -> Response {
    let proxy = route.as_str().rsplit('/').next().unwrap_or_default();
    let context = authorize::identity_context(&request);
    if let Err(problem) = &context {
        tracing::warn!(proxy, client = %request.client, %problem, "proxy call refused: untrusted identity context");
    }
    let context = context.as_ref().map_err(|p| *p);
    let now = state.clock.unix_seconds();
    let channel = request.channel.as_deref().unwrap_or_default();
    let decision = match proxy {
        "refresh" => authorize::refresh(
            context,
            &RefreshInputs {
                now_unix: now,
                identity_streak_open: state.identity.detector().streak_open(),
                refresh_ttl_s: secs(state.connect.refresh_ttl),
                fallback_ttl_s: secs(state.connect.fallback_ttl),
            },
        ),
        "subscribe" => authorize::subscribe(context, &state.policy, channel, now),
        "sub_refresh" => authorize::sub_refresh(context, &state.policy, channel, now),
        "publish" => publish(&state, context, &request, channel).await,
        "rpc" => rpc(&state, context, &request).await,
        // The router only mounts the five routes above.
        _ => Decision {
            outcome: "internal_error",
            reply: crate::centrifugo::Reply::internal_error(),
        },
    };
    state
        .metrics
        .proxy_decisions
        .with_label_values(&[proxy, decision.outcome])
        .inc();
    tracing::debug!(proxy, outcome = decision.outcome, client = %request.client, "proxy decision");
    json_response(StatusCode::OK, &decision.reply)
}

async fn publish(
    state: &AppState,
    context: Result<&crate::meta::ConnectionMeta, authorize::ContextProblem>,
    request: &ProxyRequest,
    channel: &str,
) -> Decision {
    let payload = request.payload();
    let payload = payload.as_ref().map(|p| p.as_deref()).map_err(|e| *e);
    if let Some(decision) = authorize::publish(context, &state.policy, channel, payload) {
        return decision;
    }
    // Only a publish the policy allowed reaches the limiter (and so consumes a token).
    let user = context.map(|m| m.user.as_str()).unwrap_or_default();
    if state.limiter.try_acquire(user).await {
        authorize::publish_allowed()
    } else {
        authorize::rate_limited()
    }
}

async fn rpc(
    state: &AppState,
    context: Result<&crate::meta::ConnectionMeta, authorize::ContextProblem>,
    request: &ProxyRequest,
) -> Decision {
    let method = request.method.as_deref().unwrap_or_default();
    let url = match authorize::rpc(context, state.rpc.routes(), method) {
        Ok(url) => url,
        Err(decision) => return decision,
    };
    // Binary rpc data is passed on as a base64 JSON string.
    let b64_data;
    let data: &RawValue = match (&request.data, request.b64data.as_deref()) {
        (Some(raw), _) => raw,
        (None, Some(b64)) if !b64.is_empty() => match serde_json::value::to_raw_value(b64) {
            Ok(raw) => {
                b64_data = raw;
                &b64_data
            }
            Err(_) => return authorize::bad_payload(),
        },
        _ => RawValue::NULL,
    };
    let backend_request = BackendRequest {
        method,
        user: request.user.as_deref().unwrap_or_default(),
        data,
        context: request.meta.as_deref().unwrap_or(RawValue::NULL),
    };
    let answer = state.rpc.call(url, &backend_request).await;
    let (outcome, reply) = crate::rpc::map_answer(&answer);
    Decision { outcome, reply }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}
