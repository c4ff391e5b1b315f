//! gRPC `Subscribe`, `Publish`, `SubRefresh`, `Refresh` and `RPC` with the built-in policy:
//! the key rows of the HTTP tests, each sent over both transports and answered alike, with
//! identity contexts from real gRPC connects (the meta bytes go back in `meta`).

use std::time::Duration;

use realtime_service::identity::proto::SubscriptionTier;
use serde_json::{json, Value};
use tonic::Code;

use crate::grpc_support::{assert_rows, connect_grpc, decisions, signed, Body, Call, Kind};
use crate::helpers::{spawn_app, spawn_app_with};
use crate::proxies_rpc::spawn_rpc;
use crate::proxies_support::{
    allowed, bad_payload, degraded_session, expire_at, expired, meta, method_not_found,
    object_of_len, permission_denied, rpc_internal, too_large, too_many, with, Who,
};
use crate::replies::unavailable;

const HI: &str = r#"{"text":"hi"}"#;

/// Each outcome was decided `count` times over each transport.
async fn assert_counted(app: &crate::helpers::TestApp, kind: Kind, counts: &[(&str, f64)]) {
    for (outcome, count) in counts {
        for transport in ["grpc", "http"] {
            assert_eq!(
                decisions(app, kind, outcome, transport).await,
                *count,
                "{kind:?} {outcome} over {transport}"
            );
        }
    }
}

#[tokio::test]
async fn subscribe_answers_as_over_http() {
    let app = spawn_app().await;
    let m = connect_grpc(
        &app,
        &Who::new("u-gsub", "fam-gsub").tier(SubscriptionTier::Pro),
        "grpc-sub-1",
    )
    .await;
    let now = app.clock.unix_seconds();
    let on = |meta: &Value, channel: &str| Call::new("u-gsub", Some(meta)).channel(channel);
    let locked = with(&m, "parental_state/feature_lock_chat", json!(true));
    let degraded = with(&m, "degraded", json!(true));
    let rows = [
        (
            "owner, with ttl",
            on(&m, "chat:fam-gsub"),
            expire_at(now + 900),
        ),
        ("owner, no ttl", on(&m, "family:fam-gsub"), allowed()),
        ("broadcast", on(&m, "broadcast:news"), allowed()),
        (
            "other family",
            on(&m, "chat:fam-other"),
            permission_denied(),
        ),
        ("other user", on(&m, "diary:u-other"), permission_denied()),
        ("not admin", on(&m, "admin:ops"), permission_denied()),
        ("unknown namespace", on(&m, "games:x"), permission_denied()),
        ("locked", on(&locked, "chat:fam-gsub"), permission_denied()),
        (
            "degraded",
            on(&degraded, "chat:fam-gsub"),
            permission_denied(),
        ),
        (
            "degraded on broadcast",
            on(&degraded, "broadcast:news"),
            allowed(),
        ),
        (
            "missing meta",
            Call::new("u-gsub", None).channel("family:fam-gsub"),
            permission_denied(),
        ),
        (
            "user mismatch",
            Call::new("u-other", Some(&m)).channel("family:fam-gsub"),
            permission_denied(),
        ),
        (
            "not our meta",
            on(&json!({"x": 1}), "family:fam-gsub"),
            permission_denied(),
        ),
    ];
    assert_rows(&app, Kind::Subscribe, &rows).await;
    assert_counted(
        &app,
        Kind::Subscribe,
        &[("allowed", 4.0), ("bad_context", 3.0)],
    )
    .await;
    // gRPC alone can carry meta bytes that are not even text.
    let mut message = on(&m, "family:fam-gsub").subscribe_message();
    message.meta = vec![0xff, 0xfe];
    let response = app
        .grpc()
        .subscribe(signed(message))
        .await
        .expect("status OK");
    assert_eq!(response.into_inner().body(), permission_denied());
}

#[tokio::test]
async fn publish_answers_as_over_http() {
    let app = spawn_app_with(|c| {
        c.set("PUBLISH_BURST", "1000");
    })
    .await;
    let m = connect_grpc(&app, &Who::new("u-gpub", "fam-gpub"), "grpc-pub-1").await;
    let on = |meta: &Value, channel: &str| Call::new("u-gpub", Some(meta)).channel(channel);
    let chat = |meta: &Value| on(meta, "chat:fam-gpub");
    let degraded = with(&m, "degraded", json!(true));
    // The bytes as received count, whitespace included.
    let spaced = format!("{{ {}", &object_of_len(16_384)[1..]);
    let rows = [
        ("allowed", chat(&m).json(HI), allowed()),
        ("allowed, binary", chat(&m).binary(br#"{"a":1}"#), allowed()),
        (
            "other family",
            on(&m, "chat:fam-other").json(HI),
            permission_denied(),
        ),
        (
            "no client publish",
            on(&m, "notifications:u-gpub").json(HI),
            permission_denied(),
        ),
        ("degraded", chat(&degraded).json(HI), degraded_session()),
        (
            "degraded before size",
            chat(&degraded).json(&object_of_len(16_385)),
            degraded_session(),
        ),
        (
            "missing meta",
            Call::new("u-gpub", None).channel("chat:fam-gpub").json(HI),
            permission_denied(),
        ),
        ("not an object", chat(&m).json("[1,2]"), bad_payload()),
        ("no data", chat(&m), bad_payload()),
        (
            "binary, not an object",
            chat(&m).binary(b"[1]"),
            bad_payload(),
        ),
        ("not base64", chat(&m).b64("%%%"), bad_payload()),
        (
            "at the limit",
            chat(&m).json(&object_of_len(16_384)),
            allowed(),
        ),
        (
            "over the limit",
            chat(&m).json(&object_of_len(16_385)),
            too_large(),
        ),
        ("whitespace counts", chat(&m).json(&spaced), too_large()),
        (
            "decoded bytes count",
            chat(&m).binary(object_of_len(16_384).as_bytes()),
            allowed(),
        ),
        (
            "decoded, over",
            chat(&m).binary(object_of_len(16_385).as_bytes()),
            too_large(),
        ),
        (
            "diary limit",
            on(&m, "diary:u-gpub").json(&object_of_len(32_768)),
            allowed(),
        ),
    ];
    assert_rows(&app, Kind::Publish, &rows).await;
    assert_counted(
        &app,
        Kind::Publish,
        &[
            ("allowed", 5.0),
            ("degraded", 2.0),
            ("payload_too_large", 3.0),
            ("bad_payload", 4.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_publish_rate_limit_is_one_bucket_for_both_transports() {
    let app = spawn_app_with(|c| {
        c.set("PUBLISH_RATE_PER_SECOND", "1")
            .set("PUBLISH_BURST", "3");
    })
    .await;
    let m = connect_grpc(&app, &Who::new("u-grl", "fam-grl"), "grpc-rate-1").await;
    let call = Call::new("u-grl", Some(&m))
        .channel("chat:fam-grl")
        .json(HI);
    // Denied publishes use no token.
    for _ in 0..3 {
        Call::new("u-grl", Some(&m))
            .channel("chat:fam-other")
            .json(HI)
            .answers(&app, Kind::Publish, &permission_denied())
            .await;
    }
    // The burst, spent over both transports.
    assert_eq!(call.grpc(&app, Kind::Publish).await, allowed());
    assert_eq!(call.http(&app, Kind::Publish).await.json(), allowed());
    assert_eq!(call.grpc(&app, Kind::Publish).await, allowed());
    assert_eq!(call.grpc(&app, Kind::Publish).await, too_many());
    assert_eq!(call.http(&app, Kind::Publish).await.json(), too_many());
    // One second refills one token, for whichever transport comes first.
    app.clock.advance(Duration::from_secs(1));
    assert_eq!(call.grpc(&app, Kind::Publish).await, allowed());
    assert_eq!(call.http(&app, Kind::Publish).await.json(), too_many());
    assert_eq!(
        decisions(&app, Kind::Publish, "rate_limited", "grpc").await,
        1.0
    );
    assert_eq!(
        decisions(&app, Kind::Publish, "rate_limited", "http").await,
        2.0
    );
}

#[tokio::test]
async fn sub_refresh_answers_as_over_http() {
    let app = spawn_app().await;
    let m = connect_grpc(
        &app,
        &Who::new("u-gsr", "fam-gsr").tier(SubscriptionTier::Pro),
        "grpc-subref-1",
    )
    .await;
    app.clock.advance(Duration::from_secs(900));
    let now = app.clock.unix_seconds();
    let on = |meta: &Value, channel: &str| Call::new("u-gsr", Some(meta)).channel(channel);
    let locked = with(&m, "parental_state/feature_lock_chat", json!(true));
    let free = with(&m, "subscription_tier", json!("free"));
    let degraded = with(&m, "degraded", json!(true));
    let rows = [
        (
            "still allowed",
            on(&m, "chat:fam-gsr"),
            expire_at(now + 900),
        ),
        ("no ttl", on(&m, "family:fam-gsr"), allowed()),
        ("locked", on(&locked, "chat:fam-gsr"), expired()),
        ("tier dropped", on(&free, "flowcoach:u-gsr"), expired()),
        ("another family", on(&m, "chat:fam-other"), expired()),
        ("degraded", on(&degraded, "chat:fam-gsr"), expired()),
        (
            "degraded on broadcast",
            on(&degraded, "broadcast:news"),
            allowed(),
        ),
        (
            "missing meta",
            Call::new("u-gsr", None).channel("family:fam-gsr"),
            expired(),
        ),
        (
            "user mismatch",
            Call::new("u-other", Some(&m)).channel("family:fam-gsr"),
            expired(),
        ),
    ];
    assert_rows(&app, Kind::SubRefresh, &rows).await;
    assert_counted(
        &app,
        Kind::SubRefresh,
        &[("extended", 3.0), ("bad_context", 2.0)],
    )
    .await;
}

#[tokio::test]
async fn refresh_answers_as_over_http() {
    let app = spawn_app_with(|c| {
        c.set("CONNECTION_REFRESH_TTL_S", "1234")
            .set("FALLBACK_CONNECT_TTL_S", "120");
    })
    .await;
    let m = connect_grpc(&app, &Who::new("u-grf", "fam-grf"), "grpc-refresh-1").await;
    let degraded = connect_grpc(
        &app,
        &Who::new("u-grf2", "fam-grf").degraded(),
        "grpc-refresh-2",
    )
    .await;
    let normal = Call::new("u-grf", Some(&m));
    let degraded = Call::new("u-grf2", Some(&degraded));
    let now = app.clock.unix_seconds();
    let rows = [
        ("normal", normal.clone(), expire_at(now + 1234)),
        ("degraded, identity reachable", degraded.clone(), expired()),
        ("missing meta", Call::new("u-grf", None), expired()),
        ("user mismatch", Call::new("u-other", Some(&m)), expired()),
        (
            "unknown tier",
            Call::new("u-grf", Some(&with(&m, "subscription_tier", json!("gold")))),
            expired(),
        ),
    ];
    assert_rows(&app, Kind::Refresh, &rows).await;

    // identity-service unreachable (a failure streak): degraded connections live on.
    app.identity.fail_with(Code::Unavailable);
    assert_eq!(
        Call::connect("grpc-refresh-down")
            .grpc(&app, Kind::Connect)
            .await,
        unavailable()
    );
    let rows = [
        ("degraded, identity down", degraded, expire_at(now + 120)),
        ("normal, identity down", normal, expire_at(now + 1234)),
    ];
    assert_rows(&app, Kind::Refresh, &rows).await;
    assert_counted(
        &app,
        Kind::Refresh,
        &[
            ("extended", 2.0),
            ("extended_degraded", 1.0),
            ("expired", 1.0),
            ("bad_context", 3.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn rpc_is_routed_and_answered_as_over_http() {
    let rpc = spawn_rpc().await;
    let app = &rpc.app;
    let m = connect_grpc(app, &Who::new("u-grpc", "fam-grpc"), "grpc-rpc-1").await;
    let call = |method: &str| Call::new("u-grpc", Some(&m)).method(method);
    let members = json!({"result":{"data":{"members":["u-a","u-b"],"count":2}}});
    let data = r#"{"family":"fam-grpc","page":[1,2]}"#;
    let rows = [
        ("routed", call("ok.get_members").json(data), members.clone()),
        ("binary data", call("ok").binary(&[0, 1, 2, 255]), members),
        (
            "backend refuses",
            call("refuse.get").json("{}"),
            json!({"error":{"code":404,"message":"no such family"}}),
        ),
        ("backend fails", call("boom.x").json("{}"), rpc_internal()),
        ("backend down", call("down.x"), rpc_internal()),
        (
            "unknown method",
            call("chat.send").json("{}"),
            method_not_found(),
        ),
        ("no method", call(""), method_not_found()),
        (
            "degraded",
            Call::new("u-grpc", Some(&with(&m, "degraded", json!(true)))).method("ok.get"),
            degraded_session(),
        ),
        (
            "missing meta",
            Call::new("u-grpc", None).method("ok.get"),
            permission_denied(),
        ),
    ];
    assert_rows(app, Kind::Rpc, &rows).await;
    // The backend got the same request from both transports, one after the other.
    let calls = rpc.calls();
    let received: Vec<(String, Value)> = calls
        .iter()
        .map(|(path, body)| (path.clone(), serde_json::from_str(body).expect("JSON")))
        .collect();
    assert_eq!(received.len(), 8, "{calls:?}");
    for pair in received.chunks(2) {
        assert_eq!(pair[0], pair[1]);
    }
    assert_eq!(
        received[0],
        (
            "/ok".to_owned(),
            json!({"method":"ok.get_members","user":"u-grpc","data":serde_json::from_str::<Value>(data).expect("JSON"),"context":m})
        )
    );
    assert_eq!(received[2].1["data"], json!("AAEC/w=="));
}

#[tokio::test]
async fn rpc_data_a_protobuf_client_sends_reaches_the_backend_as_base64() {
    let rpc = spawn_rpc().await;
    let m = meta("u-grpc2", "fam-grpc2", "free");
    let mut message = Call::new("u-grpc2", Some(&m))
        .method("ok.get")
        .rpc_message();
    message.protocol = "protobuf".to_owned();
    message.data = vec![0, 1, 2, 255];
    let response = rpc
        .app
        .grpc()
        .rpc(signed(message))
        .await
        .expect("status OK")
        .into_inner();
    assert_eq!(
        response.body(),
        json!({"result":{"data":{"members":["u-a","u-b"],"count":2}}})
    );
    let calls = rpc.calls();
    let received: Value = serde_json::from_str(&calls[0].1).expect("JSON");
    assert_eq!(received["data"], json!("AAEC/w=="), "{received}");
    assert_eq!(received["context"], m);
}
