//! subscribe and sub_refresh ask the channel policy the same question; they differ only in
//! how a refusal is spelled (Centrifugo ignores errors on sub_refresh: only `expired` ends a
//! subscription).

use std::time::Duration;

use super::context::Context;
use super::refresh::expired;
use super::{denied, permission_denied, secs};
use crate::policy::{ChannelPolicy, SubscribeDecision};
use crate::proxy::{Decision, Extension, Outcome, Reply, SubscribeResult};

/// subscribe: the policy; allow is `{}` plus `expire_at` when the namespace sets a TTL.
pub fn subscribe(
    context: Context<'_>,
    policy: &ChannelPolicy,
    channel: &str,
    now_unix: i64,
) -> Decision<SubscribeResult> {
    let Ok(meta) = context else {
        return permission_denied(Outcome::BadContext);
    };
    match policy.check_subscribe(meta, channel) {
        SubscribeDecision::Allow { ttl } => Decision::new(
            Outcome::Allowed,
            Reply::Result(SubscribeResult {
                expire_at: until(ttl, now_unix),
            }),
        ),
        SubscribeDecision::Deny(reason) => permission_denied(denied(reason)),
    }
}

/// sub_refresh: re-apply the policy; still allowed extends, otherwise the subscription expires.
pub fn sub_refresh(
    context: Context<'_>,
    policy: &ChannelPolicy,
    channel: &str,
    now_unix: i64,
) -> Decision<Extension> {
    let Ok(meta) = context else {
        return expired(Outcome::BadContext);
    };
    match policy.check_subscribe(meta, channel) {
        // Without a TTL (the policy changed), `{}` makes it non-expiring.
        SubscribeDecision::Allow { ttl } => Decision::new(
            Outcome::Extended,
            Reply::Result(Extension::Until(until(ttl, now_unix))),
        ),
        SubscribeDecision::Deny(_) => expired(Outcome::Expired),
    }
}

fn until(ttl: Option<Duration>, now_unix: i64) -> Option<i64> {
    ttl.map(|ttl| now_unix.saturating_add(secs(ttl)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::context::ContextProblem;
    use crate::transport::http::wire::encode;

    fn meta() -> crate::meta::ConnectionMeta {
        crate::decide::testing::meta(false)
    }

    fn body<R: crate::transport::http::wire::WireResult>(d: &Decision<R>) -> String {
        String::from_utf8(encode(&d.reply)).expect("utf-8")
    }

    #[test]
    fn subscribe_and_sub_refresh_follow_the_policy() {
        let policy = ChannelPolicy::builtin();
        let m = meta();
        assert_eq!(
            body(&subscribe(Ok(&m), &policy, "chat:fam1", 1000)),
            r#"{"result":{"expire_at":1900}}"#
        );
        assert_eq!(
            body(&subscribe(Ok(&m), &policy, "family:fam1", 1000)),
            r#"{"result":{}}"#
        );
        assert_eq!(
            body(&subscribe(Ok(&m), &policy, "chat:fam2", 1000)),
            r#"{"error":{"code":403,"message":"permission denied"}}"#
        );
        assert_eq!(
            body(&subscribe(
                Err(ContextProblem::UserMismatch),
                &policy,
                "chat:fam1",
                1000
            )),
            r#"{"error":{"code":403,"message":"permission denied"}}"#
        );
        assert_eq!(
            body(&sub_refresh(Ok(&m), &policy, "chat:fam1", 1000)),
            r#"{"result":{"expire_at":1900}}"#
        );
        let mut locked = meta();
        locked.parental_state.feature_lock_chat = true;
        assert_eq!(
            body(&sub_refresh(Ok(&locked), &policy, "chat:fam1", 1000)),
            r#"{"result":{"expired":true}}"#
        );
        assert_eq!(
            body(&sub_refresh(
                Err(ContextProblem::MissingMeta),
                &policy,
                "chat:fam1",
                1000
            )),
            r#"{"result":{"expired":true}}"#
        );
    }
}
