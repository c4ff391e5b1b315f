//! Every failure at the edge, mapped to a Centrifugo-shaped answer in one place, and logged
//! once, here, without anything from the request body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::auth::AuthFailure;
use crate::centrifugo::Reply;

/// Failures before a handler runs.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("request authentication failed: {0}")]
    Unauthorized(AuthFailure),
    #[error("body larger than PROXY_MAX_BODY_BYTES")]
    BodyTooLarge,
    #[error("body could not be read")]
    BodyUnreadable,
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
            Self::BodyUnreadable | Self::NotAnObject | Self::MalformedJson { .. } => {
                tracing::warn!("proxy call refused: {self}");
                (StatusCode::BAD_REQUEST, Reply::bad_request())
            }
        };
        json_response(status, &reply)
    }
}

/// Serialises a reply with its status. Serialising our own reply types cannot fail; if it
/// ever did, the answer is still a well-formed Centrifugo error.
pub fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body)
        .unwrap_or_else(|_| br#"{"error":{"code":100,"message":"internal error"}}"#.to_vec());
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

/// Unknown paths: a JSON 404 rather than an empty body.
pub async fn not_found() -> Response {
    let reply: Reply<()> = Reply::error(404, "not found");
    json_response(StatusCode::NOT_FOUND, &reply)
}
