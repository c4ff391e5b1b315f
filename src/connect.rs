//! The connect decision table, as plain functions over plain types.
//!
//! The handler extracts the ticket, lets the identity gateway make (or skip) the call, and
//! then asks this module what to answer; when the answer depends on the fallback pool, the
//! handler takes the ticket from the pool and asks again. Nothing here does I/O, so every
//! row of the table is unit-tested without a network.

use std::borrow::Cow;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::centrifugo::{codes, ProxyRequest, Reply};
use crate::fallback::{Take, TicketDigest};
use crate::identity::{Attempt, Identity, Validation};
use crate::meta::{ConnectionMeta, ParentalState, SubscriptionTier};

/// What the connect result carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectResult {
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Map<String, Value>>,
    pub meta: ConnectionMeta,
}

/// Bounded outcome label (`realtime_centrifugo_connect_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    AcceptedDegraded,
    Disconnected,
    InvalidTicket,
    IdentityError,
    Unavailable,
    FallbackPoolConsumed,
    FallbackPoolMiss,
    BadRequest,
    InternalError,
}

impl Outcome {
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
            Self::BadRequest => "bad_request",
            Self::InternalError => "internal_error",
        }
    }
}

/// A finished decision: what to count, which status to answer with, and the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub status: u16,
    pub reply: Reply<ConnectResult>,
}

/// Either a decision, or "this depends on the fallback pool".
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Done(Decision),
    ConsultPool,
}

/// Connect settings the decisions need, prepared once at startup.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// Meta fields also copied into public `info` (`CONNECT_INFO_FIELDS`).
    pub info_fields: Vec<String>,
    /// Lifetime of a pool connection (`FALLBACK_CONNECT_TTL_S`), and the longest a degraded
    /// connection lives before the refresh proxy re-checks it.
    pub fallback_ttl: Duration,
    /// `CONNECTION_REFRESH_TTL_S`: `expire_at` when identity-service sets none, so the refresh
    /// proxy is called periodically for every connection.
    pub refresh_ttl: Duration,
}

/// Why no ticket could be read from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketProblem {
    /// No `data`, no `token`, or an empty one: a client-side mistake, answered 4401.
    Missing,
    /// The request itself is malformed: 400.
    Malformed(&'static str),
}

/// Reads `data.token` (or the same inside base64 `b64data`).
pub fn extract_ticket(request: &ProxyRequest) -> Result<String, TicketProblem> {
    let payload = request
        .payload()
        .map_err(|_| TicketProblem::Malformed("b64data is not base64"))?;
    let Some(bytes) = payload else {
        return Err(TicketProblem::Missing);
    };
    let data: Value =
        serde_json::from_slice(&bytes).map_err(|_| TicketProblem::Malformed("data is not JSON"))?;
    let object = match data {
        Value::Object(object) => object,
        Value::Null => return Err(TicketProblem::Missing),
        _ => return Err(TicketProblem::Malformed("data is not an object")),
    };
    match object.get("token") {
        None | Some(Value::Null) => Err(TicketProblem::Missing),
        Some(Value::String(token)) if token.is_empty() => Err(TicketProblem::Missing),
        Some(Value::String(token)) => Ok(token.clone()),
        Some(_) => Err(TicketProblem::Malformed("token is not a string")),
    }
}

/// The answer for a request whose ticket could not be read.
pub fn ticket_problem(problem: TicketProblem) -> Decision {
    match problem {
        TicketProblem::Missing => invalid_ticket(),
        TicketProblem::Malformed(_) => Decision {
            outcome: Outcome::BadRequest,
            status: 400,
            reply: Reply::bad_request(),
        },
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
        Validation::Disconnect { code, reason } => Decision {
            outcome: Outcome::Disconnected,
            status: 401,
            reply: identity_disconnect(*code, reason),
        },
        Validation::InvalidTicket => invalid_ticket(),
        Validation::IdentityError { .. } => unavailable(Outcome::IdentityError),
        Validation::Unreachable(_) => return unreachable(degraded),
        Validation::Internal(_) => Decision {
            outcome: Outcome::InternalError,
            status: 500,
            reply: Reply::internal_error(),
        },
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
        Take::NotInPool | Take::Reused => return unavailable(Outcome::FallbackPoolMiss),
        Take::LedgerUnavailable => return unavailable(Outcome::Unavailable),
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
    let ttl = i64::try_from(config.fallback_ttl.as_secs()).unwrap_or(i64::MAX);
    Decision {
        outcome: Outcome::FallbackPoolConsumed,
        status: 200,
        reply: Reply::Result(ConnectResult {
            user: meta.user.clone(),
            expire_at: Some(now_unix.saturating_add(ttl)),
            info: info_for(&meta, config),
            meta,
        }),
    }
}

fn accepted(identity: &Identity, config: &ConnectConfig, now_unix: i64) -> Decision {
    let meta = identity.meta();
    // identity-service's expiry wins when set; otherwise the refresh TTL, so that Centrifugo
    // calls the refresh proxy. A degraded connection is never given longer than the fallback
    // TTL: refresh is where it gets expired once identity-service is back.
    let ttl = if identity.degraded {
        config.fallback_ttl
    } else {
        config.refresh_ttl
    };
    let cap = now_unix.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let expire_at = match identity.expire_at {
        at if at > 0 && identity.degraded => at.min(cap),
        at if at > 0 => at,
        _ => cap,
    };
    Decision {
        outcome: if identity.degraded {
            Outcome::AcceptedDegraded
        } else {
            Outcome::Accepted
        },
        status: 200,
        reply: Reply::Result(ConnectResult {
            user: identity.user_id.clone(),
            expire_at: Some(expire_at),
            info: info_for(&meta, config),
            meta,
        }),
    }
}

/// Public `info`: only the configured meta fields, plus the degraded markers when degraded.
fn info_for(meta: &ConnectionMeta, config: &ConnectConfig) -> Option<Map<String, Value>> {
    let mut info = Map::new();
    if !config.info_fields.is_empty() {
        if let Ok(Value::Object(all)) = serde_json::to_value(meta) {
            for field in &config.info_fields {
                if let Some(value) = all.get(field) {
                    info.insert(field.clone(), value.clone());
                }
            }
        }
    }
    if meta.degraded {
        info.insert("degraded".into(), Value::Bool(true));
        if let Some(path) = &meta.fallback_path {
            info.insert("fallback_path".into(), Value::String(path.clone()));
        }
    }
    (!info.is_empty()).then_some(info)
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
    Decision {
        outcome: Outcome::InvalidTicket,
        status: 401,
        reply: Reply::disconnect(codes::DISCONNECT_INVALID_TICKET, "invalid ticket"),
    }
}

fn unavailable(outcome: Outcome) -> Decision {
    Decision {
        outcome,
        status: 503,
        reply: Reply::disconnect(
            codes::DISCONNECT_UNAVAILABLE,
            "ticket validation temporarily unavailable",
        ),
    }
}

fn unreachable(degraded: bool) -> Next {
    if degraded {
        Next::ConsultPool
    } else {
        Next::Done(unavailable(Outcome::Unavailable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::outcome::Unreachable;

    const NOW: i64 = 1_600_000_000;

    fn config() -> ConnectConfig {
        ConnectConfig {
            info_fields: vec![],
            fallback_ttl: Duration::from_secs(300),
            refresh_ttl: Duration::from_secs(3600),
        }
    }

    fn identity(degraded: bool) -> Identity {
        Identity {
            user_id: "u1".into(),
            family_id: "f1".into(),
            subscription_tier: SubscriptionTier::Family,
            is_admin: false,
            parental_state: ParentalState::default(),
            expire_at: 1_700_000_000,
            degraded,
        }
    }

    fn done(next: Next) -> Decision {
        match next {
            Next::Done(d) => d,
            Next::ConsultPool => panic!("expected a decision"),
        }
    }

    fn json(d: &Decision) -> Value {
        serde_json::to_value(&d.reply).expect("json")
    }

    fn request(body: &str) -> ProxyRequest {
        serde_json::from_str(body).expect("request json")
    }

    #[test]
    fn ticket_extraction() {
        assert_eq!(
            extract_ticket(&request(r#"{"data":{"token":"t1"}}"#)),
            Ok("t1".into())
        );
        // {"token":"t2"} in base64
        assert_eq!(
            extract_ticket(&request(
                r#"{"encoding":"binary","b64data":"eyJ0b2tlbiI6InQyIn0="}"#
            )),
            Ok("t2".into())
        );
        for missing in [
            r#"{}"#,
            r#"{"data":{}}"#,
            r#"{"data":{"token":""}}"#,
            r#"{"data":null}"#,
            r#"{"data":{"token":null}}"#,
        ] {
            assert_eq!(
                extract_ticket(&request(missing)),
                Err(TicketProblem::Missing),
                "{missing}"
            );
        }
        for bad in [
            r#"{"data":[1]}"#,
            r#"{"data":"t"}"#,
            r#"{"data":{"token":5}}"#,
            r#"{"b64data":"!!"}"#,
            r#"{"b64data":"bm90IGpzb24="}"#,
        ] {
            assert!(
                matches!(
                    extract_ticket(&request(bad)),
                    Err(TicketProblem::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn success_puts_identity_in_meta_not_info() {
        let d = done(decide(
            &Attempt::Called(Validation::Success(identity(false))),
            false,
            &config(),
            NOW,
        ));
        assert_eq!((d.outcome, d.status), (Outcome::Accepted, 200));
        let body = json(&d);
        assert_eq!(body["result"]["user"], "u1");
        assert_eq!(body["result"]["expire_at"], 1_700_000_000);
        assert_eq!(body["result"]["meta"]["family_id"], "f1");
        assert_eq!(body["result"]["meta"]["subscription_tier"], "family");
        assert_eq!(body["result"]["meta"]["degraded"], false);
        assert!(body["result"].get("info").is_none(), "{body}");
    }

    #[test]
    fn expire_at_defaults_to_the_refresh_ttl_and_caps_degraded_connections() {
        let mut id = identity(false);
        id.expire_at = 0;
        let d = done(decide(
            &Attempt::Called(Validation::Success(id.clone())),
            false,
            &config(),
            NOW,
        ));
        assert_eq!(json(&d)["result"]["expire_at"], NOW + 3600);
        id.degraded = true;
        let d = done(decide(
            &Attempt::Called(Validation::Success(id.clone())),
            false,
            &config(),
            NOW,
        ));
        assert_eq!(json(&d)["result"]["expire_at"], NOW + 300);
        id.expire_at = NOW + 10_000;
        let d = done(decide(
            &Attempt::Called(Validation::Success(id)),
            false,
            &config(),
            NOW,
        ));
        assert_eq!(
            json(&d)["result"]["expire_at"],
            NOW + 300,
            "degraded capped at the fallback TTL"
        );
    }

    #[test]
    fn configured_info_fields_are_copied() {
        let cfg = ConnectConfig {
            info_fields: vec!["subscription_tier".into()],
            ..config()
        };
        let d = done(decide(
            &Attempt::Called(Validation::Success(identity(false))),
            false,
            &cfg,
            NOW,
        ));
        assert_eq!(
            json(&d)["result"]["info"],
            serde_json::json!({"subscription_tier":"family"})
        );
    }

    #[test]
    fn identity_side_degraded_is_marked_in_meta_and_info() {
        let d = done(decide(
            &Attempt::Called(Validation::Success(identity(true))),
            false,
            &config(),
            NOW,
        ));
        assert_eq!((d.outcome, d.status), (Outcome::AcceptedDegraded, 200));
        let body = json(&d);
        assert_eq!(body["result"]["meta"]["degraded"], true);
        assert_eq!(
            body["result"]["info"],
            serde_json::json!({"degraded": true})
        );
    }

    #[test]
    fn refusals_and_errors() {
        let cases = [
            (
                Validation::Disconnect {
                    code: 4403,
                    reason: "banned".into(),
                },
                Outcome::Disconnected,
                401,
                r#"{"disconnect":{"code":4403,"reason":"banned"}}"#,
            ),
            (
                Validation::Disconnect {
                    code: 3000,
                    reason: "x".into(),
                },
                Outcome::Disconnected,
                401,
                r#"{"disconnect":{"code":4401,"reason":"invalid ticket"}}"#,
            ),
            (
                Validation::InvalidTicket,
                Outcome::InvalidTicket,
                401,
                r#"{"disconnect":{"code":4401,"reason":"invalid ticket"}}"#,
            ),
            (
                Validation::IdentityError {
                    code: 1,
                    message: "db".into(),
                },
                Outcome::IdentityError,
                503,
                r#"{"disconnect":{"code":4503,"reason":"ticket validation temporarily unavailable"}}"#,
            ),
            (
                Validation::Internal("x"),
                Outcome::InternalError,
                500,
                r#"{"error":{"code":100,"message":"internal error"}}"#,
            ),
        ];
        for (validation, outcome, status, body) in cases {
            // Degraded or not makes no difference to answers: only unreachability consults the pool.
            for degraded in [false, true] {
                let d = done(decide(
                    &Attempt::Called(validation.clone()),
                    degraded,
                    &config(),
                    NOW,
                ));
                assert_eq!((d.outcome, d.status), (outcome, status));
                assert_eq!(serde_json::to_string(&d.reply).expect("json"), body);
            }
        }
    }

    #[test]
    fn unreachable_consults_the_pool_only_past_the_window() {
        for attempt in [
            Attempt::Called(Validation::Unreachable(Unreachable::Unavailable)),
            Attempt::Called(Validation::Unreachable(Unreachable::DeadlineExceeded)),
            Attempt::Called(Validation::Unreachable(Unreachable::Transport)),
            Attempt::Skipped,
        ] {
            let d = done(decide(&attempt, false, &config(), NOW));
            assert_eq!((d.outcome, d.status), (Outcome::Unavailable, 503));
            assert_eq!(decide(&attempt, true, &config(), NOW), Next::ConsultPool);
        }
    }

    #[test]
    fn pool_hit_and_miss() {
        let digest = TicketDigest::of(b"pool-ticket");
        let d = from_pool(Take::Taken { remaining: 3 }, &digest, &config(), 1_000);
        assert_eq!((d.outcome, d.status), (Outcome::FallbackPoolConsumed, 200));
        let body = json(&d);
        let user = format!("fallback:{}", digest.short_hex());
        assert_eq!(body["result"]["user"], user.as_str());
        assert_eq!(body["result"]["expire_at"], 1_300);
        assert_eq!(
            body["result"]["info"],
            serde_json::json!({"degraded":true,"fallback_path":"pool"})
        );
        assert_eq!(body["result"]["meta"]["user"], user.as_str());
        assert_eq!(body["result"]["meta"]["fallback_path"], "pool");
        assert_eq!(body["result"]["meta"]["degraded"], true);

        let d = from_pool(Take::NotInPool, &digest, &config(), 1_000);
        assert_eq!((d.outcome, d.status), (Outcome::FallbackPoolMiss, 503));
    }

    #[test]
    fn missing_and_malformed_tickets() {
        let d = ticket_problem(TicketProblem::Missing);
        assert_eq!((d.outcome, d.status), (Outcome::InvalidTicket, 401));
        let d = ticket_problem(TicketProblem::Malformed("x"));
        assert_eq!((d.outcome, d.status), (Outcome::BadRequest, 400));
        assert_eq!(
            json(&d),
            serde_json::json!({"error":{"code":107,"message":"bad request"}})
        );
    }
}
