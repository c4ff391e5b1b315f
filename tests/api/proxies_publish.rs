//! `POST /centrifugo/publish`: in order, degraded session (4403), policy (403), payload size
//! and shape (413 / 400, on the JSON bytes as received or the decoded `b64data`), then the
//! per-user rate limit that only allowed publishes consume (429).

use std::time::Duration;

use realtime_service::identity::proto::SubscriptionTier;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::proxies_support::{
    allowed, bad_payload, connect_any, degraded_session, meta, object_of_len, on_channel,
    open_outage, permission_denied, publish_b64, publish_raw, request, too_large, too_many, with,
    Who,
};

async fn publish(app: &TestApp, user: &str, meta: &Value, channel: &str, payload: &str) -> Value {
    let response = app
        .post_signed("publish", &publish_raw(user, meta, channel, payload))
        .await;
    assert_eq!(response.status, 200, "{channel}: {}", response.text);
    response.json()
}

async fn publish_binary(
    app: &TestApp,
    user: &str,
    meta: &Value,
    channel: &str,
    payload: &[u8],
) -> Value {
    let response = app
        .post_signed("publish", &publish_b64(user, meta, channel, payload))
        .await;
    assert_eq!(response.status, 200, "{channel}: {}", response.text);
    response.json()
}

const HI: &str = r#"{"text":"hi"}"#;

#[tokio::test]
async fn owners_may_publish_objects_where_clients_may_publish() {
    let app = spawn_app().await;
    let m = Who::new("u-pb1", "fam-pb1")
        .connect(&app, "pub-allowed-1")
        .await;
    for channel in [
        "family:fam-pb1",
        "chat:fam-pb1",
        "chat:fam-pb1:room-7",
        "diary:u-pb1",
    ] {
        assert_eq!(
            publish(&app, "u-pb1", &m, channel, HI).await,
            allowed(),
            "{channel}"
        );
    }
    // Whitespace around and inside the object is fine; nested values too.
    assert_eq!(
        publish(
            &app,
            "u-pb1",
            &m,
            "chat:fam-pb1",
            "{ \"a\" : [1, {\"b\": null}] }"
        )
        .await,
        allowed()
    );
    assert_eq!(
        publish(&app, "u-pb1", &m, "chat:fam-pb1", "{}").await,
        allowed()
    );
}

#[tokio::test]
async fn admin_namespace_takes_publishes_from_admins_only() {
    let app = spawn_app().await;
    let user = Who::new("u-pb2", "fam-pb2")
        .connect(&app, "pub-admin-user")
        .await;
    let admin = Who::new("u-pb3", "fam-pb2")
        .admin()
        .connect(&app, "pub-admin-admin")
        .await;
    assert_eq!(
        publish(&app, "u-pb2", &user, "admin:ops", HI).await,
        permission_denied()
    );
    assert_eq!(
        publish(&app, "u-pb3", &admin, "admin:ops", HI).await,
        allowed()
    );
}

#[tokio::test]
async fn namespaces_without_client_publish_are_denied() {
    let app = spawn_app().await;
    // An admin on the family plan who owns every channel below: only "publish = false" denies.
    let m = Who::new("u-pb4", "fam-pb4")
        .admin()
        .tier(SubscriptionTier::Family)
        .connect(&app, "pub-notallowed-1")
        .await;
    for channel in ["flowcoach:u-pb4", "notifications:u-pb4", "broadcast:news"] {
        assert_eq!(
            publish(&app, "u-pb4", &m, channel, HI).await,
            permission_denied(),
            "{channel}"
        );
    }
}

#[tokio::test]
async fn policy_denials_owner_lock_unknown_and_untrusted_context() {
    let app = spawn_app().await;
    let m = Who::new("u-pb5", "fam-pb5")
        .connect(&app, "pub-policy-1")
        .await;
    for channel in [
        "chat:fam-other",
        "family:fam-other",
        "diary:u-other",
        "diary:fam-pb5",
        "games:u-pb5",
        "nonamespace",
        "",
    ] {
        assert_eq!(
            publish(&app, "u-pb5", &m, channel, HI).await,
            permission_denied(),
            "{channel:?}"
        );
    }
    let lock = |name: &str| with(&m, &format!("parental_state/{name}"), json!(true));
    for (lock_name, channel) in [
        ("feature_lock_chat", "chat:fam-pb5"),
        ("feature_lock_diary", "diary:u-pb5"),
        ("screen_time_lock", "chat:fam-pb5"),
        ("screen_time_lock", "diary:u-pb5"),
    ] {
        assert_eq!(
            publish(&app, "u-pb5", &lock(lock_name), channel, HI).await,
            permission_denied(),
            "{lock_name} on {channel}"
        );
    }
    // Missing meta, user mismatch, unparseable meta.
    let no_meta = request(
        "u-pb5",
        None,
        json!({"channel":"chat:fam-pb5","data":{"a":1}}),
    );
    app.post_signed("publish", &no_meta)
        .await
        .assert(200, permission_denied());
    assert_eq!(
        publish(&app, "u-other", &m, "chat:fam-pb5", HI).await,
        permission_denied()
    );
    assert_eq!(
        publish(
            &app,
            "u-pb5",
            &json!({"user":"u-pb5","degraded":"no"}),
            "chat:fam-pb5",
            HI
        )
        .await,
        permission_denied()
    );
}

#[tokio::test]
async fn degraded_sessions_are_disconnected_before_any_other_check() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-pub-1"]);
    })
    .await;
    let m = with(&meta("u-pb6", "fam-pb6", "family"), "degraded", json!(true));
    let oversize = object_of_len(16_385);
    for (channel, payload) in [
        ("chat:fam-pb6", HI),
        // someone else's chat: degraded wins over the owner check
        ("chat:fam-other", HI),
        // a namespace without client publish: degraded wins over "not allowed"
        ("notifications:u-pb6", HI),
        // degraded wins over the payload checks
        ("chat:fam-pb6", "[1,2]"),
        ("chat:fam-pb6", oversize.as_str()),
    ] {
        assert_eq!(
            publish(&app, "u-pb6", &m, channel, payload).await,
            degraded_session(),
            "{channel} {:.20}",
            payload
        );
    }
    // broadcast admits degraded connections but takes no client publishes; unknown
    // namespaces are simply denied.
    assert_eq!(
        publish(&app, "u-pb6", &m, "broadcast:news", HI).await,
        permission_denied()
    );
    assert_eq!(
        publish(&app, "u-pb6", &m, "games:x", HI).await,
        permission_denied()
    );

    // A real pool connection.
    open_outage(&app, "pub-pool-down").await;
    let (user, pool_meta) = connect_any(&app, "pool-pub-1").await;
    assert_eq!(
        publish(&app, &user, &pool_meta, &format!("diary:{user}"), HI).await,
        degraded_session()
    );
    assert_eq!(
        publish(&app, &user, &pool_meta, "chat:fam-pb6", HI).await,
        degraded_session()
    );
}

#[tokio::test]
async fn undecodable_b64data_does_not_jump_the_degraded_and_policy_checks() {
    let app = spawn_app().await;
    let m = meta("u-pb7", "fam-pb7", "free");
    let bad = |channel: &str, meta: &Value| {
        request(
            "u-pb7",
            Some(meta),
            json!({"channel":channel,"encoding":"binary","b64data":"%%%not-base64"}),
        )
    };
    let degraded = with(&m, "degraded", json!(true));
    app.post_signed("publish", &bad("chat:fam-pb7", &degraded))
        .await
        .assert(200, degraded_session());
    app.post_signed("publish", &bad("notifications:u-pb7", &m))
        .await
        .assert(200, permission_denied());
    app.post_signed("publish", &bad("chat:fam-other", &m))
        .await
        .assert(200, permission_denied());
}

#[tokio::test]
async fn policy_is_checked_before_the_payload() {
    let app = spawn_app().await;
    let m = Who::new("u-pb8", "fam-pb8")
        .connect(&app, "pub-order-1")
        .await;
    let oversize = object_of_len(40_000);
    assert_eq!(
        publish(&app, "u-pb8", &m, "chat:fam-other", "[1]").await,
        permission_denied()
    );
    assert_eq!(
        publish(&app, "u-pb8", &m, "notifications:u-pb8", &oversize).await,
        permission_denied()
    );
    let locked = with(&m, "parental_state/feature_lock_chat", json!(true));
    assert_eq!(
        publish(&app, "u-pb8", &locked, "chat:fam-pb8", &oversize).await,
        permission_denied()
    );
}

#[tokio::test]
async fn payload_must_be_a_json_object() {
    let app = spawn_app().await;
    let m = Who::new("u-pb9", "fam-pb9")
        .connect(&app, "pub-shape-1")
        .await;
    for payload in ["[1,2]", "[]", "\"text\"", "42", "true", "null"] {
        assert_eq!(
            publish(&app, "u-pb9", &m, "chat:fam-pb9", payload).await,
            bad_payload(),
            "{payload}"
        );
    }
    // No data at all.
    app.post_signed("publish", &on_channel("u-pb9", Some(&m), "chat:fam-pb9"))
        .await
        .assert(200, bad_payload());
    // Binary encoding: the decoded bytes must be a JSON object too.
    for payload in [&b"[1]"[..], b"\"s\"", b"{", b"\xff\xfe", b"{} {}"] {
        assert_eq!(
            publish_binary(&app, "u-pb9", &m, "chat:fam-pb9", payload).await,
            bad_payload(),
            "{payload:?}"
        );
    }
    assert_eq!(
        publish_binary(&app, "u-pb9", &m, "chat:fam-pb9", br#"{"a":1}"#).await,
        allowed()
    );
    // b64data that is not base64.
    let body = request(
        "u-pb9",
        Some(&m),
        json!({"channel":"chat:fam-pb9","encoding":"binary","b64data":"%%%"}),
    );
    app.post_signed("publish", &body)
        .await
        .assert(200, bad_payload());
}

#[tokio::test]
async fn payload_size_limit_is_per_namespace_and_inclusive() {
    let app = spawn_app().await;
    let m = Who::new("u-pb10", "fam-pb10")
        .admin()
        .connect(&app, "pub-size-1")
        .await;
    for (channel, limit) in [
        ("chat:fam-pb10", 16_384),
        ("family:fam-pb10", 16_384),
        ("admin:ops", 16_384),
        ("diary:u-pb10", 32_768),
    ] {
        assert_eq!(
            publish(&app, "u-pb10", &m, channel, &object_of_len(limit)).await,
            allowed(),
            "{channel} at {limit}"
        );
        assert_eq!(
            publish(&app, "u-pb10", &m, channel, &object_of_len(limit + 1)).await,
            too_large(),
            "{channel} at {limit} + 1"
        );
    }
    // The bytes as received count, whitespace included.
    let spaced = format!("{{ {}", &object_of_len(16_384)[1..]);
    assert_eq!(spaced.len(), 16_385);
    assert_eq!(
        publish(&app, "u-pb10", &m, "chat:fam-pb10", &spaced).await,
        too_large()
    );
    // Size is checked before shape (documented order): an oversized non-object is 413.
    let big_array = format!("[{}1]", "1,".repeat(9_000));
    assert_eq!(
        publish(&app, "u-pb10", &m, "chat:fam-pb10", &big_array).await,
        too_large()
    );
}

#[tokio::test]
async fn b64data_counts_decoded_bytes() {
    let app = spawn_app().await;
    let m = Who::new("u-pb11", "fam-pb11")
        .connect(&app, "pub-b64-1")
        .await;
    // Base64 of 16384 bytes is 21848 characters: only the decoded size may count.
    let at = object_of_len(16_384);
    assert_eq!(
        publish_binary(&app, "u-pb11", &m, "chat:fam-pb11", at.as_bytes()).await,
        allowed()
    );
    let over = object_of_len(16_385);
    assert_eq!(
        publish_binary(&app, "u-pb11", &m, "chat:fam-pb11", over.as_bytes()).await,
        too_large()
    );
    let diary = object_of_len(32_768);
    assert_eq!(
        publish_binary(&app, "u-pb11", &m, "diary:u-pb11", diary.as_bytes()).await,
        allowed()
    );
}

#[tokio::test]
async fn rate_limit_counts_only_allowed_publishes_per_user_and_refills() {
    let app = spawn_app_with(|c| {
        c.set("PUBLISH_RATE_PER_SECOND", "1")
            .set("PUBLISH_BURST", "3");
    })
    .await;
    let m = Who::new("u-rl1", "fam-rl")
        .connect(&app, "pub-rate-1")
        .await;
    let other = Who::new("u-rl2", "fam-rl")
        .connect(&app, "pub-rate-2")
        .await;
    let degraded = with(&m, "degraded", json!(true));
    let oversize = object_of_len(16_385);

    // Denied publishes of every kind first: none of them may use up a token.
    for _ in 0..3 {
        assert_eq!(
            publish(&app, "u-rl1", &m, "chat:fam-other", HI).await,
            permission_denied()
        );
        assert_eq!(
            publish(&app, "u-rl1", &m, "notifications:u-rl1", HI).await,
            permission_denied()
        );
        assert_eq!(
            publish(&app, "u-rl1", &m, "chat:fam-rl", "[1]").await,
            bad_payload()
        );
        assert_eq!(
            publish(&app, "u-rl1", &m, "chat:fam-rl", &oversize).await,
            too_large()
        );
        assert_eq!(
            publish(&app, "u-rl1", &degraded, "chat:fam-rl", HI).await,
            degraded_session()
        );
    }
    // The whole burst is still there.
    for n in 1..=3 {
        assert_eq!(
            publish(&app, "u-rl1", &m, "chat:fam-rl", HI).await,
            allowed(),
            "publish {n}"
        );
    }
    assert_eq!(
        publish(&app, "u-rl1", &m, "chat:fam-rl", HI).await,
        too_many()
    );
    // Over the limit, other channels of the same user are limited too (per user) ...
    assert_eq!(
        publish(&app, "u-rl1", &m, "diary:u-rl1", HI).await,
        too_many()
    );
    // ... while the policy still answers first for what it denies.
    assert_eq!(
        publish(&app, "u-rl1", &m, "chat:fam-other", HI).await,
        permission_denied()
    );
    // Another user has a bucket of their own.
    for _ in 0..3 {
        assert_eq!(
            publish(&app, "u-rl2", &other, "chat:fam-rl", HI).await,
            allowed()
        );
    }

    // One second refills one token at 1/s.
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(
        publish(&app, "u-rl1", &m, "chat:fam-rl", HI).await,
        allowed()
    );
    assert_eq!(
        publish(&app, "u-rl1", &m, "chat:fam-rl", HI).await,
        too_many()
    );
    // A long pause refills up to the burst, not beyond.
    app.clock.advance(Duration::from_secs(60));
    for n in 1..=3 {
        assert_eq!(
            publish(&app, "u-rl1", &m, "chat:fam-rl", HI).await,
            allowed(),
            "after refill, publish {n}"
        );
    }
    assert_eq!(
        publish(&app, "u-rl1", &m, "chat:fam-rl", HI).await,
        too_many()
    );
}
