//! `Verified`: the only way a handler gets a request body. It authenticates the call on the
//! raw bytes first and hands out only those bytes, parsed on request, so a handler that
//! forgot the check would not compile, and nothing unauthenticated is ever parsed. The
//! parsed request borrows from the verified bytes: no field is copied unless it has escapes.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::Deserialize;

use super::error::EdgeError;
use super::limits::{read_body, BodyReadError};
use super::AppState;
use crate::proxy::strict_json;

/// An authenticated request body.
pub struct Verified(Bytes);

impl Verified {
    /// The body as a proxy request type, borrowing from it.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, EdgeError> {
        parse_body(&self.0)
    }
}

impl FromRequest<AppState> for Verified {
    type Rejection = EdgeError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let signature = state
            .auth
            .check_headers(&parts.headers)
            .map_err(|reason| reject(state, reason))?;
        let bytes = read_body(
            body,
            state.edge.max_body_bytes,
            state.edge.body_read_timeout,
        )
        .await
        .map_err(|e| match e {
            BodyReadError::TooLarge => EdgeError::BodyTooLarge,
            BodyReadError::TimedOut => EdgeError::BodyTimedOut,
            BodyReadError::Unreadable => EdgeError::BodyUnreadable,
        })?;
        state
            .auth
            .verify_body(signature.as_ref(), &bytes)
            .map_err(|reason| reject(state, reason))?;
        Ok(Verified(bytes))
    }
}

/// Parses an authenticated body as a proxy request type.
pub(crate) fn parse_body<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, EdgeError> {
    // Every Centrifugo proxy body is a JSON object; serde would also accept an array for a
    // struct, so check the shape before parsing.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(EdgeError::NotAnObject);
    }
    // The same JSON for every component: no duplicated key (the last one would win here, the
    // first one elsewhere) and no number that overflows.
    strict_json::check(bytes).map_err(|e| EdgeError::MalformedJson {
        category: e.kind.as_str(),
        line: e.line,
        column: e.column,
    })?;
    serde_json::from_slice(bytes).map_err(|e| EdgeError::malformed_json(&e))
}

fn reject(state: &AppState, reason: super::auth::AuthFailure) -> EdgeError {
    state
        .metrics
        .auth_rejections
        .with_label_values(&[reason.as_str()])
        .inc();
    EdgeError::Unauthorized(reason)
}
