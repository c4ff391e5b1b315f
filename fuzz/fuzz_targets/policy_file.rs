//! The channel policy file, read as TOML and as JSON: never a panic (errors included, which
//! point at a line and column), and a policy that loads answers every check: a channel
//! without a namespace is always unknown.
#![no_main]

use libfuzzer_sys::fuzz_target;
use realtime_service::fuzzing::policy;
use realtime_service::meta::{ConnectionMeta, ParentalState, SubscriptionTier};
use realtime_service::policy::{ChannelPolicy, DenyReason, PublishDecision, SubscribeDecision};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    for parsed in policy(text) {
        match parsed {
            Ok(policy) => exercise(&policy),
            Err(error) => assert!(!error.to_string().is_empty()),
        }
    }
});

fn exercise(policy: &ChannelPolicy) {
    let namespaces: Vec<String> = policy.namespaces().map(str::to_owned).collect();
    for meta in metas() {
        for namespace in &namespaces {
            for channel in [
                namespace.clone(),
                format!("{namespace}:"),
                format!("{namespace}:u1"),
                format!("{namespace}:fam1"),
                format!("{namespace}:fam1:room"),
                format!(":{namespace}"),
            ] {
                let subscribe = policy.check_subscribe(&meta, &channel);
                let publish = policy.check_publish(&meta, &channel, br#"{"text":"hi"}"#);
                let _ = policy.check_publish(&meta, &channel, b"[1]");
                if !channel.contains(':') || channel.starts_with(':') {
                    let unknown = DenyReason::UnknownNamespace;
                    assert_eq!(subscribe, SubscribeDecision::Deny(unknown));
                    assert_eq!(publish, PublishDecision::Deny(unknown));
                }
            }
        }
    }
}

fn metas() -> [ConnectionMeta; 4] {
    let member = ConnectionMeta {
        user: "u1".into(),
        family_id: "fam1".into(),
        subscription_tier: SubscriptionTier::Pro,
        is_admin: false,
        parental_state: ParentalState::default(),
        degraded: false,
        fallback_path: None,
    };
    let admin = ConnectionMeta {
        is_admin: true,
        subscription_tier: SubscriptionTier::Family,
        ..member.clone()
    };
    let locked = ConnectionMeta {
        parental_state: ParentalState::all_locked(),
        subscription_tier: SubscriptionTier::Free,
        ..member.clone()
    };
    let degraded = ConnectionMeta {
        family_id: String::new(),
        degraded: true,
        fallback_path: Some("pool".into()),
        ..member.clone()
    };
    [member, admin, locked, degraded]
}
