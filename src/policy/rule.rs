//! One namespace's rule in its ready-to-evaluate form, and the small checks it is made of.
//!
//! `load` turns the file's fields into these types once at startup (durations instead of
//! second counts, an `Option<PublishLimit>` instead of a flag plus optional numbers), so the
//! per-request code reads no raw configuration.

use std::time::Duration;

use serde::Deserialize;

use crate::meta::{ConnectionMeta, ParentalState, SubscriptionTier};

use super::DenyReason;

/// Who owns the part of a channel name after the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Owner {
    /// The connection's `meta.user`.
    User,
    /// The connection's `meta.family_id`.
    Family,
    /// Nobody: any connection the other checks admit may use any channel in the namespace.
    None,
}

impl Owner {
    /// Whether `meta` owns a channel whose name after the namespace is `rest`.
    ///
    /// Only the first `:`-separated segment of `rest` names the owner, so one owner can
    /// have many channels (`chat:fam-1`, `chat:fam-1:room-7`).
    pub(super) fn owns(self, meta: &ConnectionMeta, rest: &str) -> bool {
        let owner_id = match self {
            Self::None => return true,
            Self::User => meta.user.as_str(),
            Self::Family => meta.family_id.as_str(),
        };
        let segment = rest.split_once(':').map_or(rest, |(first, _)| first);
        // An empty id means "unknown" (fallback connections have no family), never
        // "owner of the empty name": otherwise `chat:` would be shared by all of them.
        !owner_id.is_empty() && owner_id == segment
    }
}

/// A parental lock from `meta.parental_state` that can close a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[expect(
    clippy::enum_variant_names,
    reason = "variants mirror the ParentalState field names, which operators write in the file"
)]
pub(super) enum Lock {
    ScreenTimeLock,
    FeatureLockChat,
    FeatureLockDiary,
    FeatureLockFlowcoach,
}

impl Lock {
    /// The lock's name, as spelled in the policy file and in `meta`.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::ScreenTimeLock => "screen_time_lock",
            Self::FeatureLockChat => "feature_lock_chat",
            Self::FeatureLockDiary => "feature_lock_diary",
            Self::FeatureLockFlowcoach => "feature_lock_flowcoach",
        }
    }

    pub(super) fn is_set(self, state: &ParentalState) -> bool {
        match self {
            Self::ScreenTimeLock => state.screen_time_lock,
            Self::FeatureLockChat => state.feature_lock_chat,
            Self::FeatureLockDiary => state.feature_lock_diary,
            Self::FeatureLockFlowcoach => state.feature_lock_flowcoach,
        }
    }
}

/// The tier order the policy uses: unspecified < free < pro < family.
///
/// Spelled out here rather than taken from `SubscriptionTier`'s derived `Ord`, so that
/// reordering that enum's variants can't quietly change who gets in.
pub(super) fn tier_rank(tier: SubscriptionTier) -> u8 {
    match tier {
        SubscriptionTier::Unspecified => 0,
        SubscriptionTier::Free => 1,
        SubscriptionTier::Pro => 2,
        // The family plan includes everything pro has.
        SubscriptionTier::Family => 3,
    }
}

/// What a client may publish into a namespace that allows client publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PublishLimit {
    pub(super) max_bytes: usize,
    pub(super) require_object: bool,
}

/// One namespace's rule, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NamespaceRule {
    pub(super) owner: Owner,
    pub(super) require_admin: bool,
    pub(super) closed_by: Vec<Lock>,
    pub(super) min_tier: Option<SubscriptionTier>,
    pub(super) subscribe: bool,
    /// `None` when clients may not publish.
    pub(super) publish: Option<PublishLimit>,
    pub(super) allow_degraded: bool,
    pub(super) subscription_ttl: Option<Duration>,
}

impl NamespaceRule {
    /// The checks subscribe and publish share, in their documented order:
    /// admin, owner, locks, tier.
    pub(super) fn check_access(&self, meta: &ConnectionMeta, rest: &str) -> Result<(), DenyReason> {
        if self.require_admin && !meta.is_admin {
            return Err(DenyReason::AdminOnly);
        }
        if !self.owner.owns(meta, rest) {
            return Err(DenyReason::NotOwner);
        }
        if let Some(lock) = self
            .closed_by
            .iter()
            .find(|lock| lock.is_set(&meta.parental_state))
        {
            return Err(DenyReason::Locked(lock.as_str()));
        }
        if let Some(min) = self.min_tier {
            if tier_rank(meta.subscription_tier) < tier_rank(min) {
                return Err(DenyReason::TierTooLow);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_order_is_unspecified_free_pro_family() {
        let ranks = [
            SubscriptionTier::Unspecified,
            SubscriptionTier::Free,
            SubscriptionTier::Pro,
            SubscriptionTier::Family,
        ]
        .map(tier_rank);
        assert!(ranks.windows(2).all(|pair| pair[0] < pair[1]), "{ranks:?}");
    }

    #[test]
    fn lock_names_match_their_serde_spelling() {
        for lock in [
            Lock::ScreenTimeLock,
            Lock::FeatureLockChat,
            Lock::FeatureLockDiary,
            Lock::FeatureLockFlowcoach,
        ] {
            let parsed: Lock = serde_json::from_value(serde_json::json!(lock.as_str()))
                .expect("as_str spelling deserializes");
            assert_eq!(parsed, lock);
        }
    }

    #[test]
    fn each_lock_reads_its_own_flag() {
        let cases = [
            (
                Lock::ScreenTimeLock,
                ParentalState {
                    screen_time_lock: true,
                    ..Default::default()
                },
            ),
            (
                Lock::FeatureLockChat,
                ParentalState {
                    feature_lock_chat: true,
                    ..Default::default()
                },
            ),
            (
                Lock::FeatureLockDiary,
                ParentalState {
                    feature_lock_diary: true,
                    ..Default::default()
                },
            ),
            (
                Lock::FeatureLockFlowcoach,
                ParentalState {
                    feature_lock_flowcoach: true,
                    ..Default::default()
                },
            ),
        ];
        for (lock, only_this_set) in cases {
            assert!(lock.is_set(&only_this_set), "{lock:?}");
            assert!(!lock.is_set(&ParentalState::default()), "{lock:?}");
            for (other, other_state) in cases {
                if other != lock {
                    assert!(!lock.is_set(&other_state), "{lock:?} read {other:?}'s flag");
                }
            }
        }
    }
}
