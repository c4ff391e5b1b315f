//! The proxy handlers: verify (the `Verified` extractor), decode the wire shape into the
//! neutral request, call the use case, encode the neutral answer. Connect's status follows its
//! outcome (`error::connect_status`); the others always answer 200, because Centrifugo reads
//! only 200 bodies.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::error::{connect_status, reply_response};
use super::extract::Verified;
use super::wire::ProxyRequest;
use super::AppState;
use crate::proxy::Transport::Http;

pub async fn connect(
    State(state): State<AppState>,
    Verified(request): Verified<ProxyRequest>,
) -> Response {
    let decision = state.service.connect(Http, &request.connect()).await;
    reply_response(connect_status(decision.outcome), &decision.reply)
}

pub async fn refresh(
    State(state): State<AppState>,
    Verified(request): Verified<ProxyRequest>,
) -> Response {
    let decision = state.service.refresh(Http, &request.call());
    reply_response(StatusCode::OK, &decision.reply)
}

pub async fn subscribe(
    State(state): State<AppState>,
    Verified(request): Verified<ProxyRequest>,
) -> Response {
    let decision = state.service.subscribe(Http, &request.call());
    reply_response(StatusCode::OK, &decision.reply)
}

pub async fn sub_refresh(
    State(state): State<AppState>,
    Verified(request): Verified<ProxyRequest>,
) -> Response {
    let decision = state.service.sub_refresh(Http, &request.call());
    reply_response(StatusCode::OK, &decision.reply)
}

pub async fn publish(
    State(state): State<AppState>,
    Verified(request): Verified<ProxyRequest>,
) -> Response {
    let decision = state.service.publish(Http, &request.call()).await;
    reply_response(StatusCode::OK, &decision.reply)
}

pub async fn rpc(
    State(state): State<AppState>,
    Verified(request): Verified<ProxyRequest>,
) -> Response {
    let decision = state.service.rpc(Http, &request.call()).await;
    reply_response(StatusCode::OK, &decision.reply)
}
