//! `POST /centrifugo/refresh`: a normal connection is extended by CONNECTION_REFRESH_TTL_S, a
//! degraded one by FALLBACK_CONNECT_TTL_S while identity-service is still unreachable and
//! expired once it is back; an untrusted identity context is expired. Never an error or a
//! disconnect (Centrifugo ignores both on refresh).

use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, spawn_app, spawn_app_with, TestApp};
use crate::proxies_support::{
    connect_any, expire_at, expired, meta, open_outage, request, with, Who,
};

#[tokio::test]
async fn normal_connection_is_extended_by_the_refresh_ttl() {
    let app = spawn_app_with(|c| {
        c.set("CONNECTION_REFRESH_TTL_S", "1234");
    })
    .await;
    let meta = Who::new("u-rf1", "fam-rf1")
        .connect(&app, "refresh-normal-1")
        .await;
    let body = request("u-rf1", Some(&meta), json!({}));
    let now = app.clock.unix_seconds();
    app.post_signed("refresh", &body)
        .await
        .assert(200, expire_at(now + 1234));
    // Each refresh extends from the moment it is asked.
    app.clock.advance(Duration::from_secs(1000));
    let now = app.clock.unix_seconds();
    app.post_signed("refresh", &body)
        .await
        .assert(200, expire_at(now + 1234));
}

#[tokio::test]
async fn refresh_ttl_defaults_to_an_hour() {
    let app = spawn_app().await;
    let meta = Who::new("u-rf2", "fam-rf2")
        .connect(&app, "refresh-default-1")
        .await;
    let now = app.clock.unix_seconds();
    app.post_signed("refresh", &request("u-rf2", Some(&meta), json!({})))
        .await
        .assert(200, expire_at(now + 3600));
}

#[tokio::test]
async fn untrusted_identity_context_is_expired() {
    let app = spawn_app().await;
    let good = Who::new("u-rf3", "fam-rf3")
        .connect(&app, "refresh-ctx-1")
        .await;
    let cases = [
        ("missing meta", request("u-rf3", None, json!({}))),
        ("meta null", request("u-rf3", Some(&json!(null)), json!({}))),
        ("user mismatch", request("u-other", Some(&good), json!({}))),
        (
            "user missing",
            json!({"client":"c","transport":"websocket","protocol":"json","encoding":"json","meta":good})
                .to_string(),
        ),
        (
            "not our meta",
            request("u-rf3", Some(&json!({"tenant":"acme"})), json!({})),
        ),
        ("meta a string", request("u-rf3", Some(&json!("u-rf3")), json!({}))),
        ("meta an array", request("u-rf3", Some(&json!([good])), json!({}))),
        (
            "unknown tier",
            request(
                "u-rf3",
                Some(&with(&good, "subscription_tier", json!("gold"))),
                json!({}),
            ),
        ),
        (
            "anonymous",
            request("", Some(&meta("", "fam-rf3", "free")), json!({})),
        ),
    ];
    for (case, body) in cases {
        let response = app.post_signed("refresh", &body).await;
        assert_eq!(
            (response.status, response.json()),
            (200, expired()),
            "{case}: {}",
            response.text
        );
    }
}

#[tokio::test]
async fn degraded_pool_connection_lives_while_identity_is_down_and_expires_after_recovery() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-refresh-1"])
            .set("FALLBACK_CONNECT_TTL_S", "120")
            .set("CONNECTION_REFRESH_TTL_S", "1800");
    })
    .await;
    // A normal connection made before the outage, for comparison.
    let normal = Who::new("u-rf4", "fam-rf4")
        .connect(&app, "refresh-pool-normal")
        .await;
    let normal_body = request("u-rf4", Some(&normal), json!({}));

    open_outage(&app, "refresh-pool-down").await;
    let (user, pool_meta) = connect_any(&app, "pool-refresh-1").await;
    assert_eq!(pool_meta["degraded"], json!(true), "{pool_meta}");
    assert_eq!(pool_meta["fallback_path"], json!("pool"), "{pool_meta}");
    let body = request(&user, Some(&pool_meta), json!({}));

    // Identity is still unreachable: extended by the fallback TTL, from each refresh's now.
    let now = app.clock.unix_seconds();
    app.post_signed("refresh", &body)
        .await
        .assert(200, expire_at(now + 120));
    app.clock.advance(Duration::from_secs(100));
    let now = app.clock.unix_seconds();
    app.post_signed("refresh", &body)
        .await
        .assert(200, expire_at(now + 120));
    // A normal connection keeps the normal TTL during the outage.
    app.post_signed("refresh", &normal_body)
        .await
        .assert(200, expire_at(now + 1800));

    // identity-service recovers; the background probe closes the failure streak.
    app.identity.answer_normally();
    identity_reachable_again(&app).await;
    app.post_signed("refresh", &body)
        .await
        .assert(200, expired());
    let now = app.clock.unix_seconds();
    app.post_signed("refresh", &normal_body)
        .await
        .assert(200, expire_at(now + 1800));
}

#[tokio::test]
async fn degraded_meta_follows_the_failure_streak() {
    let app = spawn_app().await;
    let degraded = with(&meta("u-rf5", "fam-rf5", "pro"), "degraded", json!(true));
    let body = request("u-rf5", Some(&degraded), json!({}));
    // identity-service is reachable (no failure streak): a degraded connection expires.
    app.post_signed("refresh", &body)
        .await
        .assert(200, expired());

    // One failed call opens a streak (no pool, no window needed): extended by the default
    // FALLBACK_CONNECT_TTL_S (300).
    app.identity.fail_with(tonic::Code::Unavailable);
    let response = app.connect("refresh-degraded-down").await;
    assert_eq!(response.status, 503, "{}", response.text);
    let now = app.clock.unix_seconds();
    app.post_signed("refresh", &body)
        .await
        .assert(200, expire_at(now + 300));

    app.identity.answer_normally();
    identity_reachable_again(&app).await;
    app.post_signed("refresh", &body)
        .await
        .assert(200, expired());
}

#[tokio::test]
async fn identity_degraded_connection_expires_while_identity_is_reachable() {
    let app = spawn_app().await;
    let meta = Who::new("u-rf6", "fam-rf6")
        .degraded()
        .connect(&app, "refresh-idegraded-1")
        .await;
    assert_eq!(meta["degraded"], json!(true), "{meta}");
    app.post_signed("refresh", &request("u-rf6", Some(&meta), json!({})))
        .await
        .assert(200, expired());
}

/// Waits until the background probe has closed the failure streak.
async fn identity_reachable_again(app: &TestApp) {
    eventually("the probe sees identity-service again", async || {
        app.health().await["identity_outage"]["consecutive_failure_count"] == json!(0)
    })
    .await;
}
