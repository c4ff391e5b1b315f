//! The shared edge of the five client-context proxies: request authentication, malformed
//! JSON, body limit, status mode, metrics per type and outcome, and log hygiene.

use realtime_service::transport::http::auth::{sign, SIGNATURE_HEADER};
use serde_json::{json, Value};

use crate::helpers::{captured_logs, spawn_app, spawn_app_with, TestApp, SECRET};
use crate::proxies_support::{allowed, on_channel, publish_raw, request, Who};

const ROUTES: [&str; 5] = ["refresh", "subscribe", "publish", "sub_refresh", "rpc"];

fn unauthorized() -> Value {
    json!({"disconnect":{"code":4401,"reason":"unauthorized"}})
}

fn bad_request() -> Value {
    json!({"error":{"code":107,"message":"bad request"}})
}

/// A well-formed body for every route (the edge answers before it is looked at).
fn any_body() -> String {
    on_channel(
        "u-edge",
        Some(&crate::proxies_support::meta("u-edge", "fam-edge", "free")),
        "family:fam-edge",
    )
}

#[tokio::test]
async fn every_route_refuses_unsigned_and_badly_signed_calls() {
    let app = spawn_app().await;
    let body = any_body();
    let wrong = sign(b"not-the-secret", body.as_bytes());
    let right_for_other_body = sign(SECRET.as_bytes(), b"{}");
    for route in ROUTES {
        app.post_with_headers(route, body.as_bytes(), &[])
            .await
            .assert(401, unauthorized());
        app.post_with_headers(route, body.as_bytes(), &[(SIGNATURE_HEADER, &wrong)])
            .await
            .assert(401, unauthorized());
        app.post_with_headers(
            route,
            body.as_bytes(),
            &[(SIGNATURE_HEADER, &right_for_other_body)],
        )
        .await
        .assert(401, unauthorized());
    }
    assert_eq!(
        app.metric(r#"realtime_proxy_requests_total{proxy="subscribe",status="401"}"#)
            .await,
        3.0
    );
}

#[tokio::test]
async fn every_route_answers_malformed_json_with_400() {
    let app = spawn_app().await;
    assert_bad_request_on_every_route(
        &app,
        &[
            r#"{"user":"u-edge","channel":"#,
            "not json",
            "",
            r#"{"user":5}"#,
            r#"{"client":"c","meta":{"user":"u"},"channel":7}"#,
        ],
    )
    .await;
}

#[tokio::test]
async fn every_route_answers_a_non_object_body_with_400() {
    let app = spawn_app().await;
    assert_bad_request_on_every_route(&app, &["[]", r#"["c","websocket"]"#]).await;
}

/// Each body, signed and sent to each of the five routes, is refused at the edge with 400.
pub async fn assert_bad_request_on_every_route(app: &TestApp, bodies: &[&str]) {
    for route in ROUTES {
        for body in bodies {
            let response = app.post_signed(route, body).await;
            assert_eq!(
                (response.status, response.json()),
                (400, bad_request()),
                "{route} {body:?}"
            );
        }
    }
}

#[tokio::test]
async fn every_route_refuses_oversize_bodies_with_413() {
    let app = spawn_app_with(|c| {
        c.set("PROXY_MAX_BODY_BYTES", "2048");
    })
    .await;
    let m = Who::new("u-edge2", "fam-edge2")
        .connect(&app, "edge-oversize-1")
        .await;
    let big = publish_raw(
        "u-edge2",
        &m,
        "chat:fam-edge2",
        &format!(r#"{{"t":"{}"}}"#, "x".repeat(2100)),
    );
    assert!(big.len() > 2048);
    let fits = publish_raw("u-edge2", &m, "chat:fam-edge2", r#"{"t":"x"}"#);
    for route in ROUTES {
        app.post_signed(route, &big)
            .await
            .assert(413, bad_request());
    }
    app.post_signed("publish", &fits)
        .await
        .assert(200, allowed());
}

#[tokio::test]
async fn always_200_status_mode_applies_to_edge_failures() {
    let app = spawn_app_with(|c| {
        c.set("PROXY_HTTP_STATUS_MODE", "always_200");
    })
    .await;
    for route in ROUTES {
        app.post_with_headers(route, any_body().as_bytes(), &[])
            .await
            .assert(200, unauthorized());
        app.post_signed(route, "{").await.assert(200, bad_request());
    }
}

#[tokio::test]
async fn decisions_and_requests_are_counted_per_type_and_outcome() {
    let app = spawn_app().await;
    let m = Who::new("u-edge3", "fam-edge3")
        .connect(&app, "edge-metrics-1")
        .await;
    for _ in 0..2 {
        app.post_signed(
            "subscribe",
            &on_channel("u-edge3", Some(&m), "family:fam-edge3"),
        )
        .await
        .assert(200, allowed());
    }
    app.post_signed(
        "subscribe",
        &on_channel("u-edge3", Some(&m), "family:other"),
    )
    .await
    .assert(
        200,
        json!({"error":{"code":403,"message":"permission denied"}}),
    );
    app.post_signed(
        "subscribe",
        &on_channel("u-edge3", None, "family:fam-edge3"),
    )
    .await
    .assert(
        200,
        json!({"error":{"code":403,"message":"permission denied"}}),
    );
    for payload in [r#"{"a":1}"#, r#"{"b":2}"#, "[1]"] {
        app.post_signed(
            "publish",
            &publish_raw("u-edge3", &m, "chat:fam-edge3", payload),
        )
        .await;
    }
    app.post_signed("refresh", &request("u-edge3", Some(&m), json!({})))
        .await;

    // Prometheus writes labels sorted by name. Decisions are all answered with 200.
    let expected = [
        (
            r#"realtime_proxy_decisions_total{outcome="allowed",proxy="subscribe"}"#,
            2.0,
        ),
        (
            r#"realtime_proxy_decisions_total{outcome="denied",proxy="subscribe"}"#,
            1.0,
        ),
        (
            r#"realtime_proxy_decisions_total{outcome="bad_context",proxy="subscribe"}"#,
            1.0,
        ),
        (
            r#"realtime_proxy_decisions_total{outcome="allowed",proxy="publish"}"#,
            2.0,
        ),
        (
            r#"realtime_proxy_decisions_total{outcome="bad_payload",proxy="publish"}"#,
            1.0,
        ),
        (
            r#"realtime_proxy_decisions_total{outcome="extended",proxy="refresh"}"#,
            1.0,
        ),
        (
            r#"realtime_proxy_requests_total{proxy="publish",status="200"}"#,
            3.0,
        ),
        (
            r#"realtime_proxy_requests_total{proxy="subscribe",status="200"}"#,
            4.0,
        ),
    ];
    for (sample, value) in expected {
        assert_eq!(app.metric(sample).await, value, "{sample}");
    }
}

#[tokio::test]
async fn untrusted_context_is_logged_with_the_likely_misconfiguration_and_payloads_are_not_logged()
{
    let app = spawn_app().await;
    let client = "edge-log-client-7f3a";
    let body = json!({
        "client": client, "transport": "websocket", "protocol": "json", "encoding": "json",
        "user": "u-edge4", "channel": "family:fam-edge4",
    })
    .to_string();
    app.post_signed("subscribe", &body).await.assert(
        200,
        json!({"error":{"code":403,"message":"permission denied"}}),
    );
    let m = Who::new("u-edge4", "fam-edge4")
        .connect(&app, "edge-log-1")
        .await;
    let secret = "edge-payload-secret-91c2";
    app.post_signed(
        "publish",
        &publish_raw(
            "u-edge4",
            &m,
            "chat:fam-edge4",
            &format!(r#"{{"s":"{secret}"}}"#),
        ),
    )
    .await
    .assert(200, allowed());
    let logs = captured_logs();
    assert!(
        logs.lines()
            .any(|l| l.contains(client) && l.contains("include_connection_meta")),
        "no log line names the missing include_connection_meta for {client}"
    );
    assert!(!logs.contains(secret), "a publish payload was logged");
}
