//! `Verified<T>`: the only way a handler gets a request body. It authenticates the call on
//! the raw bytes first and parses them only afterwards, so a handler that forgot the check
//! would not compile, and nothing unauthenticated is ever parsed.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::error::EdgeError;
use super::AppState;

pub struct Verified<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Verified<T> {
    type Rejection = EdgeError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let signature = state
            .auth
            .check_headers(&parts.headers)
            .map_err(|reason| reject(state, reason))?;
        let bytes = read_limited(body, state.edge.max_body_bytes).await?;
        state
            .auth
            .verify_body(signature.as_ref(), &bytes)
            .map_err(|reason| reject(state, reason))?;
        parse_body(&bytes).map(Verified)
    }
}

/// Parses an authenticated body as a proxy request type.
pub(crate) fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EdgeError> {
    // Every Centrifugo proxy body is a JSON object; serde would also accept an array for a
    // struct, so check the shape before parsing.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(EdgeError::NotAnObject);
    }
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

/// Reads the whole body, stopping as soon as it passes the limit (whatever Content-Length said).
async fn read_limited(body: Body, limit: usize) -> Result<axum::body::Bytes, EdgeError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(EdgeError::BodyTooLarge),
        Err(_) => Err(EdgeError::BodyUnreadable),
    }
}
