//! refresh: extend a connection, or expire it. Centrifugo ignores errors and disconnects
//! here, so every answer is a result.

use super::context::Context;
use crate::proxy::{Decision, Extension, Outcome, Reply};

/// What refresh needs besides the context.
pub struct RefreshInputs {
    pub now_unix: i64,
    /// A failure streak towards identity-service is open (it is not known to be reachable).
    pub identity_streak_open: bool,
    pub refresh_ttl_s: i64,
    pub fallback_ttl_s: i64,
}

pub fn refresh(context: Context<'_>, inputs: &RefreshInputs) -> Decision<Extension> {
    let Ok(meta) = context else {
        return expired(Outcome::BadContext);
    };
    if meta.degraded {
        // A degraded connection lives only while identity-service is still unreachable;
        // once it answers again, the client reconnects (3005) and gets a real check.
        if !inputs.identity_streak_open {
            return expired(Outcome::Expired);
        }
        return extend(
            Outcome::ExtendedDegraded,
            inputs.now_unix.saturating_add(inputs.fallback_ttl_s),
        );
    }
    extend(
        Outcome::Extended,
        inputs.now_unix.saturating_add(inputs.refresh_ttl_s),
    )
}

pub(super) fn expired(outcome: Outcome) -> Decision<Extension> {
    Decision::new(outcome, Reply::Result(Extension::Expired))
}

fn extend(outcome: Outcome, until: i64) -> Decision<Extension> {
    Decision::new(outcome, Reply::Result(Extension::Until(Some(until))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::context::ContextProblem;
    use crate::decide::testing::meta;
    use crate::transport::http::wire::encode;

    fn inputs(streak_open: bool) -> RefreshInputs {
        RefreshInputs {
            now_unix: 1000,
            identity_streak_open: streak_open,
            refresh_ttl_s: 3600,
            fallback_ttl_s: 300,
        }
    }

    fn body(d: &Decision<Extension>) -> String {
        String::from_utf8(encode(&d.reply)).expect("utf-8")
    }

    #[test]
    fn refresh_extends_normal_and_expires_degraded_after_recovery() {
        let normal = meta(false);
        assert_eq!(
            body(&refresh(Ok(&normal), &inputs(false))),
            r#"{"result":{"expire_at":4600}}"#
        );
        let degraded = meta(true);
        assert_eq!(
            body(&refresh(Ok(&degraded), &inputs(true))),
            r#"{"result":{"expire_at":1300}}"#
        );
        assert_eq!(
            body(&refresh(Ok(&degraded), &inputs(false))),
            r#"{"result":{"expired":true}}"#
        );
        assert_eq!(
            body(&refresh(Err(ContextProblem::MissingMeta), &inputs(false))),
            r#"{"result":{"expired":true}}"#
        );
    }
}
