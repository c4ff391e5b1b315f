//! The identity context a connection carries in Centrifugo's private connection `meta`.
//!
//! Connect writes it; Centrifugo stores it server-side and sends it back verbatim on later
//! proxy calls that have `include_connection_meta: true`. Every later decision (subscribe,
//! publish, rpc, refresh) reads it from there, so this type is the contract between the
//! connect proxy and the others. It is never shown to other clients (unlike `info`).

use serde::{Deserialize, Serialize};

/// Meta attached to a connection at connect time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionMeta {
    /// The user id the connection was issued for; later requests must carry the same `user`.
    pub user: String,
    /// Family the user belongs to; empty when unknown (fallback connections).
    #[serde(default)]
    pub family_id: String,
    #[serde(default)]
    pub subscription_tier: SubscriptionTier,
    #[serde(default)]
    pub is_admin: bool,
    #[serde(default)]
    pub parental_state: ParentalState,
    /// True when the connection was admitted without a full identity check; everything
    /// sensitive fails closed for such connections.
    #[serde(default)]
    pub degraded: bool,
    /// How a degraded connection got in: `"pool"` for the static fallback pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_path: Option<String>,
}

/// Subscription tier, spelled as in meta (`free|pro|family|unspecified`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionTier {
    #[default]
    Unspecified,
    Free,
    Pro,
    Family,
}

impl SubscriptionTier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Family => "family",
        }
    }
}

/// Parental controls in force for the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentalState {
    #[serde(default)]
    pub screen_time_lock: bool,
    #[serde(default)]
    pub feature_lock_chat: bool,
    #[serde(default)]
    pub feature_lock_diary: bool,
    #[serde(default)]
    pub feature_lock_flowcoach: bool,
}

impl ParentalState {
    /// Every lock on: used where the real state is unknown, so that nothing a lock guards
    /// opens by accident.
    pub fn all_locked() -> Self {
        Self {
            screen_time_lock: true,
            feature_lock_chat: true,
            feature_lock_diary: true,
            feature_lock_flowcoach: true,
        }
    }
}

impl ConnectionMeta {
    /// The meta JSON, exactly as `serde_json::to_vec` writes it (the tests hold the two
    /// together). Written by hand because it is built on every connect: the derived
    /// serializer escapes each of the fourteen static keys, and only the three free-text
    /// values need it.
    pub fn to_json(&self) -> Vec<u8> {
        fn flag(out: &mut Vec<u8>, key: &[u8], value: bool) {
            out.extend_from_slice(key);
            out.extend_from_slice(if value { b"true" } else { b"false" });
        }
        fn text(out: &mut Vec<u8>, value: &str) {
            // Writing a str into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, value);
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"user\":");
        text(&mut out, &self.user);
        out.extend_from_slice(b",\"family_id\":");
        text(&mut out, &self.family_id);
        out.extend_from_slice(b",\"subscription_tier\":\"");
        out.extend_from_slice(self.subscription_tier.as_str().as_bytes());
        out.push(b'"');
        flag(&mut out, b",\"is_admin\":", self.is_admin);
        let p = &self.parental_state;
        flag(
            &mut out,
            b",\"parental_state\":{\"screen_time_lock\":",
            p.screen_time_lock,
        );
        flag(&mut out, b",\"feature_lock_chat\":", p.feature_lock_chat);
        flag(&mut out, b",\"feature_lock_diary\":", p.feature_lock_diary);
        flag(
            &mut out,
            b",\"feature_lock_flowcoach\":",
            p.feature_lock_flowcoach,
        );
        flag(&mut out, b"},\"degraded\":", self.degraded);
        if let Some(path) = &self.fallback_path {
            out.extend_from_slice(b",\"fallback_path\":");
            text(&mut out, path);
        }
        out.push(b'}');
        out
    }

    /// `FIELDS` in name order, the order `info` is written in.
    pub const FIELDS_BY_NAME: &'static [&'static str] = &[
        "degraded",
        "fallback_path",
        "family_id",
        "is_admin",
        "parental_state",
        "subscription_tier",
        "user",
    ];

    /// One field's value as JSON text; `None` for an unknown field or an absent
    /// `fallback_path`.
    pub fn field_json(&self, name: &str) -> Option<Vec<u8>> {
        let value = match name {
            "user" => serde_json::to_vec(&self.user),
            "family_id" => serde_json::to_vec(&self.family_id),
            "subscription_tier" => serde_json::to_vec(&self.subscription_tier),
            "is_admin" => serde_json::to_vec(&self.is_admin),
            "parental_state" => serde_json::to_vec(&self.parental_state),
            "degraded" => serde_json::to_vec(&self.degraded),
            "fallback_path" => serde_json::to_vec(self.fallback_path.as_ref()?),
            _ => return None,
        };
        value.ok()
    }

    /// Field names as they appear in meta JSON; `CONNECT_INFO_FIELDS` may name any of them.
    pub const FIELDS: &'static [&'static str] = &[
        "user",
        "family_id",
        "subscription_tier",
        "is_admin",
        "parental_state",
        "degraded",
        "fallback_path",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        user: &str,
        family: &str,
        tier: SubscriptionTier,
        path: Option<&str>,
    ) -> ConnectionMeta {
        ConnectionMeta {
            user: user.into(),
            family_id: family.into(),
            subscription_tier: tier,
            is_admin: user.len().is_multiple_of(2),
            parental_state: ParentalState {
                screen_time_lock: true,
                feature_lock_chat: false,
                feature_lock_diary: user.is_empty(),
                feature_lock_flowcoach: true,
            },
            degraded: path.is_some(),
            fallback_path: path.map(Into::into),
        }
    }

    #[test]
    fn hand_written_json_is_what_serde_writes() {
        let tiers = [
            SubscriptionTier::Unspecified,
            SubscriptionTier::Free,
            SubscriptionTier::Pro,
            SubscriptionTier::Family,
        ];
        let texts = [
            "",
            "u-1",
            "quote\" back\\ slash",
            "ctrl\u{1}\n",
            "ünï\u{2028}",
        ];
        for (i, user) in texts.iter().enumerate() {
            for family in texts {
                for path in [None, Some("pool"), Some(texts[(i + 1) % texts.len()])] {
                    let meta = sample(user, family, tiers[i % tiers.len()], path);
                    let derived = serde_json::to_vec(&meta).expect("serialise");
                    assert_eq!(
                        String::from_utf8(meta.to_json()).expect("utf-8"),
                        String::from_utf8(derived).expect("utf-8"),
                    );
                }
            }
        }
        let mut admin = sample("ab", "", SubscriptionTier::Pro, None);
        admin.parental_state = ParentalState::all_locked();
        assert_eq!(
            admin.to_json(),
            serde_json::to_vec(&admin).expect("serialise")
        );
    }

    #[test]
    fn hand_written_json_reads_back() {
        let meta = sample("u\"1", "f", SubscriptionTier::Family, Some("pool"));
        let back: ConnectionMeta = serde_json::from_slice(&meta.to_json()).expect("parse");
        assert_eq!(back, meta);
    }
}
