//! A gRPC connection's life: renewed after `GRPC_PROXY_MAX_CONNECTION_AGE_S` (calls in
//! flight finish in the grace), and an idle connection does not hold shutdown.

use std::time::{Duration, Instant};

use prost::Message as _;
use realtime_service::app::Shutdown;

use crate::fake_identity::Scripted;
use crate::grpc_raw::{framed, grpc_request, h2_connection, preface_only};
use crate::grpc_support::Call;
use crate::helpers::{eventually, spawn_app_with};

#[tokio::test]
async fn after_max_connection_age_the_connection_goes_away_and_its_call_in_flight_finishes() {
    let app = spawn_app_with(|c| {
        c.set("GRPC_PROXY_MAX_CONNECTION_AGE_S", "1")
            .set("GRPC_PROXY_MAX_CONNECTION_AGE_GRACE_S", "10")
            .set("IDENTITY_VALIDATE_DEADLINE_MS", "10000");
    })
    .await;
    app.identity.stall(Duration::from_millis(2500));
    app.identity.add_ticket("age-1", Scripted::success("u-age"));
    let mut sender = h2_connection(&app).await;
    let message = Call::connect("age-1").connect_message().encode_to_vec();
    let (response, mut stream) = sender
        .send_request(grpc_request(&app, "Connect", &[]), false)
        .expect("sent");
    stream.send_data(framed(0, &message), true).expect("body");

    // Past the age (1 s, +-10%) the connection takes no new call...
    eventually("the connection refuses new calls", async || {
        match sender.clone().ready().await {
            Ok(mut ready) => ready
                .send_request(grpc_request(&app, "Refresh", &[]), true)
                .is_err(),
            Err(_) => true,
        }
    })
    .await;
    // ...while the call in flight when it aged is answered in the grace.
    let response = response.await.expect("answered in the grace");
    let (parts, mut body) = response.into_parts();
    assert_eq!(parts.status.as_u16(), 200);
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.expect("trailers").expect("some");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
}

#[tokio::test]
async fn an_idle_connection_that_never_answers_goaway_does_not_hold_shutdown() {
    let mut app = spawn_app_with(|c| {
        c.set("SHUTDOWN_TIMEOUT_MS", "30000")
            .set("SHUTDOWN_DRAIN_DELAY_MS", "0")
            .set("HTTP_HEADER_READ_TIMEOUT_MS", "60000");
    })
    .await;
    // The HTTP/2 preface, then silence: it never answers the PING of a graceful close.
    let _raw = preface_only(&app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let server = app.begin_shutdown(Shutdown::Immediate);
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("shutdown finished")
        .expect("task")
        .expect("clean exit");
    // It closed within its GOAWAY's short grace, not after SHUTDOWN_TIMEOUT_MS.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}
