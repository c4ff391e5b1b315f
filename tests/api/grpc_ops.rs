//! The gRPC listener in operation: its metrics carry `transport="grpc"`, SIGTERM drains it
//! with calls in flight, and a `traceparent` in its metadata reaches identity-service.

use std::time::Duration;

use crate::fake_identity::Scripted;
use realtime_service::app::Shutdown;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::Code;

use crate::grpc_support::{connect_outcome, decisions, one_of_each, signed, Body, Call, Kind};
use crate::helpers::{eventually, spawn_app, spawn_app_with, TestApp, SECRET};
use crate::trace_context::{assert_trace_continued, capture_spans, traceparent};

/// What each call of `one_of_each` decides here (no RPC_ROUTES: the rpc finds no method).
const OUTCOMES: [(Kind, &str); 6] = [
    (Kind::Connect, "accepted"),
    (Kind::Refresh, "extended"),
    (Kind::Subscribe, "allowed"),
    (Kind::SubRefresh, "extended"),
    (Kind::Publish, "allowed"),
    (Kind::Rpc, "method_not_found"),
];

/// Every proxy type's duration count, request count (status 200) and decision count stand
/// at `grpc` over gRPC and `http` over HTTP.
async fn assert_counts(app: &TestApp, grpc: f64, http: f64) {
    for (kind, outcome) in OUTCOMES {
        for (transport, want) in [("grpc", grpc), ("http", http)] {
            let durations = app
                .metric(&format!(
                    "realtime_proxy_request_duration_seconds_count{{proxy=\"{}\",transport=\"{transport}\"}}",
                    kind.route()
                ))
                .await;
            let requests = requests(app, kind, "200", transport).await;
            let decided = match kind {
                Kind::Connect => connect_outcome(app, outcome, transport).await,
                _ => decisions(app, kind, outcome, transport).await,
            };
            assert_eq!(
                (durations, requests, decided),
                (want, want, want),
                "{kind:?} over {transport}"
            );
        }
    }
}

/// `realtime_proxy_requests_total` for `kind` answered `status` over `transport`.
async fn requests(app: &TestApp, kind: Kind, status: &str, transport: &str) -> f64 {
    app.metric(&format!(
        "realtime_proxy_requests_total{{proxy=\"{}\",status=\"{status}\",transport=\"{transport}\"}}",
        kind.route()
    ))
    .await
}

#[tokio::test]
async fn grpc_calls_are_counted_with_the_status_the_same_answer_has_over_http() {
    let app = spawn_app_with(|c| {
        c.set("IDENTITY_VALIDATE_DEADLINE_MS", "10000");
    })
    .await;
    // Refused by authentication: 401, as over HTTP.
    let refused = Call::connect("ops-401")
        .grpc_via(&mut app.grpc(), Kind::Refresh, &["wrong"])
        .await
        .expect("status OK");
    assert_eq!(refused["disconnect"]["code"], 4401, "{refused}");
    assert_eq!(requests(&app, Kind::Refresh, "401", "grpc").await, 1.0);
    // identity-service unavailable: connect's 503, which the 5xx alert reads.
    app.identity.fail_with(Code::Unavailable);
    Call::connect("ops-503").grpc(&app, Kind::Connect).await;
    assert_eq!(requests(&app, Kind::Connect, "503", "grpc").await, 1.0);
    // The call's own deadline expired first: 504.
    app.identity.stall(Duration::from_secs(2));
    app.identity
        .add_ticket("ops-504", Scripted::success("u-ops"));
    let message = prost::Message::encode_to_vec(&Call::connect("ops-504").connect_message());
    let answer = crate::grpc_raw::raw_call(
        &app,
        crate::grpc_raw::grpc_request(&app, "Connect", &[("grpc-timeout", "200m")]),
        crate::grpc_raw::framed(0, &message),
    )
    .await;
    assert_eq!(answer.grpc_status(), "4", "{answer:?}");
    assert_eq!(requests(&app, Kind::Connect, "504", "grpc").await, 1.0);
    // Reset by the client before its answer: 499.
    let before = requests(&app, Kind::Connect, "499", "grpc").await;
    app.identity
        .add_ticket("ops-499", Scripted::success("u-ops"));
    let mut sender = crate::grpc_raw::h2_connection(&app).await;
    let message = prost::Message::encode_to_vec(&Call::connect("ops-499").connect_message());
    let (_response, mut stream) = sender
        .send_request(crate::grpc_raw::grpc_request(&app, "Connect", &[]), false)
        .expect("sent");
    stream
        .send_data(crate::grpc_raw::framed(0, &message), true)
        .expect("body");
    eventually("the call reaches identity-service", async || {
        app.identity.seen().iter().any(|c| c.ticket == "ops-499")
    })
    .await;
    stream.send_reset(h2::Reason::CANCEL);
    eventually("the reset call is counted", async || {
        requests(&app, Kind::Connect, "499", "grpc").await == before + 1.0
    })
    .await;
    // None of it touched the HTTP series.
    assert_eq!(requests(&app, Kind::Connect, "503", "http").await, 0.0);
}

#[tokio::test]
async fn metrics_count_each_call_under_its_transport() {
    let app = spawn_app().await;
    assert_counts(&app, 0.0, 0.0).await;
    app.identity
        .add_ticket("grpc-metrics-1", Scripted::success("u-gmetrics"));
    app.identity
        .add_ticket("grpc-metrics-2", Scripted::success("u-gmetrics"));
    for (kind, call) in one_of_each("grpc-metrics-1", "u-gmetrics") {
        call.grpc(&app, kind).await;
    }
    assert_counts(&app, 1.0, 0.0).await;
    // The same calls over HTTP move the http series only.
    for (kind, call) in one_of_each("grpc-metrics-2", "u-gmetrics") {
        assert_eq!(call.http(&app, kind).await.status, 200, "{kind:?}");
    }
    assert_counts(&app, 1.0, 1.0).await;
}

#[tokio::test]
async fn sigterm_drains_grpc_with_calls_in_flight() {
    let mut app = spawn_app_with(|c| {
        c.set("SHUTDOWN_DRAIN_DELAY_MS", "1000")
            .set("IDENTITY_VALIDATE_DEADLINE_MS", "4000");
    })
    .await;
    app.identity
        .add_ticket("grpc-drain-inflight", Scripted::success("u-gdrain-1"));
    app.identity
        .add_ticket("grpc-drain-new", Scripted::success("u-gdrain-2"));
    // A call that reaches identity-service and waits there, past the drain delay.
    app.identity.stall(Duration::from_millis(2500));
    let mut client = app.grpc();
    let in_flight = tokio::spawn(async move {
        Call::connect("grpc-drain-inflight")
            .grpc_via(&mut client, Kind::Connect, &[SECRET])
            .await
    });
    eventually("the call reached identity-service", async || {
        app.identity.calls() == 1
    })
    .await;
    app.identity.answer_normally();

    let server = app.begin_shutdown(Shutdown::Drain);
    eventually("readyz answers 503", async || {
        app.get("/readyz").await.status == 503
    })
    .await;
    // During the drain delay, new calls on new connections are still answered.
    let answer = Call::connect("grpc-drain-new")
        .grpc(&app, Kind::Connect)
        .await;
    assert_eq!(answer["result"]["user"], json!("u-gdrain-2"), "{answer}");
    assert!(!server.is_finished(), "still serving for the drain delay");

    // Then the listener stops accepting, while the call in flight is still answered.
    eventually("new gRPC connections are refused", async || {
        Call::connect("grpc-drain-late")
            .grpc_via(&mut app.grpc(), Kind::Connect, &[SECRET])
            .await
            .is_err_and(|status| status.code() == Code::Unavailable)
    })
    .await;
    let answer = in_flight
        .await
        .expect("task")
        .expect("the call in flight completes with status OK");
    assert_eq!(answer["result"]["user"], json!("u-gdrain-1"), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops once the call in flight is answered")
        .expect("task")
        .expect("clean exit");
}

#[tokio::test]
async fn traceparent_metadata_reaches_identity_service() {
    let _guard = capture_spans();
    let app = spawn_app().await;
    app.identity
        .add_ticket("grpc-trace-1", Scripted::success("u-gtrace"));
    let mut request = signed(Call::connect("grpc-trace-1").connect_message());
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(traceparent("b7ad6b7169203331")).expect("ascii"),
    );
    let response = app.grpc().connect(request).await.expect("status OK");
    assert_eq!(
        response.into_inner().body()["result"]["user"],
        json!("u-gtrace")
    );
    assert_trace_continued(&app, "b7ad6b7169203331");
}
