//! Outcome labels: one enum per metric label, with every value listed once, so metrics,
//! logs and dashboards read their names from here.

use super::ProxyKind;

/// `realtime_centrifugo_connect_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectOutcome {
    Accepted,
    AcceptedDegraded,
    Disconnected,
    InvalidTicket,
    IdentityError,
    Unavailable,
    FallbackPoolConsumed,
    FallbackPoolMiss,
    /// The ticket is in the pool but was already used (here or on another replica).
    FallbackPoolReused,
    /// The consumed-ticket ledger could not record the claim: fail closed.
    FallbackLedgerUnavailable,
    BadRequest,
    InternalError,
}

impl ConnectOutcome {
    pub const ALL: &'static [Self] = &[
        Self::Accepted,
        Self::AcceptedDegraded,
        Self::Disconnected,
        Self::InvalidTicket,
        Self::IdentityError,
        Self::Unavailable,
        Self::FallbackPoolConsumed,
        Self::FallbackPoolMiss,
        Self::FallbackPoolReused,
        Self::FallbackLedgerUnavailable,
        Self::BadRequest,
        Self::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::AcceptedDegraded => "accepted_degraded",
            Self::Disconnected => "disconnected",
            Self::InvalidTicket => "invalid_ticket",
            Self::IdentityError => "identity_error",
            Self::Unavailable => "unavailable",
            Self::FallbackPoolConsumed => "fallback_pool_consumed",
            Self::FallbackPoolMiss => "fallback_pool_miss",
            Self::FallbackPoolReused => "fallback_pool_reused",
            Self::FallbackLedgerUnavailable => "fallback_ledger_unavailable",
            Self::BadRequest => "bad_request",
            Self::InternalError => "internal_error",
        }
    }
}

/// `realtime_proxy_decisions_total{outcome}`: the decisions of the proxies after connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allowed,
    Denied,
    Degraded,
    BadContext,
    BadPayload,
    PayloadTooLarge,
    RateLimited,
    Extended,
    ExtendedDegraded,
    Expired,
    MethodNotFound,
    BackendRefused,
    BackendError,
}

impl Outcome {
    pub const ALL: &'static [Self] = &[
        Self::Allowed,
        Self::Denied,
        Self::Degraded,
        Self::BadContext,
        Self::BadPayload,
        Self::PayloadTooLarge,
        Self::RateLimited,
        Self::Extended,
        Self::ExtendedDegraded,
        Self::Expired,
        Self::MethodNotFound,
        Self::BackendRefused,
        Self::BackendError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Degraded => "degraded",
            Self::BadContext => "bad_context",
            Self::BadPayload => "bad_payload",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::Extended => "extended",
            Self::ExtendedDegraded => "extended_degraded",
            Self::Expired => "expired",
            Self::MethodNotFound => "method_not_found",
            Self::BackendRefused => "backend_refused",
            Self::BackendError => "backend_error",
        }
    }

    /// The outcomes each proxy can decide (connect has its own enum), so metrics start every
    /// real series at 0 and no impossible one.
    pub fn possible_for(kind: ProxyKind) -> &'static [Self] {
        use Outcome::*;
        match kind {
            ProxyKind::Connect => &[],
            ProxyKind::Refresh => &[Extended, ExtendedDegraded, Expired, BadContext],
            ProxyKind::Subscribe => &[Allowed, Denied, Degraded, BadContext],
            ProxyKind::SubRefresh => &[Extended, Expired, BadContext],
            ProxyKind::Publish => &[
                Allowed,
                Denied,
                Degraded,
                BadContext,
                BadPayload,
                PayloadTooLarge,
                RateLimited,
            ],
            ProxyKind::Rpc => &[
                Allowed,
                Degraded,
                BadContext,
                BadPayload,
                MethodNotFound,
                BackendRefused,
                BackendError,
            ],
        }
    }
}
