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
mod tests;
