//! The connect decision table.
//!
//! The use case extracts the ticket, lets the identity gateway make (or skip) the call, and
//! then asks this module what to answer; when the answer depends on the fallback pool, it
//! takes the ticket from the pool and asks again.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

use super::secs;
pub use crate::config::ConnectConfig;
use crate::fallback::{Take, TicketDigest};
use crate::identity::{Attempt, Identity, Validation};
use crate::meta::{ConnectionMeta, ParentalState, SubscriptionTier};
use crate::proxy::{codes, ConnectOutcome as Outcome, ConnectResult, Payload, Reply};

/// A connect decision.
pub type Decision = crate::proxy::Decision<ConnectResult, Outcome>;

/// Either a decision, or "this depends on the fallback pool".
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Done(Decision),
    ConsultPool,
}

/// Why no ticket could be read from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketProblem {
    /// No `data`, no `token`, or an empty one: a client-side mistake, answered 4401.
    Missing,
    /// The request itself is malformed: bad request.
    Malformed(&'static str),
}

/// The fields of connect `data` this service reads. A duplicated `token` is refused by the
/// parser, so no component in front can have read a different ticket than this one.
#[derive(Deserialize)]
struct ConnectData<'a> {
    #[serde(default, borrow)]
    token: Option<&'a RawValue>,
}

/// Reads `data.token` (or the same inside base64 `b64data`).
pub fn extract_ticket(payload: &Payload<'_>) -> Result<String, TicketProblem> {
    let bytes = match payload {
        Err(_) => return Err(TicketProblem::Malformed("b64data is not base64")),
        Ok(None) => return Err(TicketProblem::Missing),
        Ok(Some(bytes)) => bytes.trim_ascii(),
    };
    if bytes.first() != Some(&b'{') {
        return Err(
            if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
                TicketProblem::Malformed("data is not JSON")
            } else if bytes == b"null" {
                TicketProblem::Missing
            } else {
                TicketProblem::Malformed("data is not an object")
            },
        );
    }
    let data: ConnectData<'_> =
        serde_json::from_slice(bytes).map_err(|_| TicketProblem::Malformed("data is not JSON"))?;
    let Some(raw) = data.token.map(RawValue::get) else {
        return Err(TicketProblem::Missing);
    };
    if raw == "null" {
        return Err(TicketProblem::Missing);
    }
    if !raw.starts_with('"') {
        return Err(TicketProblem::Malformed("token is not a string"));
    }
    match serde_json::from_str::<Cow<'_, str>>(raw) {
        Ok(token) if token.is_empty() => Err(TicketProblem::Missing),
        Ok(token) => Ok(token.into_owned()),
        Err(_) => Err(TicketProblem::Malformed("token is not a string")),
    }
}

/// The answer for a request whose ticket could not be read.
pub fn ticket_problem(problem: TicketProblem) -> Decision {
    match problem {
        TicketProblem::Missing => invalid_ticket(),
        TicketProblem::Malformed(_) => Decision::new(Outcome::BadRequest, Reply::bad_request()),
    }
}

/// The decision table for a Validate attempt. `degraded`: the outage is past the window.
pub fn decide(attempt: &Attempt, degraded: bool, config: &ConnectConfig, now_unix: i64) -> Next {
    let validation = match attempt {
        Attempt::Skipped => return unreachable(degraded),
        Attempt::Called(validation) => validation,
    };
    Next::Done(match validation {
        Validation::Success(identity) => accepted(identity, config, now_unix),
        Validation::Disconnect { code, reason } => {
            Decision::new(Outcome::Disconnected, identity_disconnect(*code, reason))
        }
        Validation::InvalidTicket => invalid_ticket(),
        Validation::IdentityError { .. } => unavailable(Outcome::IdentityError),
        Validation::Unreachable(_) => return unreachable(degraded),
        Validation::Internal(_) => Decision::new(Outcome::InternalError, Reply::internal_error()),
    })
}

/// The decision once the pool has been asked for the ticket.
pub fn from_pool(
    take: Take,
    digest: &TicketDigest,
    config: &ConnectConfig,
    now_unix: i64,
) -> Decision {
    match take {
        Take::Taken { .. } => {}
        Take::NotInPool => return unavailable(Outcome::FallbackPoolMiss),
        Take::Reused => return unavailable(Outcome::FallbackPoolReused),
        Take::LedgerUnavailable => return unavailable(Outcome::FallbackLedgerUnavailable),
    }
    // The real context is unknown: every lock on, lowest tier, no admin. Degraded connections
    // are refused everything sensitive anyway; this keeps a mistake there from opening more.
    let meta = ConnectionMeta {
        user: format!("fallback:{}", digest.short_hex()),
        family_id: String::new(),
        subscription_tier: SubscriptionTier::Unspecified,
        is_admin: false,
        parental_state: ParentalState::all_locked(),
        degraded: true,
        fallback_path: Some("pool".into()),
    };
    let expire_at = now_unix.saturating_add(secs(config.fallback_ttl));
    Decision::new(
        Outcome::FallbackPoolConsumed,
        result(meta, Some(expire_at), config),
    )
}

fn accepted(identity: &Identity, config: &ConnectConfig, now_unix: i64) -> Decision {
    // identity-service's expiry wins when set; otherwise the refresh TTL, so that Centrifugo
    // calls the refresh proxy. A degraded connection is never given longer than the fallback
    // TTL: refresh is where it gets expired once identity-service is back.
    let ttl = if identity.degraded {
        config.fallback_ttl
    } else {
        config.refresh_ttl
    };
    let cap = now_unix.saturating_add(secs(ttl));
    let expire_at = match identity.expire_at {
        at if at > 0 && identity.degraded => at.min(cap),
        at if at > 0 => at,
        _ => cap,
    };
    let outcome = if identity.degraded {
        Outcome::AcceptedDegraded
    } else {
        Outcome::Accepted
    };
    Decision::new(outcome, result(identity.meta(), Some(expire_at), config))
}

fn result(
    meta: ConnectionMeta,
    expire_at: Option<i64>,
    config: &ConnectConfig,
) -> Reply<ConnectResult> {
    let meta_json = meta.to_json();
    Reply::Result(ConnectResult {
        user: meta.user.clone(),
        expire_at,
        info: info_for(&meta, config),
        meta: meta_json,
    })
}

/// Public `info` (JSON text, keys in name order): only the configured meta fields, plus the
/// degraded markers when degraded.
fn info_for(meta: &ConnectionMeta, config: &ConnectConfig) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for field in ConnectionMeta::FIELDS_BY_NAME {
        let marker = meta.degraded && matches!(*field, "degraded" | "fallback_path");
        if !marker && !config.info_fields.iter().any(|f| f == field) {
            continue;
        }
        let Some(value) = meta.field_json(field) else {
            continue;
        };
        out.push(if out.is_empty() { b'{' } else { b',' });
        out.push(b'"');
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(&value);
    }
    if out.is_empty() {
        return None;
    }
    out.push(b'}');
    Some(out)
}

/// identity-service's own disconnect, passed through when it is usable. A code outside
/// Centrifugo's application range (4000-4999) or a reason Centrifugo would reject becomes the
/// standard 4401, so a misbehaving identity-service cannot make clients act on nonsense.
fn identity_disconnect(code: u32, reason: &str) -> Reply<ConnectResult> {
    if !(4000..=4999).contains(&code) {
        return Reply::disconnect(codes::DISCONNECT_INVALID_TICKET, "invalid ticket");
    }
    let reason = if reason.is_ascii() && reason.len() <= 123 {
        Cow::Owned(reason.to_owned())
    } else {
        Cow::Borrowed("invalid ticket")
    };
    Reply::disconnect(code, reason)
}

fn invalid_ticket() -> Decision {
    Decision::new(
        Outcome::InvalidTicket,
        Reply::disconnect(codes::DISCONNECT_INVALID_TICKET, "invalid ticket"),
    )
}

fn unavailable(outcome: Outcome) -> Decision {
    Decision::new(
        outcome,
        Reply::temporary_error(
            codes::ERROR_UNAVAILABLE,
            "ticket validation temporarily unavailable",
        ),
    )
}

fn unreachable(degraded: bool) -> Next {
    if degraded {
        Next::ConsultPool
    } else {
        Next::Done(unavailable(Outcome::Unavailable))
    }
}

#[cfg(test)]
mod tests;
