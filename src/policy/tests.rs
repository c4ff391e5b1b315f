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
