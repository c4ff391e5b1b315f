//! Channel policy: may this connection subscribe to, or publish into, this channel?
//!
//! The subscribe, publish and sub_refresh proxies all ask that question about the identity
//! a connection carries in its `meta` ([`ConnectionMeta`]). The answer comes from a
//! declarative per-namespace table, loaded and validated once at startup
//! ([`ChannelPolicy::load`], or [`ChannelPolicy::builtin`] for the default that ships as
//! `config/channel-policy.toml`), and evaluated by plain functions: no I/O, no clock, and
//! no owned strings on the way to a decision. The format reference is the README (section "Channel policy").
//!
//! sub_refresh has no check of its own: it asks [`ChannelPolicy::check_subscribe`] again,
//! which is what makes a lock or tier change reach subscriptions that are already open.
//!
//! # Layout
//! - here: [`ChannelPolicy`], the decisions, and their evaluation order;
//! - `rule`: one namespace's validated rule and the owner, lock and tier checks;
//! - `load`: the file format, parsing and validation, and [`PolicyError`].

pub mod live;
mod load;
mod rule;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::IgnoredAny;

use crate::meta::ConnectionMeta;

pub use load::{PolicyError, RuleProblem};
use rule::{NamespaceRule, PublishLimit};

/// The default policy, embedded from the same file the docs point operators at, so the two
/// can't drift apart.
const BUILTIN_TOML: &str = include_str!("../../config/channel-policy.toml");

/// The validated channel policy: one rule per namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPolicy {
    // A BTreeMap, not a HashMap: with a handful of short names a few string comparisons
    // beat hashing, and `namespaces()` and validation errors come out in a stable order.
    namespaces: BTreeMap<String, NamespaceRule>,
}

/// The answer to a client subscribe (and to sub_refresh, which re-runs it).
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeDecision {
    /// Allowed. With `ttl`, the subscription should expire (`expire_at` = now + ttl) so that
    /// sub_refresh re-checks it; the caller adds its own clock.
    Allow {
        ttl: Option<Duration>,
    },
    Deny(DenyReason),
}

/// The answer to a client publish.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishDecision {
    Allow,
    /// The connection is degraded (admitted without a full identity check) and the
    /// namespace does not admit such connections. Separate from `Deny` so the caller can
    /// tell the client to reconnect rather than that it lacks permission.
    DegradedSession,
    Deny(DenyReason),
    /// The namespace requires a JSON object and the payload is not one (or not JSON).
    PayloadNotObject,
    /// The payload exceeds the namespace's `publish_max_bytes`.
    PayloadTooLarge,
}

/// Why a subscribe or publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No `:` in the channel, an empty namespace, or a namespace the policy doesn't list.
    UnknownNamespace,
    /// The channel belongs to another user or family.
    NotOwner,
    /// A parental lock closes the namespace; carries the lock's name
    /// (e.g. `"feature_lock_chat"`).
    Locked(&'static str),
    /// The connection's subscription tier is below the namespace's `min_tier`.
    TierTooLow,
    /// The namespace is for admin connections only.
    AdminOnly,
    /// The namespace does not allow this operation from clients at all.
    NotAllowed,
    /// The connection is degraded and the namespace does not admit such connections.
    Degraded,
}

impl DenyReason {
    /// A short fixed label, safe as a metrics label or log field (bounded: the lock name is
    /// left out).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::UnknownNamespace => "unknown_namespace",
            Self::NotOwner => "not_owner",
            Self::Locked(_) => "locked",
            Self::TierTooLow => "tier",
            Self::AdminOnly => "admin_only",
            Self::NotAllowed => "not_allowed",
            Self::Degraded => "degraded",
        }
    }
}

impl ChannelPolicy {
    /// The default policy (`config/channel-policy.toml`, compiled in).
    ///
    /// # Panics
    /// Only if that file is invalid, which the unit tests rule out before any release.
    pub fn builtin() -> Self {
        // The text is a compile-time constant and `load::tests::builtin_file_parses`
        // parses it, so this can't fail in a tested build.
        Self::from_toml_str(BUILTIN_TOML, "config/channel-policy.toml (built in)")
            .expect("the built-in channel policy is valid")
    }

    /// The namespaces the policy knows, in sorted order.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    /// Decides a client subscribe. Checks, in order: known namespace, degraded connection,
    /// subscribe allowed, admin, owner, locks, tier.
    pub fn check_subscribe(&self, meta: &ConnectionMeta, channel: &str) -> SubscribeDecision {
        let Some((rule, rest)) = self.rule_for(channel) else {
            return SubscribeDecision::Deny(DenyReason::UnknownNamespace);
        };
        if meta.degraded && !rule.allow_degraded {
            return SubscribeDecision::Deny(DenyReason::Degraded);
        }
        if !rule.subscribe {
            return SubscribeDecision::Deny(DenyReason::NotAllowed);
        }
        if let Err(reason) = rule.check_access(meta, rest) {
            return SubscribeDecision::Deny(reason);
        }
        SubscribeDecision::Allow {
            ttl: rule.subscription_ttl,
        }
    }

    /// Decides a client publish of `payload` (the data bytes as received). Checks, in
    /// order: known namespace, degraded connection, publish allowed, admin, owner, locks,
    /// tier, payload size, payload shape.
    pub fn check_publish(
        &self,
        meta: &ConnectionMeta,
        channel: &str,
        payload: &[u8],
    ) -> PublishDecision {
        let Some((rule, rest)) = self.rule_for(channel) else {
            return PublishDecision::Deny(DenyReason::UnknownNamespace);
        };
        if meta.degraded && !rule.allow_degraded {
            return PublishDecision::DegradedSession;
        }
        let Some(limit) = rule.publish else {
            return PublishDecision::Deny(DenyReason::NotAllowed);
        };
        if let Err(reason) = rule.check_access(meta, rest) {
            return PublishDecision::Deny(reason);
        }
        check_payload(limit, payload)
    }

    /// The rule for a channel's namespace, and the part of the channel after it.
    fn rule_for<'c>(&self, channel: &'c str) -> Option<(&NamespaceRule, &'c str)> {
        let (namespace, rest) = channel.split_once(':')?;
        // An empty namespace can't be in the map (validation refuses it); the explicit
        // check keeps `:x` unknown even so.
        if namespace.is_empty() {
            return None;
        }
        Some((self.namespaces.get(namespace)?, rest))
    }
}

fn check_payload(limit: PublishLimit, payload: &[u8]) -> PublishDecision {
    // Size first: an oversized payload is refused without reading a byte of it.
    if payload.len() > limit.max_bytes {
        return PublishDecision::PayloadTooLarge;
    }
    if limit.require_object && !is_json_object(payload) {
        return PublishDecision::PayloadNotObject;
    }
    PublishDecision::Allow
}

/// Whether `bytes` are exactly one well-formed JSON object (surrounding whitespace allowed).
///
/// The first significant byte settles "object or not" for free; `IgnoredAny` then checks
/// the whole text is valid JSON without building anything from it. serde_json skips an
/// ignored value with a loop rather than recursion, so deep nesting can't exhaust the stack.
fn is_json_object(bytes: &[u8]) -> bool {
    let first = bytes
        .iter()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
    first == Some(&b'{') && serde_json::from_slice::<IgnoredAny>(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{ParentalState, SubscriptionTier};

    const TTL: Option<Duration> = Some(Duration::from_secs(900));

    /// A full, unlocked, non-admin connection of user `u-1` in family `fam-1` on pro.
    fn meta() -> ConnectionMeta {
        ConnectionMeta {
            user: "u-1".to_owned(),
            family_id: "fam-1".to_owned(),
            subscription_tier: SubscriptionTier::Pro,
            is_admin: false,
            parental_state: ParentalState::default(),
            degraded: false,
            fallback_path: None,
        }
    }

    fn admin() -> ConnectionMeta {
        ConnectionMeta {
            is_admin: true,
            ..meta()
        }
    }

    /// What the fallback pool admits: no family, everything locked, degraded.
    fn degraded() -> ConnectionMeta {
        ConnectionMeta {
            family_id: String::new(),
            subscription_tier: SubscriptionTier::Unspecified,
            parental_state: ParentalState::all_locked(),
            degraded: true,
            fallback_path: Some("pool".to_owned()),
            ..meta()
        }
    }

    fn sub(meta: &ConnectionMeta, channel: &str) -> SubscribeDecision {
        ChannelPolicy::builtin().check_subscribe(meta, channel)
    }

    fn publish(meta: &ConnectionMeta, channel: &str, payload: &str) -> PublishDecision {
        ChannelPolicy::builtin().check_publish(meta, channel, payload.as_bytes())
    }

    fn deny(reason: DenyReason) -> SubscribeDecision {
        SubscribeDecision::Deny(reason)
    }

    #[test]
    fn owners_may_subscribe_to_their_channels() {
        let m = meta();
        assert_eq!(
            sub(&m, "family:fam-1"),
            SubscribeDecision::Allow { ttl: None }
        );
        assert_eq!(sub(&m, "chat:fam-1"), SubscribeDecision::Allow { ttl: TTL });
        assert_eq!(sub(&m, "diary:u-1"), SubscribeDecision::Allow { ttl: TTL });
        assert_eq!(
            sub(&m, "flowcoach:u-1"),
            SubscribeDecision::Allow { ttl: TTL }
        );
        assert_eq!(
            sub(&m, "notifications:u-1"),
            SubscribeDecision::Allow { ttl: None }
        );
        assert_eq!(
            sub(&m, "broadcast:news"),
            SubscribeDecision::Allow { ttl: None }
        );
    }

    #[test]
    fn owner_is_the_first_segment_after_the_namespace() {
        let m = meta();
        assert_eq!(
            sub(&m, "chat:fam-1:room-7"),
            SubscribeDecision::Allow { ttl: TTL }
        );
        assert_eq!(
            sub(&m, "diary:u-1:2024"),
            SubscribeDecision::Allow { ttl: TTL }
        );
        assert_eq!(sub(&m, "chat:fam-2:fam-1"), deny(DenyReason::NotOwner));
        // A prefix of the owner id is not the owner id.
        assert_eq!(sub(&m, "chat:fam-10"), deny(DenyReason::NotOwner));
        assert_eq!(sub(&m, "chat:fam"), deny(DenyReason::NotOwner));
    }

    #[test]
    fn other_owners_channels_are_denied() {
        let m = meta();
        assert_eq!(sub(&m, "family:fam-2"), deny(DenyReason::NotOwner));
        assert_eq!(sub(&m, "chat:fam-2"), deny(DenyReason::NotOwner));
        // User-owned namespaces compare with the user, not the family.
        assert_eq!(sub(&m, "diary:fam-1"), deny(DenyReason::NotOwner));
        assert_eq!(sub(&m, "diary:u-2"), deny(DenyReason::NotOwner));
        assert_eq!(sub(&m, "notifications:u-2"), deny(DenyReason::NotOwner));
        // Family-owned namespaces compare with the family, not the user.
        assert_eq!(sub(&m, "family:u-1"), deny(DenyReason::NotOwner));
        assert_eq!(
            publish(&m, "diary:u-2", "{}"),
            PublishDecision::Deny(DenyReason::NotOwner)
        );
    }

    #[test]
    fn empty_owner_id_never_matches() {
        let no_family = ConnectionMeta {
            family_id: String::new(),
            ..meta()
        };
        for channel in ["family:", "chat:", "chat::room", "family:fam-1"] {
            assert_eq!(
                sub(&no_family, channel),
                deny(DenyReason::NotOwner),
                "{channel}"
            );
        }
        let no_user = ConnectionMeta {
            user: String::new(),
            ..meta()
        };
        for channel in ["diary:", "notifications:", "diary::x"] {
            assert_eq!(
                sub(&no_user, channel),
                deny(DenyReason::NotOwner),
                "{channel}"
            );
        }
        assert_eq!(
            publish(&no_family, "chat:", "{}"),
            PublishDecision::Deny(DenyReason::NotOwner)
        );
    }

    #[test]
    fn each_lock_closes_its_namespaces() {
        let locked = |state: ParentalState| ConnectionMeta {
            parental_state: state,
            ..meta()
        };
        let chat = locked(ParentalState {
            feature_lock_chat: true,
            ..Default::default()
        });
        let diary = locked(ParentalState {
            feature_lock_diary: true,
            ..Default::default()
        });
        let flowcoach = locked(ParentalState {
            feature_lock_flowcoach: true,
            ..Default::default()
        });
        let screen = locked(ParentalState {
            screen_time_lock: true,
            ..Default::default()
        });

        assert_eq!(
            sub(&chat, "chat:fam-1"),
            deny(DenyReason::Locked("feature_lock_chat"))
        );
        assert_eq!(
            sub(&chat, "diary:u-1"),
            SubscribeDecision::Allow { ttl: TTL }
        );

        assert_eq!(
            sub(&diary, "diary:u-1"),
            deny(DenyReason::Locked("feature_lock_diary"))
        );
        assert_eq!(
            sub(&diary, "chat:fam-1"),
            SubscribeDecision::Allow { ttl: TTL }
        );

        assert_eq!(
            sub(&flowcoach, "flowcoach:u-1"),
            deny(DenyReason::Locked("feature_lock_flowcoach"))
        );
        assert_eq!(
            sub(&flowcoach, "diary:u-1"),
            SubscribeDecision::Allow { ttl: TTL }
        );

        for channel in ["chat:fam-1", "diary:u-1", "flowcoach:u-1"] {
            assert_eq!(
                sub(&screen, channel),
                deny(DenyReason::Locked("screen_time_lock")),
                "{channel}"
            );
        }
        // Namespaces no lock closes stay open with every lock set.
        let all = locked(ParentalState::all_locked());
        assert_eq!(
            sub(&all, "family:fam-1"),
            SubscribeDecision::Allow { ttl: None }
        );
        assert_eq!(
            sub(&all, "notifications:u-1"),
            SubscribeDecision::Allow { ttl: None }
        );

        assert_eq!(
            publish(&chat, "chat:fam-1", "{}"),
            PublishDecision::Deny(DenyReason::Locked("feature_lock_chat"))
        );
        assert_eq!(
            publish(&screen, "diary:u-1", "{}"),
            PublishDecision::Deny(DenyReason::Locked("screen_time_lock"))
        );
    }

    #[test]
    fn flowcoach_needs_pro_or_family() {
        let tier = |subscription_tier| ConnectionMeta {
            subscription_tier,
            ..meta()
        };
        assert_eq!(
            sub(&tier(SubscriptionTier::Free), "flowcoach:u-1"),
            deny(DenyReason::TierTooLow)
        );
        assert_eq!(
            sub(&tier(SubscriptionTier::Unspecified), "flowcoach:u-1"),
            deny(DenyReason::TierTooLow)
        );
        for ok in [SubscriptionTier::Pro, SubscriptionTier::Family] {
            assert_eq!(
                sub(&tier(ok), "flowcoach:u-1"),
                SubscribeDecision::Allow { ttl: TTL },
                "{ok:?}"
            );
        }
        // No tier floor elsewhere.
        assert_eq!(
            sub(&tier(SubscriptionTier::Unspecified), "diary:u-1"),
            SubscribeDecision::Allow { ttl: TTL }
        );
    }

    #[test]
    fn admin_namespace_is_for_admins_only() {
        assert_eq!(sub(&meta(), "admin:ops"), deny(DenyReason::AdminOnly));
        assert_eq!(
            sub(&admin(), "admin:ops"),
            SubscribeDecision::Allow { ttl: None }
        );
        assert_eq!(
            publish(&meta(), "admin:ops", "{}"),
            PublishDecision::Deny(DenyReason::AdminOnly)
        );
        assert_eq!(publish(&admin(), "admin:ops", "{}"), PublishDecision::Allow);
        // Being admin does not make one the owner of other people's channels.
        assert_eq!(sub(&admin(), "diary:u-2"), deny(DenyReason::NotOwner));
    }

    #[test]
    fn unknown_namespaces_and_malformed_channels_are_denied() {
        let m = admin();
        for channel in [
            "games:u-1",
            "no-colon",
            "",
            ":u-1",
            ":",
            "Chat:fam-1",
            "$chat:fam-1",
        ] {
            assert_eq!(
                sub(&m, channel),
                deny(DenyReason::UnknownNamespace),
                "{channel:?}"
            );
            assert_eq!(
                publish(&m, channel, "{}"),
                PublishDecision::Deny(DenyReason::UnknownNamespace),
                "{channel:?}"
            );
        }
        // Unknown wins over everything, degraded included.
        assert_eq!(
            sub(&degraded(), "games:x"),
            deny(DenyReason::UnknownNamespace)
        );
        assert_eq!(
            publish(&degraded(), "games:x", "{}"),
            PublishDecision::Deny(DenyReason::UnknownNamespace)
        );
    }

    #[test]
    fn degraded_connections_only_reach_broadcast() {
        // Owner fields set to what the channel needs, so that only `degraded` can deny.
        let d = ConnectionMeta {
            family_id: "fam-1".to_owned(),
            subscription_tier: SubscriptionTier::Family,
            parental_state: ParentalState::default(),
            is_admin: true,
            ..degraded()
        };
        for channel in [
            "family:fam-1",
            "chat:fam-1",
            "diary:u-1",
            "flowcoach:u-1",
            "notifications:u-1",
            "admin:ops",
        ] {
            assert_eq!(sub(&d, channel), deny(DenyReason::Degraded), "{channel}");
            assert_eq!(
                publish(&d, channel, "{}"),
                PublishDecision::DegradedSession,
                "{channel}"
            );
        }
        assert_eq!(
            sub(&d, "broadcast:news"),
            SubscribeDecision::Allow { ttl: None }
        );
        assert_eq!(
            sub(&degraded(), "broadcast:news"),
            SubscribeDecision::Allow { ttl: None }
        );
        // Allowed in, but broadcast still takes no client publishes.
        assert_eq!(
            publish(&d, "broadcast:news", "{}"),
            PublishDecision::Deny(DenyReason::NotAllowed)
        );
    }

    #[test]
    fn degraded_is_checked_before_subscribe_allowed() {
        let policy = ChannelPolicy::from_toml_str(
            "[namespaces.closed]\nowner = \"none\"\nsubscribe = false\npublish = false\n",
            "t",
        )
        .expect("valid");
        assert_eq!(
            policy.check_subscribe(&degraded(), "closed:x"),
            deny(DenyReason::Degraded)
        );
        assert_eq!(
            policy.check_subscribe(&meta(), "closed:x"),
            deny(DenyReason::NotAllowed)
        );
    }

    #[test]
    fn publish_not_allowed_where_clients_may_not_publish() {
        for channel in ["flowcoach:u-1", "notifications:u-1", "broadcast:news"] {
            assert_eq!(
                publish(&admin(), channel, "{}"),
                PublishDecision::Deny(DenyReason::NotAllowed),
                "{channel}"
            );
        }
        // NotAllowed comes before ownership: nothing about the channel is revealed.
        assert_eq!(
            publish(&meta(), "notifications:u-2", "{}"),
            PublishDecision::Deny(DenyReason::NotAllowed)
        );
    }

    #[test]
    fn publish_allows_objects_within_the_limit() {
        let m = meta();
        assert_eq!(
            publish(&m, "chat:fam-1", r#"{"text":"hi"}"#),
            PublishDecision::Allow
        );
        assert_eq!(
            publish(&m, "chat:fam-1:room-7", " {}\n"),
            PublishDecision::Allow
        );
        assert_eq!(
            publish(&m, "family:fam-1", r#"{"a":[1,{"b":null}]}"#),
            PublishDecision::Allow
        );
        assert_eq!(publish(&m, "diary:u-1", "{}"), PublishDecision::Allow);
    }

    #[test]
    fn payload_size_limit_is_inclusive_and_per_namespace() {
        let m = meta();
        let sized = |len: usize| format!("{{\"t\":\"{}\"}}", "x".repeat(len - 8));
        assert_eq!(sized(16_384).len(), 16_384);
        assert_eq!(
            publish(&m, "chat:fam-1", &sized(16_384)),
            PublishDecision::Allow
        );
        assert_eq!(
            publish(&m, "chat:fam-1", &sized(16_385)),
            PublishDecision::PayloadTooLarge
        );
        // diary allows twice as much.
        assert_eq!(
            publish(&m, "diary:u-1", &sized(32_768)),
            PublishDecision::Allow
        );
        assert_eq!(
            publish(&m, "diary:u-1", &sized(32_769)),
            PublishDecision::PayloadTooLarge
        );
    }

    #[test]
    fn oversized_payload_is_too_large_even_when_not_json() {
        let garbage = "[".repeat(20_000);
        assert_eq!(
            publish(&meta(), "chat:fam-1", &garbage),
            PublishDecision::PayloadTooLarge
        );
    }

    #[test]
    fn payload_must_be_a_json_object() {
        let m = meta();
        for payload in [
            "[1,2]",
            "\"text\"",
            "42",
            "null",
            "",
            "   ",
            "{",
            "{\"a\":}",
            "{} {}",
            "{}x",
            "{'a':1}",
            "\u{feff}{}",
        ] {
            assert_eq!(
                publish(&m, "chat:fam-1", payload),
                PublishDecision::PayloadNotObject,
                "{payload:?}"
            );
        }
    }

    #[test]
    fn deeply_nested_object_is_checked_without_recursion() {
        let depth = 8_000;
        let payload = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        assert!(payload.len() <= 16_384);
        assert_eq!(
            publish(&meta(), "chat:fam-1", &payload),
            PublishDecision::Allow
        );
    }

    #[test]
    fn payload_shape_is_not_checked_when_not_required() {
        let policy = ChannelPolicy::from_toml_str(
            "[namespaces.raw]\nowner = \"none\"\nsubscribe = true\npublish = true\n\
             publish_max_bytes = 4\npublish_require_object = false\n",
            "t",
        )
        .expect("valid");
        assert_eq!(
            policy.check_publish(&meta(), "raw:x", b"\xff[1"),
            PublishDecision::Allow
        );
        assert_eq!(
            policy.check_publish(&meta(), "raw:x", b"12345"),
            PublishDecision::PayloadTooLarge
        );
    }

    #[test]
    fn ttl_comes_from_the_namespace() {
        let policy = ChannelPolicy::from_toml_str(
            "[namespaces.live]\nowner = \"user\"\nsubscribe = true\npublish = false\n\
             subscription_ttl_s = 60\n",
            "t",
        )
        .expect("valid");
        assert_eq!(
            policy.check_subscribe(&meta(), "live:u-1"),
            SubscribeDecision::Allow {
                ttl: Some(Duration::from_secs(60))
            }
        );
    }

    #[test]
    fn deny_reason_labels_are_fixed() {
        let labels = [
            (DenyReason::UnknownNamespace, "unknown_namespace"),
            (DenyReason::NotOwner, "not_owner"),
            (DenyReason::Locked("feature_lock_chat"), "locked"),
            (DenyReason::Locked("screen_time_lock"), "locked"),
            (DenyReason::TierTooLow, "tier"),
            (DenyReason::AdminOnly, "admin_only"),
            (DenyReason::NotAllowed, "not_allowed"),
            (DenyReason::Degraded, "degraded"),
        ];
        for (reason, label) in labels {
            assert_eq!(reason.as_str(), label);
        }
    }

    #[test]
    fn small_test_policy_evaluates() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/channel-policy-small.json");
        let policy = ChannelPolicy::load(&path).expect("test policy loads");
        assert_eq!(
            policy.check_subscribe(&meta(), "room:fam-1:a"),
            deny(DenyReason::NotAllowed)
        );
        assert_eq!(
            policy.check_publish(&meta(), "room:fam-1:a", b"[1]"),
            PublishDecision::Allow
        );
        assert_eq!(
            policy.check_publish(&meta(), "room:fam-1:a", b"12345678901"),
            PublishDecision::PayloadTooLarge
        );
        assert_eq!(
            policy.check_subscribe(&meta(), "news:today"),
            SubscribeDecision::Allow {
                ttl: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(
            policy.check_subscribe(&degraded(), "news:today"),
            SubscribeDecision::Allow {
                ttl: Some(Duration::from_secs(30))
            }
        );
        // Admin first, then tier: a pro admin is still below the family floor.
        assert_eq!(
            policy.check_subscribe(&admin(), "secret:x"),
            deny(DenyReason::TierTooLow)
        );
        assert_eq!(
            policy.check_subscribe(
                &ConnectionMeta {
                    subscription_tier: SubscriptionTier::Family,
                    ..admin()
                },
                "secret:x"
            ),
            SubscribeDecision::Allow { ttl: None }
        );
        assert_eq!(
            policy.check_subscribe(
                &ConnectionMeta {
                    subscription_tier: SubscriptionTier::Family,
                    ..meta()
                },
                "secret:x"
            ),
            deny(DenyReason::AdminOnly)
        );
    }
}
