//! gRPC `Connect`: every row of the connect table, each compared with the HTTP answer to an
//! equivalent ticket (the same meta and info JSON), the ticket decoding failures, and
//! PROXY_MAX_BODY_BYTES on the protobuf message.

use crate::fake_identity::Scripted;
use realtime_service::identity::proto::{SubscriptionTier, ValidateResponse};
use realtime_service::transport::grpc::proto::ConnectResponse;
use serde_json::{json, Value};
use tonic::Code;

use crate::grpc_support::{
    assert_rows, connect_both, connect_message_of_len, connect_outcome, signed, Body, Call, Kind,
};
use crate::helpers::{spawn_app, spawn_app_with, TestApp, TestResponse};
use crate::proxies_support::{object_of_len, Locks, Who, CLIENT};
use crate::replies::{bad_request, default_meta, internal_error, invalid_ticket, unavailable};

const EXPIRE_AT: i64 = 1_900_000_000;

fn with_expiry(user: &str) -> Scripted {
    Scripted::success_with(user, |s| s.expire_at = EXPIRE_AT)
}

/// The gRPC answer is the HTTP one, and its `meta` and `info` bytes are the very JSON text
/// the HTTP body carries.
#[track_caller]
fn assert_same_connect(case: &str, http: &TestResponse, grpc: &ConnectResponse) {
    assert_eq!(grpc.body(), http.json(), "{case}: HTTP said {}", http.text);
    let result = grpc.result.as_ref().expect("a result");
    for bytes in [&result.meta, &result.info] {
        let text = std::str::from_utf8(bytes).expect("UTF-8");
        assert!(
            http.text.contains(text),
            "{case}: {text} is not in {}",
            http.text
        );
    }
}

#[tokio::test]
async fn successes_carry_the_meta_and_info_http_sends() {
    let app = spawn_app().await;
    let early = app.clock.unix_seconds() + 60;
    let rows = [
        ("grpc-conn-expiry", with_expiry("u-gc1")),
        ("grpc-conn-noexp", Scripted::success("u-gc2")),
        (
            "grpc-conn-ctx",
            Who::new("u-gc3", "fam-gc3")
                .tier(SubscriptionTier::Pro)
                .admin()
                .locks(Locks {
                    chat: true,
                    diary: true,
                    ..Locks::default()
                })
                .scripted(),
        ),
        (
            "grpc-conn-noctx",
            Scripted::success_with("u-gc4", |s| s.context = None),
        ),
        (
            "grpc-conn-idegraded",
            Scripted::success_with("u-gc5", |s| {
                s.expire_at = early;
                s.degraded = true;
            }),
        ),
    ];
    for (tag, answer) in &rows {
        let (http, grpc) = connect_both(&app, tag, answer, Call::connect).await;
        assert_eq!(http.status, 200, "{tag}: {}", http.text);
        assert_same_connect(tag, &http, &grpc);
    }
    let (_, grpc) = connect_both(
        &app,
        "grpc-conn-exact",
        &with_expiry("u-gc6"),
        Call::connect,
    )
    .await;
    assert_eq!(
        grpc.body(),
        json!({"result":{"user":"u-gc6","expire_at":EXPIRE_AT,"meta":default_meta("u-gc6")}})
    );
    let mut degraded = default_meta("u-gc5");
    degraded["degraded"] = json!(true);
    let (_, grpc) = connect_both(&app, "grpc-conn-idegraded-2", &rows[4].1, Call::connect).await;
    assert_eq!(
        grpc.body(),
        json!({"result":{"user":"u-gc5","expire_at":early,"info":{"degraded":true},"meta":degraded}})
    );
    for (outcome, count) in [("accepted", 5.0), ("accepted_degraded", 2.0)] {
        assert_eq!(
            connect_outcome(&app, outcome, "grpc").await,
            count,
            "{outcome}"
        );
        assert_eq!(
            connect_outcome(&app, outcome, "http").await,
            count,
            "{outcome}"
        );
    }
}

#[tokio::test]
async fn connect_info_fields_fill_info_as_over_http() {
    let app = spawn_app_with(|c| {
        c.set(
            "CONNECT_INFO_FIELDS",
            "user, subscription_tier,parental_state",
        );
    })
    .await;
    let degraded = Scripted::success_with("u-gci2", |s| {
        s.expire_at = EXPIRE_AT;
        s.degraded = true;
    });
    for (tag, answer) in [
        ("grpc-info-1", with_expiry("u-gci1")),
        ("grpc-info-2", degraded),
    ] {
        let (http, grpc) = connect_both(&app, tag, &answer, Call::connect).await;
        assert_same_connect(tag, &http, &grpc);
        let info = grpc.body()["result"]["info"].clone();
        assert_eq!(info["subscription_tier"], json!("free"), "{tag}: {info}");
    }
}

#[tokio::test]
async fn refusals_and_failures_answer_as_over_http() {
    let app = spawn_app().await;
    let rows: [(&str, Scripted, Value); 12] = [
        (
            "grpc-conn-disc",
            Scripted::disconnect(4403, "banned"),
            json!({"disconnect":{"code":4403,"reason":"banned"}}),
        ),
        // Outside Centrifugo's application range: the standard 4401.
        (
            "grpc-conn-disc-low",
            Scripted::disconnect(3000, "x"),
            invalid_ticket(),
        ),
        (
            "grpc-conn-disc-high",
            Scripted::disconnect(5000, "x"),
            invalid_ticket(),
        ),
        (
            "grpc-conn-disc-reason",
            Scripted::disconnect(4410, "verboten \u{1F6AB}"),
            json!({"disconnect":{"code":4410,"reason":"invalid ticket"}}),
        ),
        (
            "grpc-conn-notfound",
            Scripted::Status(Code::NotFound),
            invalid_ticket(),
        ),
        (
            "grpc-conn-denied",
            Scripted::Status(Code::PermissionDenied),
            invalid_ticket(),
        ),
        (
            "grpc-conn-error",
            Scripted::error(13, "database is down"),
            unavailable(),
        ),
        (
            "grpc-conn-internal",
            Scripted::Status(Code::Internal),
            internal_error(),
        ),
        (
            "grpc-conn-nouser",
            Scripted::success_with("", |_| {}),
            internal_error(),
        ),
        (
            "grpc-conn-empty",
            Scripted::Answer(ValidateResponse { result: None }),
            internal_error(),
        ),
        // identity-service unreachable, before the degraded window.
        (
            "grpc-conn-unav",
            Scripted::Status(Code::Unavailable),
            unavailable(),
        ),
        (
            "grpc-conn-deadline",
            Scripted::Status(Code::DeadlineExceeded),
            unavailable(),
        ),
    ];
    for (tag, answer, want) in &rows {
        let (http, grpc) = connect_both(&app, tag, answer, Call::connect).await;
        assert_eq!(
            (grpc.body(), http.json()),
            (want.clone(), want.clone()),
            "{tag}"
        );
    }
    // A ticket identity-service does not know.
    Call::connect("grpc-conn-unknown")
        .answers(&app, Kind::Connect, &invalid_ticket())
        .await;
    for outcome in [
        "disconnected",
        "invalid_ticket",
        "identity_error",
        "unavailable",
        "internal_error",
    ] {
        assert_eq!(
            connect_outcome(&app, outcome, "grpc").await,
            connect_outcome(&app, outcome, "http").await,
            "{outcome}"
        );
    }
    assert_eq!(connect_outcome(&app, "identity_error", "grpc").await, 1.0);
    assert_eq!(connect_outcome(&app, "unavailable", "grpc").await, 2.0);
    assert_eq!(connect_outcome(&app, "internal_error", "grpc").await, 3.0);
}

#[tokio::test]
async fn an_unreachable_identity_service_is_a_temporary_503_before_the_window() {
    let app = spawn_app().await;
    app.identity.stop();
    for i in 0..3 {
        Call::connect(&format!("grpc-conn-down-{i}"))
            .answers(&app, Kind::Connect, &unavailable())
            .await;
    }
    assert_eq!(connect_outcome(&app, "unavailable", "grpc").await, 3.0);
    assert_eq!(
        app.health().await["identity_outage"]["degraded"],
        json!(false)
    );
}

#[tokio::test]
async fn ticket_decoding_answers_as_over_http_without_calling_identity() {
    let app = spawn_app().await;
    let json = |text: &str| Call::default().json(text);
    let binary = |bytes: &[u8]| Call::default().binary(bytes);
    let missing = [
        Call::default(),
        json("{}"),
        json("null"),
        json(r#"{"token":""}"#),
        json(r#"{"token":null}"#),
        json(r#"{"ticket":"grpc-dec-1"}"#),
        Call::default().b64(""),
    ];
    for call in &missing {
        call.answers(&app, Kind::Connect, &invalid_ticket()).await;
    }
    let malformed = [
        json("[1]"),
        json(r#""grpc-dec-2""#),
        json("5"),
        json(r#"{"token":5}"#),
        json(r#"{"token":["grpc-dec-3"]}"#),
        json(r#"{"token":true}"#),
        json(r#"{"token":{"v":"grpc-dec-4"}}"#),
        Call::default().b64("!!not base64!!"),
        binary(b"not json"),
        binary(br#"["grpc-dec-5"]"#),
        binary(br#"{"token":7}"#),
    ];
    for call in &malformed {
        call.answers(&app, Kind::Connect, &bad_request()).await;
    }
    // gRPC alone can carry `data` that is not JSON at all.
    for data in [&b"not json"[..], b"\xff\xfe", br#"{"token":"grpc-dec-6""#] {
        let mut message = Call::default().connect_message();
        message.data = data.to_vec();
        let response = app
            .grpc()
            .connect(signed(message))
            .await
            .expect("status OK");
        assert_eq!(response.into_inner().body(), bad_request(), "{data:?}");
    }
    assert_eq!(app.identity.calls(), 0);
    assert_eq!(
        connect_outcome(&app, "invalid_ticket", "grpc").await,
        missing.len() as f64
    );
    assert_eq!(
        connect_outcome(&app, "bad_request", "grpc").await,
        malformed.len() as f64 + 3.0
    );
}

#[tokio::test]
async fn the_ticket_can_arrive_base64_in_b64data() {
    let app = spawn_app().await;
    let (http, grpc) = connect_both(
        &app,
        "grpc-conn-b64",
        &with_expiry("u-gb64"),
        Call::connect_binary,
    )
    .await;
    assert_same_connect("b64data", &http, &grpc);
    assert_eq!(
        grpc.body(),
        json!({"result":{"user":"u-gb64","expire_at":EXPIRE_AT,"meta":default_meta("u-gb64")}})
    );
    let seen = app.identity.seen();
    let grpc_call = seen.last().expect("a Validate call");
    assert_eq!(
        (
            grpc_call.ticket.as_str(),
            grpc_call.client_id.as_str(),
            grpc_call.transport.as_str()
        ),
        ("grpc-conn-b64-grpc", CLIENT, "websocket")
    );
}

/// One byte over the limit is 107 without calling identity-service, and so is a message
/// many times the limit (never buffered: it is drained and dropped); exactly the limit is
/// served.
async fn assert_message_limit(app: &TestApp, limit: usize, tag: &str) {
    let over = connect_message_of_len(&format!("{tag}-over"), limit + 1);
    let response = app.grpc().connect(signed(over)).await.expect("status OK");
    assert_eq!(response.into_inner().body(), bad_request());
    let far = connect_message_of_len(&format!("{tag}-far"), limit * 8 + 1);
    let response = app.grpc().connect(signed(far)).await.expect("status OK");
    assert_eq!(response.into_inner().body(), bad_request());
    assert_eq!(app.identity.calls(), 0);

    let at_ticket = format!("{tag}-at");
    app.identity.add_ticket(&at_ticket, with_expiry("u-glimit"));
    let at = connect_message_of_len(&at_ticket, limit);
    let response = app.grpc().connect(signed(at)).await.expect("status OK");
    assert_eq!(
        response.into_inner().body()["result"]["user"],
        json!("u-glimit")
    );
}

#[tokio::test]
async fn a_message_over_proxy_max_body_bytes_is_a_bad_request() {
    let app = spawn_app_with(|c| {
        c.set("PROXY_MAX_BODY_BYTES", "1024");
    })
    .await;
    assert_message_limit(&app, 1024, "grpc-limit").await;
    // Refused at the edge, as HTTP refuses an oversized body: not a connect decision.
    assert_eq!(connect_outcome(&app, "bad_request", "grpc").await, 0.0);
    // Any method: a publish over the limit is the same 107, not the policy's 413.
    let meta = default_meta("u-glimit");
    let publish = Call::new("u-glimit", Some(&meta))
        .channel("chat:family-of-u-glimit")
        .json(&object_of_len(1100));
    assert_rows(
        &app,
        Kind::Publish,
        &[("over the limit", publish, bad_request())],
    )
    .await;
}

#[tokio::test]
async fn the_default_message_limit_is_65536_bytes() {
    assert_message_limit(&spawn_app().await, 65_536, "grpc-deflimit").await;
}
