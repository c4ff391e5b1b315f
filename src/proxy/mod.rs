//! The neutral model of a Centrifugo proxy call, shared by both transports: which proxy was
//! called, the request fields the decisions read, and the typed answer (result, error or
//! disconnect) with its outcome label. Nothing here knows about HTTP, gRPC or JSON trees;
//! payloads and meta travel as the bytes Centrifugo sent (JSON text for JSON clients).

pub mod outcome;
mod payload;
pub mod strict_json;

use std::borrow::Cow;

pub use outcome::{ConnectOutcome, Outcome};
pub use payload::{payload, Payload, RpcData};

/// Why request authentication refused a call (either transport); also the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("authentication header missing")]
    Missing,
    #[error("authentication header malformed")]
    Malformed,
    #[error("authentication header does not match")]
    Mismatch,
}

impl AuthFailure {
    pub const ALL: &'static [Self] = &[Self::Missing, Self::Malformed, Self::Mismatch];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
        }
    }
}

/// The proxy types this service answers. Also the `proxy` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    Connect,
    Refresh,
    Subscribe,
    Publish,
    SubRefresh,
    Rpc,
}

impl ProxyKind {
    pub const ALL: &'static [Self] = &[
        Self::Connect,
        Self::Refresh,
        Self::Subscribe,
        Self::Publish,
        Self::SubRefresh,
        Self::Rpc,
    ];

    /// The name Centrifugo uses (`/centrifugo/<name>` here).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Refresh => "refresh",
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::SubRefresh => "sub_refresh",
            Self::Rpc => "rpc",
        }
    }
}

/// How a call arrived. The `transport` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Http,
    Grpc,
}

impl Transport {
    pub const ALL: &'static [Self] = &[Self::Http, Self::Grpc];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

/// Disconnect and error codes. Disconnects 4000-4499 make SDKs reconnect; 4500-4999 are
/// terminal.
pub mod codes {
    /// Bad or missing ticket, or a failed request check: reconnect with a fresh ticket.
    pub const DISCONNECT_INVALID_TICKET: u32 = 4401;
    /// A degraded session tried something sensitive: reconnect (normally once identity is back).
    pub const DISCONNECT_DEGRADED: u32 = 4403;
    /// Ticket validation is unavailable: a temporary error, so SDKs retry the connect with
    /// backoff (calling the app's connect-data callback again for a fresh ticket).
    pub const ERROR_UNAVAILABLE: u32 = 503;
    /// Centrifugo's "internal server error": temporary, SDKs retry.
    pub const ERROR_INTERNAL: u32 = 100;
    /// Centrifugo's "bad request".
    pub const ERROR_BAD_REQUEST: u32 = 107;
    /// Centrifugo's "too many requests".
    pub const ERROR_TOO_MANY_REQUESTS: u32 = 111;
}

/// An answer: exactly one of result, error or disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<R> {
    Result(R),
    Error(ErrorBody),
    Disconnect(DisconnectBody),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: u32,
    pub message: Cow<'static, str>,
    pub temporary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectBody {
    pub code: u32,
    pub reason: Cow<'static, str>,
}

impl<R> Reply<R> {
    pub fn error(code: u32, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Error(ErrorBody {
            code,
            message: message.into(),
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

    pub fn too_many_requests() -> Self {
        Self::temporary_error(codes::ERROR_TOO_MANY_REQUESTS, "too many requests")
    }

    /// The same error or disconnect for another result type.
    pub fn map<S>(self, f: impl FnOnce(R) -> S) -> Reply<S> {
        match self {
            Self::Result(r) => Reply::Result(f(r)),
            Self::Error(e) => Reply::Error(e),
            Self::Disconnect(d) => Reply::Disconnect(d),
        }
    }
}

/// A finished decision: the answer and the outcome it is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<R, O = Outcome> {
    pub outcome: O,
    pub reply: Reply<R>,
}

impl<R, O> Decision<R, O> {
    pub fn new(outcome: O, reply: Reply<R>) -> Self {
        Self { outcome, reply }
    }
}

/// Connect's result. `info` and `meta` are JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResult {
    pub user: String,
    pub expire_at: Option<i64>,
    pub info: Option<Vec<u8>>,
    pub meta: Vec<u8>,
}

/// refresh and sub_refresh: extend until `expire_at` (none: no expiry), or end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    Until(Option<i64>),
    Expired,
}

/// subscribe's result: allowed, until `expire_at` when the namespace sets a TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeResult {
    pub expire_at: Option<i64>,
}

/// publish's result: allowed as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishResult;

/// rpc's result: the backend's answer, JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcResult {
    pub data: Vec<u8>,
}

/// connect's request fields.
#[derive(Debug)]
pub struct ConnectRequest<'a> {
    /// Centrifugo's connection id.
    pub client: &'a str,
    pub transport: &'a str,
    pub data: Payload<'a>,
}

/// The request fields of the proxies after connect (a field a type does not have is empty).
#[derive(Debug)]
pub struct CallRequest<'a> {
    pub client: &'a str,
    /// The connection's user (`""` for anonymous).
    pub user: &'a str,
    /// Connection meta as connect returned it (only with `include_connection_meta`).
    pub meta: Option<&'a [u8]>,
    pub channel: &'a str,
    pub method: &'a str,
    /// publish: the payload to check.
    pub data: Payload<'a>,
    /// rpc: the data to pass to the backend.
    pub rpc_data: RpcData<'a>,
}
