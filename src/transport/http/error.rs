//! Every failure at the edge, mapped to a Centrifugo-shaped answer in one place, and logged
//! once, here, without anything from the request body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::auth::AuthFailure;
use super::wire::{encode, WireResult};
use crate::proxy::{ConnectOutcome, Reply};

/// Failures before a handler runs.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("request authentication failed: {0}")]
    Unauthorized(AuthFailure),
    #[error("body larger than PROXY_MAX_BODY_BYTES")]
    BodyTooLarge,
    #[error("body could not be read")]
    BodyUnreadable,
    #[error("body not complete within HTTP_BODY_READ_TIMEOUT_MS")]
    BodyTimedOut,
    #[error("body is not a JSON object")]
    NotAnObject,
    /// Malformed JSON: only the category and position are kept, never the parser's message,
    /// which can quote the input.
    #[error("malformed JSON ({category} at line {line}, column {column})")]
    MalformedJson {
        category: &'static str,
        line: usize,
        column: usize,
    },
}

impl EdgeError {
    pub fn malformed_json(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        Self::MalformedJson {
            category: match e.classify() {
                Category::Io => "io",
                Category::Syntax => "syntax",
                Category::Data => "wrong type",
                Category::Eof => "truncated",
            },
            line: e.line(),
            column: e.column(),
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let (status, reply): (StatusCode, Reply<()>) = match &self {
            Self::Unauthorized(reason) => {
                tracing::warn!(reason = reason.as_str(), "proxy call refused: {self}");
                (StatusCode::UNAUTHORIZED, Reply::unauthorized())
            }
            Self::BodyTooLarge => {
                tracing::warn!("proxy call refused: {self}");
                (StatusCode::PAYLOAD_TOO_LARGE, Reply::bad_request())
            }
            Self::BodyTimedOut => {
                tracing::warn!("proxy call refused: {self}");
                // 408 with the edge's bad-request body, and the connection closed.
                return super::limits::body_timeout_response();
            }
            Self::BodyUnreadable | Self::NotAnObject | Self::MalformedJson { .. } => {
                tracing::warn!("proxy call refused: {self}");
                (StatusCode::BAD_REQUEST, Reply::bad_request())
            }
        };
        reply_response(status, &reply)
    }
}

/// A reply with its status.
pub fn reply_response<R: WireResult>(status: StatusCode, reply: &Reply<R>) -> Response {
    json_bytes(status, encode(reply))
}

/// A JSON body with its status.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The HTTP status of a connect decision in `mapped` mode: Centrifugo's
/// `status_to_code_transforms` turn these into codes (`../shared/centrifugo-proxy.md` 3.5).
/// The proxies after connect always answer 200: Centrifugo reads only 200 bodies.
pub fn connect_status(outcome: ConnectOutcome) -> StatusCode {
    match outcome {
        ConnectOutcome::Accepted
        | ConnectOutcome::AcceptedDegraded
        | ConnectOutcome::FallbackPoolConsumed => StatusCode::OK,
        ConnectOutcome::Disconnected | ConnectOutcome::InvalidTicket => StatusCode::UNAUTHORIZED,
        ConnectOutcome::IdentityError
        | ConnectOutcome::Unavailable
        | ConnectOutcome::FallbackPoolMiss
        | ConnectOutcome::FallbackPoolReused
        | ConnectOutcome::FallbackLedgerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ConnectOutcome::BadRequest => StatusCode::BAD_REQUEST,
        ConnectOutcome::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Unknown paths: a JSON 404 rather than an empty body.
pub async fn not_found() -> Response {
    let reply: Reply<()> = Reply::error(404, "not found");
    reply_response(StatusCode::NOT_FOUND, &reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_statuses_in_mapped_mode() {
        use ConnectOutcome::*;
        for (outcome, status) in [
            (Accepted, 200),
            (AcceptedDegraded, 200),
            (FallbackPoolConsumed, 200),
            (Disconnected, 401),
            (InvalidTicket, 401),
            (IdentityError, 503),
            (Unavailable, 503),
            (FallbackPoolMiss, 503),
            (FallbackPoolReused, 503),
            (FallbackLedgerUnavailable, 503),
            (BadRequest, 400),
            (InternalError, 500),
        ] {
            assert_eq!(connect_status(outcome).as_u16(), status, "{outcome:?}");
        }
        assert_eq!(
            ConnectOutcome::ALL.len(),
            12,
            "every outcome has a row above"
        );
    }
}
