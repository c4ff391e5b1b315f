//! Centrifugo's proxy wire format: the request fields this service reads and the reply
//! envelope it writes (`result` / `error` / `disconnect`), with the codes it uses.
//!
//! `data`, `info` and `meta` are raw JSON on the wire (not base64, not protobuf-JSON), and
//! binary payloads travel as standard base64 in `b64data` when the proxy has
//! `binary_encoding: true`; see `../shared/centrifugo-proxy.md` sections 1 and 4.3.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Disconnect codes. 4000-4499 make SDKs reconnect; 4500-4999 are terminal.
pub mod codes {
    /// Bad or missing ticket, or a failed request check: reconnect with a fresh ticket.
    pub const DISCONNECT_INVALID_TICKET: u32 = 4401;
    /// A degraded session tried something sensitive: reconnect (normally once identity is back).
    pub const DISCONNECT_DEGRADED: u32 = 4403;
    /// Ticket validation is unavailable: terminal, the app decides when to try again.
    pub const DISCONNECT_UNAVAILABLE: u32 = 4503;
    /// Centrifugo's "internal server error": temporary, SDKs retry.
    pub const ERROR_INTERNAL: u32 = 100;
    /// Centrifugo's "bad request".
    pub const ERROR_BAD_REQUEST: u32 = 107;
}

/// A reply: exactly one of the three keys, as serde's external tagging writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<R> {
    Result(R),
    Error(ErrorBody),
    Disconnect(DisconnectBody),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub code: u32,
    pub message: Cow<'static, str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub temporary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisconnectBody {
    pub code: u32,
    pub reason: Cow<'static, str>,
}

impl<R> Reply<R> {
    pub fn error(code: u32, message: &'static str) -> Self {
        Self::Error(ErrorBody {
            code,
            message: Cow::Borrowed(message),
            temporary: false,
        })
    }

    pub fn temporary_error(code: u32, message: &'static str) -> Self {
        Self::Error(ErrorBody {
            code,
            message: Cow::Borrowed(message),
            temporary: true,
        })
    }

    pub fn disconnect(code: u32, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Disconnect(DisconnectBody {
            code,
            reason: reason.into(),
        })
    }

    pub fn bad_request() -> Self {
        Self::error(codes::ERROR_BAD_REQUEST, "bad request")
    }

    pub fn internal_error() -> Self {
        Self::error(codes::ERROR_INTERNAL, "internal error")
    }

    pub fn unauthorized() -> Self {
        Self::disconnect(codes::DISCONNECT_INVALID_TICKET, "unauthorized")
    }
}

/// A proxy request body, for every proxy type: the fields a type does not have are simply
/// absent. One type means one parser and one place that knows the wire names.
#[derive(Debug, Default, Deserialize)]
pub struct ProxyRequest {
    /// Centrifugo's connection id.
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub transport: String,
    #[serde(default)]
    pub protocol: String,
    /// `binary` when the proxy has `binary_encoding: true` (payload in `b64data`).
    #[serde(default)]
    pub encoding: String,
    /// The connection's user; always present (maybe `""`) except on connect.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    /// Connection meta, as connect returned it (only with `include_connection_meta`).
    #[serde(default)]
    pub meta: Option<Box<RawValue>>,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
    #[serde(default)]
    pub b64data: Option<String>,
}

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("b64data is not valid standard base64")]
    BadBase64,
}

impl ProxyRequest {
    /// The client's payload bytes as sent. `None` when there is no payload.
    /// A non-empty `b64data` wins: Centrifugo sets it only with binary encoding.
    pub fn payload(&self) -> Result<Option<Cow<'_, [u8]>>, PayloadError> {
        if let Some(b64) = self.b64data.as_deref().filter(|s| !s.is_empty()) {
            return base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map(|bytes| Some(Cow::Owned(bytes)))
                .map_err(|_| PayloadError::BadBase64);
        }
        Ok(self
            .data
            .as_deref()
            .map(|raw| Cow::Borrowed(raw.get().as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_serialise_to_centrifugo_shapes() {
        let r: Reply<()> = Reply::disconnect(4401, "invalid ticket");
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            r#"{"disconnect":{"code":4401,"reason":"invalid ticket"}}"#
        );
        let r: Reply<()> = Reply::bad_request();
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            r#"{"error":{"code":107,"message":"bad request"}}"#
        );
        let r: Reply<()> = Reply::temporary_error(429, "too many requests");
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            r#"{"error":{"code":429,"message":"too many requests","temporary":true}}"#
        );
    }

    #[test]
    fn payload_prefers_b64data_and_rejects_bad_base64() {
        let parse = |s: &str| serde_json::from_str::<ProxyRequest>(s).expect("json");
        let p = parse(r#"{"b64data":"eyJ0b2tlbiI6InQifQ==","data":{"x":1}}"#);
        assert_eq!(
            p.payload().expect("ok").as_deref(),
            Some(&br#"{"token":"t"}"#[..])
        );
        let p = parse(r#"{"b64data":"%%%"}"#);
        assert_eq!(p.payload(), Err(PayloadError::BadBase64));
        let p = parse(r#"{"data":{"a":1}}"#);
        assert_eq!(
            p.payload().expect("ok").as_deref(),
            Some(&br#"{"a":1}"#[..])
        );
        assert_eq!(parse("{}").payload().expect("ok"), None);
    }
}
