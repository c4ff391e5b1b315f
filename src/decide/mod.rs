//! Pure decisions, one file per proxy type: plain functions over plain types, with no I/O,
//! no transport types and no clock reads (time comes in as an argument). The use cases in
//! `crate::service` gather the inputs (identity's answer, the pool, the rate limiter, the
//! backend's answer) and ask these functions what to answer.

pub mod connect;
pub mod context;
pub mod publish;
pub mod refresh;
pub mod rpc;
pub mod subscription;

use std::time::Duration;

use crate::proxy::{codes, Decision, Outcome, Reply};

/// Whole seconds as the signed Unix-time arithmetic `expire_at` uses, saturating.
pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn permission_denied<R>(outcome: Outcome) -> Decision<R> {
    Decision::new(outcome, Reply::error(403, "permission denied"))
}

fn degraded_session<R>() -> Decision<R> {
    Decision::new(
        Outcome::Degraded,
        Reply::disconnect(codes::DISCONNECT_DEGRADED, "degraded session"),
    )
}

fn denied(reason: crate::policy::DenyReason) -> Outcome {
    match reason {
        crate::policy::DenyReason::Degraded => Outcome::Degraded,
        _ => Outcome::Denied,
    }
}

/// A payload that is not a JSON object, or could not even be decoded (bad base64).
pub fn bad_payload<R>() -> Decision<R> {
    Decision::new(Outcome::BadPayload, Reply::error(400, "bad request"))
}

/// Fixtures the decision tests share.
#[cfg(test)]
pub(crate) mod testing {
    use crate::meta::ConnectionMeta;

    /// A member of `fam1` on the pro tier, degraded or not.
    pub fn meta(degraded: bool) -> ConnectionMeta {
        let mut m: ConnectionMeta =
            serde_json::from_str(r#"{"user":"u1","family_id":"fam1","subscription_tier":"pro"}"#)
                .expect("meta");
        m.degraded = degraded;
        m
    }
}
