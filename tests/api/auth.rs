//! Request authentication (Centrifugo -> service): HMAC signatures, the static header,
//! rotation, `none`, and that the check runs before anything else looks at the body.

use crate::fake_identity::Scripted;
use realtime_service::transport::http::auth::{sign, SECRET_HEADER, SIGNATURE_HEADER};
use serde_json::json;

use crate::helpers::{connect_body, spawn_app, spawn_app_with, TestApp, SECRET};
use crate::replies::{bad_request, unauthorized};

/// `realtime_proxy_signature_rejections_total` for `reason`.
pub async fn rejections(app: &TestApp, reason: &str) -> f64 {
    app.metric(&format!(
        "realtime_proxy_signature_rejections_total{{reason=\"{reason}\"}}"
    ))
    .await
}

async fn post(app: &TestApp, body: &str, headers: &[(&str, &str)]) -> crate::helpers::TestResponse {
    app.post_with_headers("connect", body.as_bytes(), headers)
        .await
}

#[tokio::test]
async fn hmac_missing_signature_is_unauthorized() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("auth-missing-1", Scripted::success("u"));
    post(&app, &connect_body("auth-missing-1"), &[])
        .await
        .assert(401, unauthorized());
    // The static header does not satisfy HMAC mode.
    post(
        &app,
        &connect_body("auth-missing-1"),
        &[(SECRET_HEADER, SECRET)],
    )
    .await
    .assert(401, unauthorized());
    assert_eq!(rejections(&app, "missing").await, 2.0);
    assert_eq!(rejections(&app, "malformed").await, 0.0);
    assert_eq!(rejections(&app, "mismatch").await, 0.0);
    assert_eq!(app.identity.calls(), 0);
}

#[tokio::test]
async fn hmac_malformed_signatures_are_unauthorized() {
    let app = spawn_app().await;
    let body = connect_body("auth-malformed-1");
    let good = sign(SECRET.as_bytes(), body.as_bytes());
    let non_hex = "z".repeat(64);
    let short = good[..62].to_owned();
    let long = format!("{good}00");
    let prefixed = format!("sha256={good}");
    let cases: Vec<Vec<&str>> = vec![
        vec![&non_hex],
        vec![&short],
        vec![&long],
        vec![&prefixed],
        vec![""],
        // Duplicated header, even with the right value twice.
        vec![&good, &good],
    ];
    for values in &cases {
        let headers: Vec<(&str, &str)> = values.iter().map(|v| (SIGNATURE_HEADER, *v)).collect();
        let response = post(&app, &body, &headers).await;
        assert_eq!(
            (response.status, response.json()),
            (401, unauthorized()),
            "{values:?}"
        );
    }
    assert_eq!(rejections(&app, "malformed").await, cases.len() as f64);
    assert_eq!(rejections(&app, "missing").await, 0.0);
    assert_eq!(app.identity.calls(), 0);
}

#[tokio::test]
async fn hmac_mismatch_is_unauthorized() {
    let app = spawn_app().await;
    let body = connect_body("auth-mismatch-1");
    let other_secret = sign(b"another-secret", body.as_bytes());
    // A valid signature of a different body (re-serialised JSON is a different body).
    let other_body = sign(SECRET.as_bytes(), format!("{body} ").as_bytes());
    for signature in [&other_secret, &other_body] {
        post(&app, &body, &[(SIGNATURE_HEADER, signature)])
            .await
            .assert(401, unauthorized());
    }
    assert_eq!(rejections(&app, "mismatch").await, 2.0);
    assert_eq!(app.identity.calls(), 0);
}

#[tokio::test]
async fn hmac_signature_is_accepted_in_either_case() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("auth-case-1", Scripted::success("u-lower"));
    app.identity
        .add_ticket("auth-case-2", Scripted::success("u-upper"));
    let body = connect_body("auth-case-1");
    let response = post(
        &app,
        &body,
        &[(SIGNATURE_HEADER, &sign(SECRET.as_bytes(), body.as_bytes()))],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text);
    let body = connect_body("auth-case-2");
    let upper = sign(SECRET.as_bytes(), body.as_bytes()).to_uppercase();
    let response = post(&app, &body, &[(SIGNATURE_HEADER, &upper)]).await;
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(response.json()["result"]["user"], json!("u-upper"));
    for reason in ["missing", "malformed", "mismatch"] {
        assert_eq!(rejections(&app, reason).await, 0.0, "{reason}");
    }
}

#[tokio::test]
async fn hmac_rotation_accepts_the_previous_secret_only() {
    let app = spawn_app_with(|c| {
        c.set("CENTRIFUGO_PROXY_SECRET_PREVIOUS", "old-rotated-secret");
    })
    .await;
    for (ticket, key) in [("auth-rot-1", SECRET), ("auth-rot-2", "old-rotated-secret")] {
        app.identity.add_ticket(ticket, Scripted::success("u-rot"));
        let body = connect_body(ticket);
        let response = post(
            &app,
            &body,
            &[(SIGNATURE_HEADER, &sign(key.as_bytes(), body.as_bytes()))],
        )
        .await;
        assert_eq!(response.status, 200, "{key}: {}", response.text);
    }
    let body = connect_body("auth-rot-3");
    post(
        &app,
        &body,
        &[(SIGNATURE_HEADER, &sign(b"unrelated", body.as_bytes()))],
    )
    .await
    .assert(401, unauthorized());
    assert_eq!(rejections(&app, "mismatch").await, 1.0);
    assert_eq!(app.identity.calls(), 2);
}

#[tokio::test]
async fn static_header_mode_compares_the_secret() {
    let app = spawn_app_with(|c| {
        c.set("CENTRIFUGO_PROXY_AUTH", "static_header")
            .set("CENTRIFUGO_PROXY_SECRET_PREVIOUS", "old-static-secret");
    })
    .await;
    assert_eq!(app.health().await["proxy_auth"], json!("static_header"));
    app.identity
        .add_ticket("auth-static-1", Scripted::success("u-static"));
    app.identity
        .add_ticket("auth-static-2", Scripted::success("u-static"));
    let response = post(
        &app,
        &connect_body("auth-static-1"),
        &[("X-Centrifugo-Proxy-Secret", SECRET)],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text);
    let response = post(
        &app,
        &connect_body("auth-static-2"),
        &[(SECRET_HEADER, "old-static-secret")],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text);

    let body = connect_body("auth-static-3");
    let signature = sign(SECRET.as_bytes(), body.as_bytes());
    let prefix = &SECRET[..SECRET.len() - 1];
    let longer = format!("{SECRET}x");
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[], "missing"),
        // A valid HMAC signature alone is not the static header.
        (&[(SIGNATURE_HEADER, &signature)], "missing"),
        (&[(SECRET_HEADER, "wrong")], "mismatch"),
        (&[(SECRET_HEADER, prefix)], "mismatch"),
        (&[(SECRET_HEADER, &longer)], "mismatch"),
        (
            &[(SECRET_HEADER, SECRET), (SECRET_HEADER, SECRET)],
            "malformed",
        ),
    ];
    for (headers, _) in &cases {
        let response = post(&app, &body, headers).await;
        assert_eq!(
            (response.status, response.json()),
            (401, unauthorized()),
            "{headers:?}"
        );
    }
    assert_eq!(rejections(&app, "missing").await, 2.0);
    assert_eq!(rejections(&app, "mismatch").await, 3.0);
    assert_eq!(rejections(&app, "malformed").await, 1.0);
    assert_eq!(app.identity.calls(), 2);
}

#[tokio::test]
async fn none_mode_accepts_unsigned_calls() {
    let app = spawn_app_with(|c| {
        c.set("CENTRIFUGO_PROXY_AUTH", "none");
    })
    .await;
    assert_eq!(app.health().await["proxy_auth"], json!("none"));
    app.identity
        .add_ticket("auth-none-1", Scripted::success("u-none"));
    app.identity
        .add_ticket("auth-none-2", Scripted::success("u-none"));
    let response = post(&app, &connect_body("auth-none-1"), &[]).await;
    assert_eq!(response.status, 200, "{}", response.text);
    // Whatever auth headers come along are ignored.
    let response = post(
        &app,
        &connect_body("auth-none-2"),
        &[(SIGNATURE_HEADER, "zz")],
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text);
}

#[tokio::test]
async fn hmac_auth_failure_comes_before_the_body_limit_and_json_parsing() {
    let app = spawn_app_with(|c| {
        c.set("PROXY_MAX_BODY_BYTES", "1024");
    })
    .await;
    let oversized = format!(
        r#"{{"data":{{"token":"auth-order-1"}},"pad":"{}"}}"#,
        "x".repeat(4096)
    );
    post(&app, &oversized, &[])
        .await
        .assert(401, unauthorized());
    post(&app, &oversized, &[(SIGNATURE_HEADER, "nothex")])
        .await
        .assert(401, unauthorized());
    let malformed = r#"{"data":{"token":"auth-order-2""#;
    post(&app, malformed, &[]).await.assert(401, unauthorized());
    // A well-formed signature that does not match: refused before parsing.
    post(
        &app,
        malformed,
        &[(SIGNATURE_HEADER, &sign(b"nope", malformed.as_bytes()))],
    )
    .await
    .assert(401, unauthorized());
    // Correctly signed, the same malformed body is a bad request.
    app.post_signed("connect", malformed)
        .await
        .assert(400, bad_request());
    assert_eq!(rejections(&app, "missing").await, 2.0);
    assert_eq!(rejections(&app, "malformed").await, 1.0);
    assert_eq!(rejections(&app, "mismatch").await, 1.0);
    assert_eq!(app.identity.calls(), 0);
}

#[tokio::test]
async fn static_header_failure_comes_before_the_body_limit_and_json_parsing() {
    let app = spawn_app_with(|c| {
        c.set("CENTRIFUGO_PROXY_AUTH", "static_header")
            .set("PROXY_MAX_BODY_BYTES", "1024");
    })
    .await;
    let oversized = format!(
        r#"{{"data":{{"token":"auth-order-3"}},"pad":"{}"}}"#,
        "x".repeat(4096)
    );
    post(&app, &oversized, &[(SECRET_HEADER, "wrong")])
        .await
        .assert(401, unauthorized());
    post(&app, "{not json", &[(SECRET_HEADER, "wrong")])
        .await
        .assert(401, unauthorized());
    post(&app, "{not json", &[(SECRET_HEADER, SECRET)])
        .await
        .assert(400, bad_request());
    post(&app, &oversized, &[(SECRET_HEADER, SECRET)])
        .await
        .assert(413, bad_request());
    assert_eq!(app.identity.calls(), 0);
}
