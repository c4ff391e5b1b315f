//! `POST /centrifugo/sub_refresh`: the subscribe policy again. Still allowed -> a new
//! `expire_at`; no longer allowed (a lock, a tier, degraded, an untrusted context) ->
//! `{"result":{"expired":true}}`. Never an error (Centrifugo ignores it here).

use std::time::Duration;

use realtime_service::identity::proto::SubscriptionTier;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::proxies_support::{
    allowed, connect_any, expire_at, expired, on_channel, open_outage, with, Who,
};

async fn sub_refresh(app: &TestApp, user: &str, meta: Option<&Value>, channel: &str) -> Value {
    let response = app
        .post_signed("sub_refresh", &on_channel(user, meta, channel))
        .await;
    assert_eq!(response.status, 200, "{channel}: {}", response.text);
    response.json()
}

#[tokio::test]
async fn still_allowed_gets_a_new_expiry() {
    let app = spawn_app().await;
    let m = Who::new("u-sr1", "fam-sr1")
        .tier(SubscriptionTier::Pro)
        .connect(&app, "subref-allowed-1")
        .await;
    let first = app
        .post_signed("subscribe", &on_channel("u-sr1", Some(&m), "chat:fam-sr1"))
        .await;
    let now = app.clock.unix_seconds();
    first.assert(200, expire_at(now + 900));
    // The subscription's expire_at arrives: Centrifugo asks again.
    app.clock.advance(Duration::from_secs(900));
    let now = app.clock.unix_seconds();
    for channel in ["chat:fam-sr1", "diary:u-sr1", "flowcoach:u-sr1:x"] {
        let got = sub_refresh(&app, "u-sr1", Some(&m), channel).await;
        assert_eq!(got, expire_at(now + 900), "{channel}");
    }
    // A namespace without a TTL answers `{}` (the subscription stops expiring).
    let got = sub_refresh(&app, "u-sr1", Some(&m), "family:fam-sr1").await;
    assert_eq!(got, allowed());
}

#[tokio::test]
async fn no_longer_allowed_expires() {
    let app = spawn_app().await;
    let m = Who::new("u-sr2", "fam-sr2")
        .tier(SubscriptionTier::Pro)
        .connect(&app, "subref-denied-1")
        .await;
    let lock = |name: &str| with(&m, &format!("parental_state/{name}"), json!(true));
    let cases = [
        ("chat lock", lock("feature_lock_chat"), "chat:fam-sr2"),
        (
            "screen time on chat",
            lock("screen_time_lock"),
            "chat:fam-sr2",
        ),
        ("diary lock", lock("feature_lock_diary"), "diary:u-sr2"),
        (
            "screen time on diary",
            lock("screen_time_lock"),
            "diary:u-sr2",
        ),
        (
            "flowcoach lock",
            lock("feature_lock_flowcoach"),
            "flowcoach:u-sr2",
        ),
        (
            "screen time on flowcoach",
            lock("screen_time_lock"),
            "flowcoach:u-sr2",
        ),
        (
            "tier dropped to free",
            with(&m, "subscription_tier", json!("free")),
            "flowcoach:u-sr2",
        ),
        ("admin rights removed", m.clone(), "admin:ops"),
        ("another family", m.clone(), "chat:fam-other"),
        ("unknown namespace", m.clone(), "games:u-sr2"),
    ];
    for (case, meta, channel) in cases {
        let got = sub_refresh(&app, "u-sr2", Some(&meta), channel).await;
        assert_eq!(got, expired(), "{case}");
    }
}

#[tokio::test]
async fn untrusted_identity_context_expires() {
    let app = spawn_app().await;
    let m = Who::new("u-sr3", "fam-sr3")
        .connect(&app, "subref-ctx-1")
        .await;
    assert_eq!(
        sub_refresh(&app, "u-sr3", None, "family:fam-sr3").await,
        expired(),
        "missing meta"
    );
    assert_eq!(
        sub_refresh(&app, "u-other", Some(&m), "family:fam-sr3").await,
        expired(),
        "user mismatch"
    );
    assert_eq!(
        sub_refresh(&app, "u-sr3", Some(&json!({"user":5})), "family:fam-sr3").await,
        expired(),
        "unparseable meta"
    );
}

#[tokio::test]
async fn degraded_expires_except_on_broadcast() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-subref-1"]);
    })
    .await;
    let degraded = with(
        &Who::new("u-sr4", "fam-sr4")
            .tier(SubscriptionTier::Family)
            .connect(&app, "subref-degraded-1")
            .await,
        "degraded",
        json!(true),
    );
    assert_eq!(
        sub_refresh(&app, "u-sr4", Some(&degraded), "chat:fam-sr4").await,
        expired()
    );
    assert_eq!(
        sub_refresh(&app, "u-sr4", Some(&degraded), "broadcast:news").await,
        allowed()
    );

    open_outage(&app, "subref-pool-down").await;
    let (user, pool_meta) = connect_any(&app, "pool-subref-1").await;
    assert_eq!(
        sub_refresh(&app, &user, Some(&pool_meta), &format!("diary:{user}")).await,
        expired()
    );
    assert_eq!(
        sub_refresh(&app, &user, Some(&pool_meta), "broadcast:status").await,
        allowed()
    );
}
