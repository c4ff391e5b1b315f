//! The identity context of a call after connect: the connection meta that connect wrote,
//! which Centrifugo sends back verbatim when the proxy has `include_connection_meta: true`.
//! A call without usable meta, or whose `user` differs from `meta.user`, is refused (fail
//! closed) with the likely misconfiguration named.

use crate::meta::ConnectionMeta;

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

/// The context each decision after connect starts from.
pub type Context<'a> = Result<&'a ConnectionMeta, ContextProblem>;

/// Reads and checks the identity context.
pub fn identity_context(meta: Option<&[u8]>, user: &str) -> Result<ConnectionMeta, ContextProblem> {
    let raw = meta
        .filter(|m| !m.is_empty())
        .ok_or(ContextProblem::MissingMeta)?;
    let meta: ConnectionMeta =
        serde_json::from_slice(raw).map_err(|_| ContextProblem::UnparseableMeta)?;
    if meta.user.is_empty() || user != meta.user {
        return Err(ContextProblem::UserMismatch);
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{ParentalState, SubscriptionTier};

    pub(crate) fn meta(user: &str) -> ConnectionMeta {
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

    #[test]
    fn context_requires_meta_with_the_same_user() {
        let m = serde_json::to_vec(&meta("u1")).expect("json");
        assert!(identity_context(Some(&m), "u1").is_ok());
        assert_eq!(
            identity_context(None, "u1"),
            Err(ContextProblem::MissingMeta)
        );
        assert_eq!(
            identity_context(Some(&m), "u2"),
            Err(ContextProblem::UserMismatch)
        );
        assert_eq!(
            identity_context(Some(br#"{"x":1}"#), "u1"),
            Err(ContextProblem::UnparseableMeta)
        );
        assert_eq!(
            identity_context(Some(br#""str""#), "u1"),
            Err(ContextProblem::UnparseableMeta)
        );
        let anon = serde_json::to_vec(&meta("")).expect("json");
        assert_eq!(
            identity_context(Some(&anon), ""),
            Err(ContextProblem::UserMismatch)
        );
    }
}
