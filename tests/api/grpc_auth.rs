//! gRPC authentication (the secret in `x-centrifugo-proxy-secret` metadata) in every method:
//! missing, wrong and malformed secrets get status OK with the 4401 disconnect, counted by
//! reason, with nothing downstream called; the previous secret during a rotation; mode
//! `none`. And the methods the service does not serve answer UNIMPLEMENTED.

use crate::fake_identity::Scripted;
use realtime_service::transport::grpc::proto;
use serde_json::json;
use tonic::codegen::tokio_stream;
use tonic::Code;

use crate::auth::rejections;
use crate::grpc_support::{
    connect_message_of_len, one_of_each, signed, with_secrets, Body, Call, Kind,
};
use crate::helpers::{spawn_app, spawn_app_with, TestApp, SECRET};
use crate::proxies_rpc::{spawn_rpc, spawn_rpc_with};
use crate::replies::{allowed, unauthorized};

/// Each call of `one_of_each` sent with `secrets` answers `want` (with status OK).
async fn assert_every_method(
    app: &TestApp,
    ticket: &str,
    secrets: &[&str],
    want: &serde_json::Value,
) {
    for (kind, call) in one_of_each(ticket, "u-gauth") {
        let answer = call
            .grpc_via(&mut app.grpc(), kind, secrets)
            .await
            .unwrap_or_else(|status| panic!("{kind:?} with {secrets:?}: {status:?}"));
        assert_eq!(&answer, want, "{kind:?} with {secrets:?}");
    }
}

#[tokio::test]
async fn missing_wrong_and_malformed_secrets_are_refused_in_every_method() {
    let rpc = spawn_rpc().await;
    let app = &rpc.app;
    app.identity
        .add_ticket("grpc-auth-1", Scripted::success("u-gauth"));
    let prefix = &SECRET[..SECRET.len() - 1];
    let cases: [(&[&str], &str); 6] = [
        (&[], "missing"),
        (&["not-the-secret"], "mismatch"),
        (&[prefix], "mismatch"),
        (&[""], "malformed"),
        (&["with space"], "malformed"),
        // The key twice, even with the right value twice.
        (&[SECRET, SECRET], "malformed"),
    ];
    for (secrets, _) in &cases {
        assert_every_method(app, "grpc-auth-1", secrets, &unauthorized()).await;
    }
    let methods = Kind::ALL.len() as f64;
    for (reason, count) in [("missing", 1.0), ("mismatch", 2.0), ("malformed", 3.0)] {
        assert_eq!(rejections(app, reason).await, count * methods, "{reason}");
    }
    // Nothing downstream was called, and nothing was decided.
    assert_eq!(app.identity.calls(), 0);
    assert!(rpc.calls().is_empty(), "{:?}", rpc.calls());
    let decided = app
        .metric(r#"realtime_proxy_decisions_total{transport="grpc"}"#)
        .await
        + app
            .metric(r#"realtime_centrifugo_connect_total{transport="grpc"}"#)
            .await;
    assert_eq!(decided, 0.0);
    // The ticket is still unused: with the secret, every method is served.
    let served = one_of_each("grpc-auth-1", "u-gauth");
    for (kind, call) in served {
        let answer = call.grpc(app, kind).await;
        assert!(answer.get("result").is_some(), "{kind:?}: {answer}");
    }
    assert_eq!(rpc.calls().len(), 1);
}

#[tokio::test]
async fn the_secret_is_checked_before_the_size_limit() {
    let app = spawn_app_with(|c| {
        c.set("PROXY_MAX_BODY_BYTES", "1024");
    })
    .await;
    let over = connect_message_of_len("grpc-auth-size", 1500);
    let response = app
        .grpc()
        .connect(with_secrets(over, &["wrong"]))
        .await
        .expect("status OK");
    assert_eq!(response.into_inner().body(), unauthorized());
    assert_eq!(rejections(&app, "mismatch").await, 1.0);
    assert_eq!(
        app.metric(r#"realtime_centrifugo_connect_total{outcome="bad_request"}"#)
            .await,
        0.0
    );
}

#[tokio::test]
async fn the_previous_secret_is_accepted_during_a_rotation() {
    let app = spawn_app_with(|c| {
        c.set(
            "CENTRIFUGO_PROXY_SECRET_PREVIOUS",
            "old-grpc-secret-0123456789",
        );
    })
    .await;
    let subscribe = Call::new("u-grot", Some(&crate::replies::default_meta("u-grot")))
        .channel("broadcast:news");
    for (i, secret) in [SECRET, "old-grpc-secret-0123456789"]
        .into_iter()
        .enumerate()
    {
        let ticket = format!("grpc-rot-{i}");
        app.identity
            .add_ticket(&ticket, Scripted::success("u-grot"));
        let answer = Call::connect(&ticket)
            .grpc_via(&mut app.grpc(), Kind::Connect, &[secret])
            .await
            .expect("status OK");
        assert_eq!(
            answer["result"]["user"],
            json!("u-grot"),
            "{secret}: {answer}"
        );
        let answer = subscribe
            .grpc_via(&mut app.grpc(), Kind::Subscribe, &[secret])
            .await
            .expect("status OK");
        assert_eq!(answer, allowed(), "{secret}");
    }
    for kind in [Kind::Connect, Kind::Subscribe] {
        let answer = subscribe
            .grpc_via(&mut app.grpc(), kind, &["unrelated-secret"])
            .await
            .expect("status OK");
        assert_eq!(answer, unauthorized(), "{kind:?}");
    }
    assert_eq!(rejections(&app, "mismatch").await, 2.0);
    assert_eq!(app.identity.calls(), 2);
}

#[tokio::test]
async fn static_header_mode_takes_the_same_metadata() {
    let app = spawn_app_with(|c| {
        c.set("CENTRIFUGO_PROXY_AUTH", "static_header");
    })
    .await;
    app.identity
        .add_ticket("grpc-static-1", Scripted::success("u-gstatic"));
    let call = Call::connect("grpc-static-1");
    let refused = call
        .grpc_via(&mut app.grpc(), Kind::Connect, &["wrong"])
        .await
        .expect("status OK");
    assert_eq!(refused, unauthorized());
    let answer = call.grpc(&app, Kind::Connect).await;
    assert_eq!(answer["result"]["user"], json!("u-gstatic"), "{answer}");
}

#[tokio::test]
async fn none_mode_accepts_calls_without_metadata() {
    let rpc = spawn_rpc_with(|c| {
        c.set("CENTRIFUGO_PROXY_AUTH", "none");
    })
    .await;
    let app = &rpc.app;
    for (i, secrets) in [&[][..], &["whatever"][..]].into_iter().enumerate() {
        let ticket = format!("grpc-none-{i}");
        app.identity
            .add_ticket(&ticket, Scripted::success("u-gauth"));
        for (kind, call) in one_of_each(&ticket, "u-gauth") {
            let answer = call
                .grpc_via(&mut app.grpc(), kind, secrets)
                .await
                .expect("status OK");
            assert!(answer.get("result").is_some(), "{kind:?}: {answer}");
        }
    }
    for reason in ["missing", "malformed", "mismatch"] {
        assert_eq!(rejections(app, reason).await, 0.0, "{reason}");
    }
}

#[tokio::test]
async fn the_methods_not_served_answer_unimplemented() {
    let app = spawn_app().await;
    let mut client = app.grpc();
    let stream = tokio_stream::iter([proto::StreamSubscribeRequest::default()]);
    // Each method called with an empty message: (method, the answer without its body).
    macro_rules! call {
        ($method:ident, $message:expr) => {
            (
                stringify!($method),
                client.$method(signed($message)).await.map(drop),
            )
        };
    }
    let answers = [
        call!(subscribe_unidirectional, proto::SubscribeRequest::default()),
        call!(subscribe_bidirectional, stream),
        call!(
            notify_cache_empty,
            proto::NotifyCacheEmptyRequest::default()
        ),
        call!(
            notify_channel_state,
            proto::NotifyChannelStateRequest::default()
        ),
        call!(map_publish, proto::MapPublishRequest::default()),
        call!(map_remove, proto::MapRemoveRequest::default()),
        call!(
            shared_poll_refresh,
            proto::SharedPollRefreshRequest::default()
        ),
    ];
    for (method, answer) in answers {
        let status = answer.expect_err(method);
        assert_eq!(status.code(), Code::Unimplemented, "{method}: {status:?}");
    }
    // The served methods answer on the same connection.
    let answer = Call::connect("grpc-unimpl-unknown")
        .grpc_via(&mut client, Kind::Connect, &[SECRET])
        .await
        .expect("status OK");
    assert_eq!(answer, crate::replies::invalid_ticket());
}
