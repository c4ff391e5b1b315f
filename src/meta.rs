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
