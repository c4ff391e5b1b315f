//! `POST /centrifugo/connect`: every row of the decision table, with exact bodies and
//! statuses, plus what is forwarded to identity-service.

use std::time::{Duration, Instant};

use crate::fake_identity::Scripted;
use base64::Engine as _;
use realtime_service::identity::proto;
use serde_json::{json, Value};
use tonic::Code;

use crate::helpers::{connect_body, spawn_app, spawn_app_with, TestApp, DEADLINE_MS};
use crate::replies::{
    bad_request, default_meta, internal_error, invalid_ticket, unauthorized, unavailable,
};

const EXPIRE_AT: i64 = 1_900_000_000;

fn with_expiry(user: &str) -> Scripted {
    Scripted::success_with(user, |s| s.expire_at = EXPIRE_AT)
}

fn connect_payload(fields: Value) -> String {
    let mut body = json!({
        "client": "c-1", "transport": "websocket", "protocol": "json", "encoding": "json", "name": "js",
    });
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    body.to_string()
}

async fn outcome(app: &TestApp, outcome: &str) -> f64 {
    app.metric(&format!(
        "realtime_centrifugo_connect_total{{outcome=\"{outcome}\"}}"
    ))
    .await
}

#[tokio::test]
async fn success_answers_user_expire_at_and_meta_but_no_info() {
    let app = spawn_app().await;
    app.identity.add_ticket("conn-ok-1", with_expiry("u-ok-1"));
    app.connect("conn-ok-1").await.assert(
        200,
        json!({"result":{"user":"u-ok-1","expire_at":EXPIRE_AT,"meta":default_meta("u-ok-1")}}),
    );
    assert_eq!(outcome(&app, "accepted").await, 1.0);
}

#[tokio::test]
async fn success_without_a_positive_expiry_gets_the_refresh_ttl() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("conn-noexp-1", Scripted::success("u-noexp"));
    app.identity.add_ticket(
        "conn-noexp-2",
        Scripted::success_with("u-noexp", |s| s.expire_at = -5),
    );
    for ticket in ["conn-noexp-1", "conn-noexp-2"] {
        // CONNECTION_REFRESH_TTL_S defaults to 3600 s, from the service's clock.
        let expire_at = app.clock.unix_seconds() + 3600;
        app.connect(ticket).await.assert(
            200,
            json!({"result":{"user":"u-noexp","expire_at":expire_at,"meta":default_meta("u-noexp")}}),
        );
        app.clock.advance(Duration::from_secs(7));
    }
}

#[tokio::test]
async fn connection_refresh_ttl_s_sets_the_default_expiry() {
    let app = spawn_app_with(|c| {
        c.set("CONNECTION_REFRESH_TTL_S", "900");
    })
    .await;
    app.identity
        .add_ticket("conn-refttl-1", Scripted::success("u-refttl"));
    app.identity
        .add_ticket("conn-refttl-2", with_expiry("u-refttl"));
    let response = app.connect("conn-refttl-1").await;
    assert_eq!(
        response.json()["result"]["expire_at"],
        json!(app.clock.unix_seconds() + 900)
    );
    // identity-service's own expiry wins, even beyond the refresh TTL.
    let response = app.connect("conn-refttl-2").await;
    assert_eq!(response.json()["result"]["expire_at"], json!(EXPIRE_AT));
}

#[tokio::test]
async fn meta_carries_the_identity_context_with_tiers_spelled_out() {
    let app = spawn_app().await;
    let tiers = [
        (proto::SubscriptionTier::Free as i32, "free"),
        (proto::SubscriptionTier::Pro as i32, "pro"),
        (proto::SubscriptionTier::Family as i32, "family"),
        (proto::SubscriptionTier::Unspecified as i32, "unspecified"),
        // An enum value this build does not know reads as unspecified.
        (99, "unspecified"),
    ];
    for (i, (tier, spelled)) in tiers.into_iter().enumerate() {
        let ticket = format!("conn-tier-{i}");
        app.identity.add_ticket(
            &ticket,
            Scripted::success_with("u-tier", |s| {
                s.expire_at = EXPIRE_AT;
                s.context = Some(proto::ConnectionContext {
                    family_id: "fam-7".into(),
                    subscription_tier: tier,
                    is_admin: true,
                    parental_state: Some(proto::ParentalState {
                        screen_time_lock: true,
                        feature_lock_chat: false,
                        feature_lock_diary: true,
                        feature_lock_flowcoach: false,
                    }),
                });
            }),
        );
        app.connect(&ticket).await.assert(
            200,
            json!({"result":{
                "user":"u-tier",
                "expire_at":EXPIRE_AT,
                "meta":{
                    "user":"u-tier",
                    "family_id":"fam-7",
                    "subscription_tier":spelled,
                    "is_admin":true,
                    "parental_state":{
                        "screen_time_lock":true,
                        "feature_lock_chat":false,
                        "feature_lock_diary":true,
                        "feature_lock_flowcoach":false,
                    },
                    "degraded":false,
                },
            }}),
        );
    }
}

#[tokio::test]
async fn success_without_context_gets_empty_defaults() {
    let app = spawn_app().await;
    app.identity.add_ticket(
        "conn-noctx-1",
        Scripted::success_with("u-noctx", |s| {
            s.context = None;
            s.expire_at = EXPIRE_AT;
        }),
    );
    app.connect("conn-noctx-1").await.assert(
        200,
        json!({"result":{"user":"u-noctx","expire_at":EXPIRE_AT,"meta":{
            "user":"u-noctx","family_id":"","subscription_tier":"unspecified","is_admin":false,
            "parental_state":{"screen_time_lock":false,"feature_lock_chat":false,"feature_lock_diary":false,"feature_lock_flowcoach":false},
            "degraded":false,
        }}}),
    );
}

#[tokio::test]
async fn connect_info_fields_are_copied_into_info() {
    let app = spawn_app_with(|c| {
        c.set(
            "CONNECT_INFO_FIELDS",
            "user, subscription_tier,parental_state",
        );
    })
    .await;
    app.identity
        .add_ticket("conn-info-1", with_expiry("u-info"));
    app.connect("conn-info-1").await.assert(
        200,
        json!({"result":{
            "user":"u-info",
            "expire_at":EXPIRE_AT,
            "info":{
                "user":"u-info",
                "subscription_tier":"free",
                "parental_state":default_meta("u-info")["parental_state"],
            },
            "meta":default_meta("u-info"),
        }}),
    );
}

#[tokio::test]
async fn identity_side_degraded_is_marked_in_meta_and_info() {
    let app = spawn_app().await;
    let early = app.clock.unix_seconds() + 60;
    app.identity.add_ticket(
        "conn-idegr-1",
        Scripted::success_with("u-idegr", |s| {
            s.expire_at = early;
            s.degraded = true;
        }),
    );
    let mut meta = default_meta("u-idegr");
    meta["degraded"] = json!(true);
    app.connect("conn-idegr-1").await.assert(
        200,
        json!({"result":{"user":"u-idegr","expire_at":early,"info":{"degraded":true},"meta":meta}}),
    );
    assert_eq!(outcome(&app, "accepted_degraded").await, 1.0);
    assert_eq!(outcome(&app, "accepted").await, 0.0);
}

#[tokio::test]
async fn identity_side_degraded_lives_at_most_the_fallback_ttl() {
    let app = spawn_app_with(|c| {
        c.set("FALLBACK_CONNECT_TTL_S", "120");
    })
    .await;
    for (ticket, expire_at) in [("conn-idegr-cap-1", EXPIRE_AT), ("conn-idegr-cap-2", 0)] {
        app.identity.add_ticket(
            ticket,
            Scripted::success_with("u-idegr-cap", |s| {
                s.expire_at = expire_at;
                s.degraded = true;
            }),
        );
        let response = app.connect(ticket).await;
        assert_eq!(
            response.json()["result"]["expire_at"],
            json!(app.clock.unix_seconds() + 120),
            "{ticket}: {}",
            response.text
        );
    }
}

#[tokio::test]
async fn identity_side_degraded_adds_to_configured_info_fields() {
    let app = spawn_app_with(|c| {
        c.set("CONNECT_INFO_FIELDS", "subscription_tier");
    })
    .await;
    app.identity.add_ticket(
        "conn-idegr-2",
        Scripted::success_with("u-idegr2", |s| {
            s.expire_at = EXPIRE_AT;
            s.degraded = true;
        }),
    );
    let response = app.connect("conn-idegr-2").await;
    assert_eq!(response.status, 200, "{}", response.text);
    let body = response.json();
    assert_eq!(
        body["result"]["info"],
        json!({"subscription_tier":"free","degraded":true})
    );
    assert_eq!(body["result"]["meta"]["degraded"], json!(true));
}

#[tokio::test]
async fn identity_disconnect_is_passed_through_with_401() {
    let app = spawn_app().await;
    let cases = [
        (
            "conn-disc-1",
            4403,
            "banned",
            json!({"disconnect":{"code":4403,"reason":"banned"}}),
        ),
        (
            "conn-disc-2",
            4000,
            "low edge",
            json!({"disconnect":{"code":4000,"reason":"low edge"}}),
        ),
        (
            "conn-disc-3",
            4999,
            "high edge",
            json!({"disconnect":{"code":4999,"reason":"high edge"}}),
        ),
        // Codes outside Centrifugo's application range become the standard 4401 (hardening
        // documented in src/connect.rs), so clients never act on nonsense codes.
        ("conn-disc-4", 3000, "x", invalid_ticket()),
        ("conn-disc-5", 5000, "x", invalid_ticket()),
        // A reason Centrifugo would refuse (non-ASCII) keeps the code, with the standard reason.
        (
            "conn-disc-6",
            4410,
            "verboten \u{1F6AB}",
            json!({"disconnect":{"code":4410,"reason":"invalid ticket"}}),
        ),
    ];
    for (ticket, code, reason, _) in &cases {
        app.identity
            .add_ticket(ticket, Scripted::disconnect(*code, reason));
    }
    for (ticket, _, _, body) in cases {
        app.connect(ticket).await.assert(401, body);
    }
    assert_eq!(outcome(&app, "disconnected").await, 6.0);
    // An answer, not an outage.
    assert_no_failure_streak(&app).await;
}

#[tokio::test]
async fn ticket_refusal_codes_answer_invalid_ticket() {
    let app = spawn_app().await;
    let codes = [
        Code::NotFound,
        Code::InvalidArgument,
        Code::Unauthenticated,
        Code::PermissionDenied,
    ];
    assert_codes_answer(&app, &codes, "conn-refuse", 401, invalid_ticket()).await;
    // Unknown and already used tickets are NOT_FOUND at the fake.
    app.connect("conn-refuse-unknown")
        .await
        .assert(401, invalid_ticket());
    assert_eq!(outcome(&app, "invalid_ticket").await, 5.0);
    assert_eq!(app.identity.calls(), 5);
    assert_no_failure_streak(&app).await;
}

#[tokio::test]
async fn identity_error_branch_answers_a_temporary_503_with_503() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("conn-err-1", Scripted::error(13, "database is down"));
    app.connect("conn-err-1").await.assert(503, unavailable());
    assert_eq!(outcome(&app, "identity_error").await, 1.0);
    // identity-service answered: that is not an outage.
    let health = app.health().await;
    assert_eq!(
        health["identity_outage"]["consecutive_failure_count"],
        json!(0)
    );
    assert_eq!(health["identity_outage"]["degraded"], json!(false));
}

#[tokio::test]
async fn unavailable_deadline_exceeded_and_cancelled_answer_a_temporary_503_before_the_window() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("conn-unav-1", Scripted::Status(Code::Unavailable));
    app.identity
        .add_ticket("conn-unav-2", Scripted::Status(Code::DeadlineExceeded));
    // A CANCELLED we did not cause: identity-service stopping mid-call (issue 9).
    app.identity
        .add_ticket("conn-unav-3", Scripted::Status(Code::Cancelled));
    app.connect("conn-unav-1").await.assert(503, unavailable());
    app.connect("conn-unav-2").await.assert(503, unavailable());
    app.connect("conn-unav-3").await.assert(503, unavailable());
    assert_eq!(outcome(&app, "unavailable").await, 3.0);
    assert_eq!(outcome(&app, "identity_error").await, 0.0);
    // Never retried: each ticket reached identity-service exactly once.
    for ticket in ["conn-unav-1", "conn-unav-2", "conn-unav-3"] {
        let calls = app
            .identity
            .seen()
            .iter()
            .filter(|c| c.ticket == ticket)
            .count();
        assert_eq!(calls, 1, "{ticket}");
    }
}

#[tokio::test]
async fn a_stall_past_the_deadline_answers_a_temporary_503_at_the_deadline() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("conn-stall-1", Scripted::success("u-stall"));
    app.identity.stall(Duration::from_millis(DEADLINE_MS * 10));
    let started = Instant::now();
    app.connect("conn-stall-1").await.assert(503, unavailable());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(DEADLINE_MS - 50)
            && elapsed < Duration::from_millis(DEADLINE_MS + 1000),
        "answered after {elapsed:?}, deadline {DEADLINE_MS} ms"
    );
    assert_eq!(outcome(&app, "unavailable").await, 1.0);
    // The call reached identity-service once and was not retried (the ticket is consumed).
    assert_eq!(
        app.identity
            .seen()
            .iter()
            .filter(|c| c.ticket == "conn-stall-1")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_deadline_expiry_is_labelled_deadline_exceeded() {
    let app = spawn_app().await;
    app.identity.stall(Duration::from_millis(DEADLINE_MS * 10));
    for i in 1..=4 {
        app.connect(&format!("conn-stall-label-{i}"))
            .await
            .assert(503, unavailable());
        let sample = r#"realtime_identity_validate_duration_seconds_count{code="deadline_exceeded",source="request"}"#;
        assert_eq!(app.metric(sample).await, f64::from(i), "attempt {i}");
    }
}

#[tokio::test]
async fn unusable_answers_are_internal_errors() {
    let app = spawn_app().await;
    let codes = [
        Code::Internal,
        Code::Unknown,
        Code::ResourceExhausted,
        Code::Aborted,
        Code::Unimplemented,
        Code::FailedPrecondition,
        Code::AlreadyExists,
        Code::OutOfRange,
        Code::DataLoss,
    ];
    assert_codes_answer(&app, &codes, "conn-internal", 500, internal_error()).await;
    // A success without a user would admit an anonymous connection; an empty oneof says nothing.
    app.identity
        .add_ticket("conn-internal-nouser", Scripted::success_with("", |_| {}));
    app.identity.add_ticket(
        "conn-internal-empty",
        Scripted::Answer(proto::ValidateResponse { result: None }),
    );
    app.connect("conn-internal-nouser")
        .await
        .assert(500, internal_error());
    app.connect("conn-internal-empty")
        .await
        .assert(500, internal_error());
    assert_eq!(outcome(&app, "internal_error").await, 11.0);
    assert_no_failure_streak(&app).await;
}

#[tokio::test]
async fn missing_or_empty_token_is_invalid_without_calling_identity() {
    let app = spawn_app().await;
    for data in [
        json!({}),
        json!({"data": {}}),
        json!({"data": null}),
        json!({"data": {"token": ""}}),
        json!({"data": {"token": null}}),
        json!({"data": {"ticket": "conn-wrongfield-1"}}),
        json!({"encoding": "binary", "b64data": ""}),
    ] {
        let body = connect_payload(data.clone());
        let response = app.post_signed("connect", &body).await;
        assert_eq!(
            (response.status, response.json()),
            (401, invalid_ticket()),
            "{data}"
        );
    }
    assert_eq!(app.identity.calls(), 0);
    assert_eq!(outcome(&app, "invalid_ticket").await, 7.0);
}

#[tokio::test]
async fn the_ticket_can_arrive_base64_in_b64data() {
    let app = spawn_app().await;
    app.identity.add_ticket("conn-b64-1", with_expiry("u-b64"));
    let b64 = base64::engine::general_purpose::STANDARD
        .encode(json!({"token": "conn-b64-1"}).to_string());
    let body = connect_payload(json!({"encoding": "binary", "b64data": b64}));
    app.post_signed("connect", &body).await.assert(
        200,
        json!({"result":{"user":"u-b64","expire_at":EXPIRE_AT,"meta":default_meta("u-b64")}}),
    );
    let seen = app.identity.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].ticket, "conn-b64-1");
}

#[tokio::test]
async fn malformed_requests_are_bad_requests_without_calling_identity() {
    let app = spawn_app().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let bodies = [
        r#"{"data":{"token":"conn-bad-1"}"#.to_owned(),
        "not json at all".to_owned(),
        String::new(),
        "null".to_owned(),
        "\"conn-bad-8\"".to_owned(),
        "5".to_owned(),
        r#"{"client":5,"data":{"token":"conn-bad-2"}}"#.to_owned(),
        connect_payload(json!({"data": [1]})),
        connect_payload(json!({"data": "conn-bad-3"})),
        connect_payload(json!({"data": 5})),
        connect_payload(json!({"data": {"token": 5}})),
        connect_payload(json!({"data": {"token": ["conn-bad-4"]}})),
        connect_payload(json!({"data": {"token": {"v": "conn-bad-5"}}})),
        connect_payload(json!({"data": {"token": true}})),
        connect_payload(json!({"encoding": "binary", "b64data": "!!not base64!!"})),
        connect_payload(json!({"encoding": "binary", "b64data": b64("not json")})),
        connect_payload(json!({"encoding": "binary", "b64data": b64("[\"conn-bad-6\"]")})),
        connect_payload(json!({"encoding": "binary", "b64data": b64(r#"{"token":7}"#)})),
    ];
    for body in &bodies {
        let response = app.post_signed("connect", body).await;
        assert_eq!(
            (response.status, response.json()),
            (400, bad_request()),
            "{body}"
        );
    }
    assert_eq!(app.identity.calls(), 0);
}

#[tokio::test]
async fn a_top_level_json_array_is_a_bad_request() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("conn-array-1", Scripted::success("u-array"));
    // ProxyRequest's fields in declaration order: client, transport, protocol, encoding,
    // user, channel, method, meta, data, b64data.
    let positional =
        r#"["c-1","websocket","json","json",null,null,null,null,{"token":"conn-array-1"}]"#;
    for body in ["[]", r#"["conn-array-2"]"#, positional] {
        let response = app.post_signed("connect", body).await;
        assert_eq!(
            (response.status, response.json()),
            (400, bad_request()),
            "{body}"
        );
    }
    assert_eq!(app.identity.calls(), 0);
}

/// A signed connect body of exactly `len` bytes carrying `ticket`.
fn body_of_len(ticket: &str, len: usize) -> String {
    let shape = |pad: &str| {
        json!({"client":"c-1","transport":"websocket","data":{"token":ticket},"pad":pad})
            .to_string()
    };
    let base = shape("").len();
    assert!(len >= base, "{len} < {base}");
    let body = shape(&"x".repeat(len - base));
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_one_at_the_limit_is_served() {
    let app = spawn_app_with(|c| {
        c.set("PROXY_MAX_BODY_BYTES", "1024");
    })
    .await;
    assert_body_limit(&app, 1024, "conn-limit").await;
}

#[tokio::test]
async fn the_default_body_limit_is_65536_bytes() {
    assert_body_limit(&spawn_app().await, 65_536, "conn-deflimit").await;
}

/// One byte over the limit, and far over it, is 413 with no identity call; a body of exactly
/// `limit` bytes is served.
async fn assert_body_limit(app: &TestApp, limit: usize, tag: &str) {
    let (over_ticket, at_ticket) = (format!("{tag}-1"), format!("{tag}-2"));
    app.identity.add_ticket(&at_ticket, with_expiry("u-limit"));
    for len in [limit + 1, limit * 3] {
        app.post_signed("connect", &body_of_len(&over_ticket, len))
            .await
            .assert(413, bad_request());
    }
    assert_eq!(app.identity.calls(), 0);
    let response = app
        .post_signed("connect", &body_of_len(&at_ticket, limit))
        .await;
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(response.json()["result"]["user"], json!("u-limit"));
}

#[tokio::test]
async fn always_200_mode_answers_every_outcome_with_200_and_the_same_body() {
    let app = spawn_app_with(|c| {
        c.set("PROXY_HTTP_STATUS_MODE", "always_200")
            .set("PROXY_MAX_BODY_BYTES", "1024");
    })
    .await;
    app.identity
        .add_ticket("conn-a200-ok", with_expiry("u-a200"));
    app.identity
        .add_ticket("conn-a200-disc", Scripted::disconnect(4403, "banned"));
    app.identity
        .add_ticket("conn-a200-err", Scripted::error(1, "x"));
    app.identity
        .add_ticket("conn-a200-unav", Scripted::Status(Code::Unavailable));
    app.identity
        .add_ticket("conn-a200-int", Scripted::Status(Code::Internal));

    app.connect("conn-a200-ok").await.assert(
        200,
        json!({"result":{"user":"u-a200","expire_at":EXPIRE_AT,"meta":default_meta("u-a200")}}),
    );
    app.connect("conn-a200-disc")
        .await
        .assert(200, json!({"disconnect":{"code":4403,"reason":"banned"}}));
    app.connect("conn-a200-unknown")
        .await
        .assert(200, invalid_ticket());
    app.connect("conn-a200-err")
        .await
        .assert(200, unavailable());
    app.connect("conn-a200-unav")
        .await
        .assert(200, unavailable());
    app.connect("conn-a200-int")
        .await
        .assert(200, internal_error());
    app.post_signed("connect", r#"{"data":"#)
        .await
        .assert(200, bad_request());
    app.post_signed("connect", &body_of_len("conn-a200-big", 2048))
        .await
        .assert(200, bad_request());
    app.post_with_headers(
        "connect",
        connect_body("conn-a200-unsigned").as_bytes(),
        &[],
    )
    .await
    .assert(200, unauthorized());

    // Metrics keep the decided status.
    for (status, count) in [
        ("200", 1.0),
        ("401", 3.0),
        ("503", 2.0),
        ("500", 1.0),
        ("400", 1.0),
        ("413", 1.0),
    ] {
        let sample =
            format!("realtime_proxy_requests_total{{proxy=\"connect\",status=\"{status}\"}}");
        assert_eq!(app.metric(&sample).await, count, "{sample}");
    }
}

#[tokio::test]
async fn validate_carries_the_ticket_client_transport_and_grpc_timeout() {
    let app = spawn_app().await;
    app.identity.add_ticket("conn-fwd-1", with_expiry("u-fwd"));
    let body = json!({
        "client": "client-fwd-42",
        "transport": "sse",
        "protocol": "json",
        "encoding": "json",
        "data": {"token": "conn-fwd-1"},
    })
    .to_string();
    assert_eq!(app.post_signed("connect", &body).await.status, 200);
    let seen = app.identity.seen();
    assert_eq!(seen.len(), 1, "Validate is called exactly once");
    let call = &seen[0];
    assert_eq!(
        (
            call.ticket.as_str(),
            call.client_id.as_str(),
            call.transport.as_str()
        ),
        ("conn-fwd-1", "client-fwd-42", "sse")
    );
    let timeout = call
        .grpc_timeout
        .as_deref()
        .expect("grpc-timeout metadata is sent");
    assert!(
        grpc_timeout(timeout) > Duration::ZERO
            && grpc_timeout(timeout) <= Duration::from_millis(DEADLINE_MS),
        "grpc-timeout {timeout} does not carry the {DEADLINE_MS} ms deadline"
    );
}

/// Parses a `grpc-timeout` value (`<digits><unit>`) with the service's own parser.
fn grpc_timeout(value: &str) -> Duration {
    realtime_service::transport::grpc::parse_grpc_timeout(value)
        .unwrap_or_else(|| panic!("bad grpc-timeout {value}"))
}

/// Answers (of any kind) are not outages: no failure streak is open.
async fn assert_no_failure_streak(app: &TestApp) {
    assert_eq!(
        app.health().await["identity_outage"]["consecutive_failure_count"],
        json!(0)
    );
}

/// identity-service failing a fresh ticket with each of `codes` gets `status` and `body`.
async fn assert_codes_answer(app: &TestApp, codes: &[Code], tag: &str, status: u16, body: Value) {
    for (i, code) in codes.iter().enumerate() {
        let ticket = format!("{tag}-{i}");
        app.identity.add_ticket(&ticket, Scripted::Status(*code));
        let response = app.connect(&ticket).await;
        assert_eq!(
            (response.status, response.json()),
            (status, body.clone()),
            "{code:?}: {}",
            response.text
        );
    }
}
