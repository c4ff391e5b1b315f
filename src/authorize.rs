//! Decisions for the proxies that follow connect (refresh, subscribe, sub_refresh, publish,
//! rpc), as plain functions over the identity context and the channel policy.
//!
//! The identity context comes from the request's `meta`, which Centrifugo sends only when the
//! proxy has `include_connection_meta: true`. A request without usable meta, or whose `user`
//! differs from `meta.user`, is refused (fail closed) with the likely misconfiguration named.
//! Every decision is answered with HTTP 200 and the decision in the body, because Centrifugo
//! reads only 200 bodies.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::centrifugo::{codes, PayloadError, ProxyRequest, Reply};
use crate::meta::ConnectionMeta;
use crate::policy::{ChannelPolicy, DenyReason, PublishDecision, SubscribeDecision};

/// Why the identity context could not be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ContextProblem {
    #[error("request carries no meta: enable include_connection_meta on this proxy in Centrifugo's config")]
    MissingMeta,
    #[error("meta is not this service's connection meta: was the connection made through this connect proxy?")]
    UnparseableMeta,
    #[error("request user differs from meta.user: meta was not issued for this connection")]
    UserMismatch,
}

/// Reads and checks the identity context.
pub fn identity_context(request: &ProxyRequest) -> Result<ConnectionMeta, ContextProblem> {
    let raw = request.meta.as_deref().ok_or(ContextProblem::MissingMeta)?;
    let meta: ConnectionMeta =
        serde_json::from_str(raw.get()).map_err(|_| ContextProblem::UnparseableMeta)?;
    if meta.user.is_empty() || request.user.as_deref().unwrap_or("") != meta.user {
        return Err(ContextProblem::UserMismatch);
    }
    Ok(meta)
}

/// A decision: a bounded outcome label and the reply body (always answered with 200).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: &'static str,
    pub reply: Reply<Value>,
}

fn result(fields: Map<String, Value>) -> Reply<Value> {
    Reply::Result(Value::Object(fields))
}

fn expire_at(unix: i64) -> Reply<Value> {
    let mut fields = Map::new();
    fields.insert("expire_at".into(), Value::from(unix));
    result(fields)
}

fn expired(outcome: &'static str) -> Decision {
    let mut fields = Map::new();
    fields.insert("expired".into(), Value::Bool(true));
    Decision {
        outcome,
        reply: result(fields),
    }
}

fn permission_denied(outcome: &'static str) -> Decision {
    Decision {
        outcome,
        reply: Reply::error(403, "permission denied"),
    }
}

fn degraded_session() -> Decision {
    Decision {
        outcome: "degraded",
        reply: Reply::disconnect(codes::DISCONNECT_DEGRADED, "degraded session"),
    }
}

fn denied(reason: DenyReason) -> &'static str {
    match reason {
        DenyReason::Degraded => "degraded",
        _ => "denied",
    }
}

/// Inputs for refresh.
pub struct RefreshInputs {
    pub now_unix: i64,
    /// A failure streak towards identity-service is open (it is not known to be reachable).
    pub identity_streak_open: bool,
    pub refresh_ttl_s: i64,
    pub fallback_ttl_s: i64,
}

/// refresh: never an error or disconnect (Centrifugo ignores them); expire or extend.
pub fn refresh(
    context: Result<&ConnectionMeta, ContextProblem>,
    inputs: &RefreshInputs,
) -> Decision {
    let Ok(meta) = context else {
        return expired("bad_context");
    };
    if meta.degraded {
        // A degraded connection lives only while identity-service is still unreachable;
        // once it answers again, the client reconnects (3005) and gets a real check.
        if !inputs.identity_streak_open {
            return expired("expired");
        }
        return Decision {
            outcome: "extended_degraded",
            reply: expire_at(inputs.now_unix.saturating_add(inputs.fallback_ttl_s)),
        };
    }
    Decision {
        outcome: "extended",
        reply: expire_at(inputs.now_unix.saturating_add(inputs.refresh_ttl_s)),
    }
}

/// subscribe: the policy; allow is `{}` plus `expire_at` when the namespace sets a TTL.
pub fn subscribe(
    context: Result<&ConnectionMeta, ContextProblem>,
    policy: &ChannelPolicy,
    channel: &str,
    now_unix: i64,
) -> Decision {
    subscription(Subscription::New, context, policy, channel, now_unix)
}

/// sub_refresh: re-apply the policy; still allowed extends, otherwise the subscription expires.
pub fn sub_refresh(
    context: Result<&ConnectionMeta, ContextProblem>,
    policy: &ChannelPolicy,
    channel: &str,
    now_unix: i64,
) -> Decision {
    subscription(Subscription::Refresh, context, policy, channel, now_unix)
}

/// subscribe and sub_refresh ask the policy the same question; they differ only in how a
/// refusal is spelled (Centrifugo ignores errors on sub_refresh: only `expired` ends it).
#[derive(Clone, Copy)]
enum Subscription {
    New,
    Refresh,
}

fn subscription(
    kind: Subscription,
    context: Result<&ConnectionMeta, ContextProblem>,
    policy: &ChannelPolicy,
    channel: &str,
    now_unix: i64,
) -> Decision {
    let refuse = |outcome| match kind {
        Subscription::New => permission_denied(outcome),
        Subscription::Refresh => expired(if outcome == "bad_context" {
            outcome
        } else {
            "expired"
        }),
    };
    let Ok(meta) = context else {
        return refuse("bad_context");
    };
    match policy.check_subscribe(meta, channel) {
        // On refresh without a TTL (the policy changed), `{}` makes it non-expiring.
        SubscribeDecision::Allow { ttl } => Decision {
            outcome: match kind {
                Subscription::New => "allowed",
                Subscription::Refresh => "extended",
            },
            reply: allowed_until(ttl, now_unix),
        },
        SubscribeDecision::Deny(reason) => refuse(denied(reason)),
    }
}

/// publish, up to the rate limit (which needs state): degraded, policy, payload shape and size.
/// `payload` is `Err` when `b64data` could not be decoded; that is judged only after the
/// degraded and policy checks, like any other bad payload.
/// `None` means "allowed so far: consult the rate limiter".
pub fn publish(
    context: Result<&ConnectionMeta, ContextProblem>,
    policy: &ChannelPolicy,
    channel: &str,
    payload: Result<Option<&[u8]>, PayloadError>,
) -> Option<Decision> {
    let Ok(meta) = context else {
        return Some(permission_denied("bad_context"));
    };
    // An undecodable payload is checked as an empty one: the checks before the payload's own
    // do not depend on it, and an empty payload can only fail as "not an object".
    let bytes = payload.as_ref().map_or(Some(&b""[..]), |p| *p);
    let decision = match policy.check_publish(meta, channel, bytes.unwrap_or_default()) {
        PublishDecision::Allow if payload.is_err() => return Some(bad_payload()),
        decision => decision,
    };
    match decision {
        PublishDecision::Allow => None,
        PublishDecision::DegradedSession => Some(degraded_session()),
        PublishDecision::Deny(reason) => Some(permission_denied(denied(reason))),
        PublishDecision::PayloadNotObject => Some(bad_payload()),
        PublishDecision::PayloadTooLarge => Some(Decision {
            outcome: "payload_too_large",
            reply: Reply::error(413, "payload too large"),
        }),
    }
}

/// A payload that is not a JSON object, or could not even be decoded (bad base64).
pub fn bad_payload() -> Decision {
    Decision {
        outcome: "bad_payload",
        reply: Reply::error(400, "bad request"),
    }
}

pub fn publish_allowed() -> Decision {
    Decision {
        outcome: "allowed",
        reply: result(Map::new()),
    }
}

pub fn rate_limited() -> Decision {
    Decision {
        outcome: "rate_limited",
        reply: Reply::temporary_error(429, "too many requests"),
    }
}

/// rpc, before the backend call: `Err` is the final answer, `Ok` the backend URL.
pub fn rpc<'a>(
    context: Result<&ConnectionMeta, ContextProblem>,
    routes: &'a crate::rpc::Routes,
    method: &str,
) -> Result<&'a str, Decision> {
    let meta = context.map_err(|_| permission_denied("bad_context"))?;
    if meta.degraded {
        return Err(degraded_session());
    }
    routes.backend_for(method).ok_or(Decision {
        outcome: "method_not_found",
        reply: Reply::error(404, "method not found"),
    })
}

/// `{}`, or `{"expire_at": now + ttl}` when the namespace sets a subscription TTL.
fn allowed_until(ttl: Option<std::time::Duration>, now_unix: i64) -> Reply<Value> {
    match ttl {
        Some(ttl) => expire_at(now_unix.saturating_add(secs(ttl))),
        None => result(Map::new()),
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The reply as JSON text, for logs-free tests and handlers.
pub fn to_json<T: Serialize>(reply: &T) -> Value {
    serde_json::to_value(reply).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{ParentalState, SubscriptionTier};
    use serde_json::json;

    fn meta(user: &str) -> ConnectionMeta {
        ConnectionMeta {
            user: user.into(),
            family_id: "fam1".into(),
            subscription_tier: SubscriptionTier::Pro,
            is_admin: false,
            parental_state: ParentalState::default(),
            degraded: false,
            fallback_path: None,
        }
    }

    fn request(body: Value) -> ProxyRequest {
        serde_json::from_value(body).expect("request")
    }

    #[test]
    fn context_requires_meta_with_the_same_user() {
        let m = serde_json::to_value(meta("u1")).expect("json");
        assert!(identity_context(&request(json!({"user":"u1","meta":m}))).is_ok());
        assert_eq!(
            identity_context(&request(json!({"user":"u1"}))),
            Err(ContextProblem::MissingMeta)
        );
        assert_eq!(
            identity_context(&request(json!({"user":"u2","meta":m}))),
            Err(ContextProblem::UserMismatch)
        );
        assert_eq!(
            identity_context(&request(json!({"user":"u1","meta":{"x":1}}))),
            Err(ContextProblem::UnparseableMeta)
        );
        assert_eq!(
            identity_context(&request(json!({"user":"u1","meta":"str"}))),
            Err(ContextProblem::UnparseableMeta)
        );
        let anon = serde_json::to_value(meta("")).expect("json");
        assert_eq!(
            identity_context(&request(json!({"user":"","meta":anon}))),
            Err(ContextProblem::UserMismatch)
        );
    }

    fn inputs(streak_open: bool) -> RefreshInputs {
        RefreshInputs {
            now_unix: 1000,
            identity_streak_open: streak_open,
            refresh_ttl_s: 3600,
            fallback_ttl_s: 300,
        }
    }

    #[test]
    fn refresh_extends_normal_and_expires_degraded_after_recovery() {
        let normal = meta("u1");
        assert_eq!(
            to_json(&refresh(Ok(&normal), &inputs(false)).reply),
            json!({"result":{"expire_at":4600}})
        );
        let mut degraded = meta("u1");
        degraded.degraded = true;
        assert_eq!(
            to_json(&refresh(Ok(&degraded), &inputs(true)).reply),
            json!({"result":{"expire_at":1300}})
        );
        assert_eq!(
            to_json(&refresh(Ok(&degraded), &inputs(false)).reply),
            json!({"result":{"expired":true}})
        );
        assert_eq!(
            to_json(&refresh(Err(ContextProblem::MissingMeta), &inputs(false)).reply),
            json!({"result":{"expired":true}})
        );
    }

    #[test]
    fn subscribe_and_sub_refresh_follow_the_policy() {
        let policy = ChannelPolicy::builtin();
        let m = meta("u1");
        assert_eq!(
            to_json(&subscribe(Ok(&m), &policy, "chat:fam1", 1000).reply),
            json!({"result":{"expire_at":1900}})
        );
        assert_eq!(
            to_json(&subscribe(Ok(&m), &policy, "family:fam1", 1000).reply),
            json!({"result":{}})
        );
        assert_eq!(
            to_json(&subscribe(Ok(&m), &policy, "chat:fam2", 1000).reply),
            json!({"error":{"code":403,"message":"permission denied"}})
        );
        assert_eq!(
            to_json(
                &subscribe(
                    Err(ContextProblem::UserMismatch),
                    &policy,
                    "chat:fam1",
                    1000
                )
                .reply
            ),
            json!({"error":{"code":403,"message":"permission denied"}})
        );
        assert_eq!(
            to_json(&sub_refresh(Ok(&m), &policy, "chat:fam1", 1000).reply),
            json!({"result":{"expire_at":1900}})
        );
        let mut locked = meta("u1");
        locked.parental_state.feature_lock_chat = true;
        assert_eq!(
            to_json(&sub_refresh(Ok(&locked), &policy, "chat:fam1", 1000).reply),
            json!({"result":{"expired":true}})
        );
        assert_eq!(
            to_json(
                &sub_refresh(Err(ContextProblem::MissingMeta), &policy, "chat:fam1", 1000).reply
            ),
            json!({"result":{"expired":true}})
        );
    }

    #[test]
    fn publish_order_degraded_policy_payload() {
        let policy = ChannelPolicy::builtin();
        let m = meta("u1");
        let mut degraded = meta("u1");
        degraded.degraded = true;
        let body = br#"{"text":"hi"}"#;
        assert_eq!(publish(Ok(&m), &policy, "chat:fam1", Ok(Some(body))), None);
        assert_eq!(
            to_json(
                &publish(Ok(&degraded), &policy, "chat:fam1", Ok(Some(body)))
                    .expect("decided")
                    .reply
            ),
            json!({"disconnect":{"code":4403,"reason":"degraded session"}})
        );
        assert_eq!(
            to_json(
                &publish(Ok(&m), &policy, "notifications:u1", Ok(Some(body)))
                    .expect("decided")
                    .reply
            ),
            json!({"error":{"code":403,"message":"permission denied"}})
        );
        assert_eq!(
            to_json(
                &publish(Ok(&m), &policy, "chat:fam1", Ok(Some(b"[1]")))
                    .expect("decided")
                    .reply
            ),
            json!({"error":{"code":400,"message":"bad request"}})
        );
        assert_eq!(
            to_json(
                &publish(Ok(&m), &policy, "chat:fam1", Ok(None))
                    .expect("decided")
                    .reply
            ),
            json!({"error":{"code":400,"message":"bad request"}})
        );
        let big = format!(r#"{{"t":"{}"}}"#, "x".repeat(20_000));
        assert_eq!(
            to_json(
                &publish(Ok(&m), &policy, "chat:fam1", Ok(Some(big.as_bytes())))
                    .expect("decided")
                    .reply
            ),
            json!({"error":{"code":413,"message":"payload too large"}})
        );
        assert_eq!(
            to_json(&rate_limited().reply),
            json!({"error":{"code":429,"message":"too many requests","temporary":true}})
        );
    }

    #[test]
    fn rpc_refuses_degraded_and_unknown_methods() {
        let routes = crate::rpc::Routes::parse("family=http://family/rpc").expect("routes");
        let m = meta("u1");
        assert_eq!(
            rpc(Ok(&m), &routes, "family.get_members"),
            Ok("http://family/rpc")
        );
        let err = rpc(Ok(&m), &routes, "diary.list").expect_err("unknown");
        assert_eq!(
            to_json(&err.reply),
            json!({"error":{"code":404,"message":"method not found"}})
        );
        let mut degraded = meta("u1");
        degraded.degraded = true;
        let err = rpc(Ok(&degraded), &routes, "family.get_members").expect_err("degraded");
        assert_eq!(
            to_json(&err.reply),
            json!({"disconnect":{"code":4403,"reason":"degraded session"}})
        );
    }
}
