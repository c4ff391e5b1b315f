//! The proxy handlers: decode the wire shape into the neutral request, call the use case,
//! encode the neutral answer (the body was authenticated and parsed by `Verified` in the
//! edge). Connect's status follows its outcome (`error::connect_status`); the others always
//! answer 200, because Centrifugo reads only 200 bodies.

use axum::http::StatusCode;
use axum::response::Response;

use super::error::{connect_status, reply_response};
use super::wire::ProxyRequest;
use super::AppState;
use crate::proxy::ProxyKind;
use crate::proxy::Transport::Http;

pub async fn handle(state: &AppState, kind: ProxyKind, request: ProxyRequest<'_>) -> Response {
    let service = &state.service;
    match kind {
        ProxyKind::Connect => {
            let decision = service.connect(Http, &request.connect()).await;
            reply_response(connect_status(decision.outcome), &decision.reply)
        }
        ProxyKind::Refresh => {
            let decision = service.refresh(Http, &request.call());
            reply_response(StatusCode::OK, &decision.reply)
        }
        ProxyKind::Subscribe => {
            let decision = service.subscribe(Http, &request.call());
            reply_response(StatusCode::OK, &decision.reply)
        }
        ProxyKind::SubRefresh => {
            let decision = service.sub_refresh(Http, &request.call());
            reply_response(StatusCode::OK, &decision.reply)
        }
        ProxyKind::Publish => {
            let decision = service.publish(Http, &request.call()).await;
            reply_response(StatusCode::OK, &decision.reply)
        }
        ProxyKind::Rpc => {
            let decision = service.rpc(Http, &request.call()).await;
            reply_response(StatusCode::OK, &decision.reply)
        }
    }
}
