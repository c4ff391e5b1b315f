//! publish, up to the rate limit (which needs state): degraded, policy, payload shape and
//! size, in that order.

use super::context::Context;
use super::{bad_payload, degraded_session, denied, permission_denied};
use crate::policy::{ChannelPolicy, PublishDecision};
use crate::proxy::{Decision, Outcome, Payload, PublishResult, Reply};

/// `None` means "allowed so far: consult the rate limiter". An undecodable payload (bad
/// base64) is judged only after the degraded and policy checks, like any other bad payload.
pub fn publish(
    context: Context<'_>,
    policy: &ChannelPolicy,
    channel: &str,
    payload: &Payload<'_>,
) -> Option<Decision<PublishResult>> {
    let Ok(meta) = context else {
        return Some(permission_denied(Outcome::BadContext));
    };
    // An undecodable payload is checked as an empty one: the checks before the payload's own
    // do not depend on it, and an empty payload can only fail as "not an object".
    let bytes = payload
        .as_ref()
        .map_or(&b""[..], |p| p.as_deref().unwrap_or_default());
    let decision = match policy.check_publish(meta, channel, bytes) {
        PublishDecision::Allow if payload.is_err() => return Some(bad_payload()),
        decision => decision,
    };
    match decision {
        PublishDecision::Allow => None,
        PublishDecision::DegradedSession => Some(degraded_session()),
        PublishDecision::Deny(reason) => Some(permission_denied(denied(reason))),
        PublishDecision::PayloadNotObject => Some(bad_payload()),
        PublishDecision::PayloadTooLarge => Some(Decision::new(
            Outcome::PayloadTooLarge,
            Reply::error(413, "payload too large"),
        )),
    }
}

/// The rate limiter's verdict on a publish the policy allowed.
pub fn after_rate_limit(allowed: bool) -> Decision<PublishResult> {
    if allowed {
        Decision::new(Outcome::Allowed, Reply::Result(PublishResult))
    } else {
        Decision::new(
            Outcome::RateLimited,
            Reply::temporary_error(429, "too many requests"),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::decide::testing::meta;
    use crate::transport::http::wire::encode;

    fn some(bytes: &[u8]) -> Payload<'_> {
        Ok(Some(Cow::Borrowed(bytes)))
    }

    fn body(d: Option<Decision<PublishResult>>) -> String {
        String::from_utf8(encode(&d.expect("decided").reply)).expect("utf-8")
    }

    #[test]
    fn publish_order_degraded_policy_payload() {
        let policy = ChannelPolicy::builtin();
        let m = meta(false);
        let degraded = meta(true);
        let ok = br#"{"text":"hi"}"#;
        assert_eq!(publish(Ok(&m), &policy, "chat:fam1", &some(ok)), None);
        assert_eq!(
            body(publish(Ok(&degraded), &policy, "chat:fam1", &some(ok))),
            r#"{"disconnect":{"code":4403,"reason":"degraded session"}}"#
        );
        assert_eq!(
            body(publish(Ok(&m), &policy, "notifications:u1", &some(ok))),
            r#"{"error":{"code":403,"message":"permission denied"}}"#
        );
        assert_eq!(
            body(publish(Ok(&m), &policy, "chat:fam1", &some(b"[1]"))),
            r#"{"error":{"code":400,"message":"bad request"}}"#
        );
        assert_eq!(
            body(publish(Ok(&m), &policy, "chat:fam1", &Ok(None))),
            r#"{"error":{"code":400,"message":"bad request"}}"#
        );
        let big = format!(r#"{{"t":"{}"}}"#, "x".repeat(20_000));
        assert_eq!(
            body(publish(Ok(&m), &policy, "chat:fam1", &some(big.as_bytes()))),
            r#"{"error":{"code":413,"message":"payload too large"}}"#
        );
        assert_eq!(
            body(Some(after_rate_limit(false))),
            r#"{"error":{"code":429,"message":"too many requests","temporary":true}}"#
        );
        assert_eq!(body(Some(after_rate_limit(true))), r#"{"result":{}}"#);
    }
}
