//! gRPC `Connect` through the outage detector and the fallback pool: the degraded window,
//! single use under 64 concurrent gRPC calls, and one pool ticket raced over HTTP and gRPC
//! at once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tonic::Code;

use crate::grpc_support::{connect_outcome, Call, Kind};
use crate::helpers::{spawn_app_with, TestApp, SECRET, WINDOW_MS};
use crate::pool::fallback_user;
use crate::proxies_support::open_outage;
use crate::replies::unavailable;

async fn pool_size(app: &TestApp) -> Value {
    app.health().await["fallback_pool"]["size"].clone()
}

#[tokio::test]
async fn the_pool_answers_grpc_only_strictly_after_the_window() {
    let app = spawn_app_with(|c| {
        c.pool(&["grpc-win-pool-1", "grpc-win-pool-2"]);
    })
    .await;
    let connect = async |ticket: &str| Call::connect(ticket).grpc(&app, Kind::Connect).await;
    app.identity.fail_with(Code::Unavailable);
    assert_eq!(connect("grpc-win-first").await, unavailable());
    // Before the window, and at exactly the window, a pool ticket is not looked at.
    assert_eq!(connect("grpc-win-pool-1").await, unavailable());
    app.clock.advance(Duration::from_millis(WINDOW_MS));
    assert_eq!(connect("grpc-win-pool-1").await, unavailable());
    assert_eq!(pool_size(&app).await, json!(2));
    assert_eq!(
        connect_outcome(&app, "fallback_pool_miss", "grpc").await,
        0.0
    );

    app.clock.advance(Duration::from_millis(1));
    let grpc = connect("grpc-win-pool-1").await;
    // The fallback answer is the one HTTP gives a pool ticket, for this ticket's user.
    let http = app.connect("grpc-win-pool-2").await;
    assert_eq!(http.status, 200, "{}", http.text);
    let mut want = http.json();
    let user = json!(fallback_user("grpc-win-pool-1"));
    want["result"]["user"] = user.clone();
    want["result"]["meta"]["user"] = user;
    assert_eq!(grpc, want);
    assert_eq!(grpc["result"]["meta"]["degraded"], json!(true), "{grpc}");
    assert_eq!(
        grpc["result"]["info"]["fallback_path"],
        json!("pool"),
        "{grpc}"
    );
    assert_eq!(
        connect_outcome(&app, "fallback_pool_consumed", "grpc").await,
        1.0
    );
    // Single use: the same ticket again is refused, counted as reused.
    assert_eq!(connect("grpc-win-pool-1").await, unavailable());
    assert_eq!(
        connect_outcome(&app, "fallback_pool_reused", "grpc").await,
        1.0
    );
    assert_eq!(pool_size(&app).await, json!(0));
}

/// `grpc` gRPC and `http` HTTP connects with one `ticket`, released together; the answers.
async fn race(app: &Arc<TestApp>, ticket: &str, grpc: usize, http: usize) -> Vec<Value> {
    let barrier = Arc::new(Barrier::new(grpc + http));
    let client = app.grpc();
    let mut tasks = JoinSet::new();
    for i in 0..grpc + http {
        let (app, barrier, mut client) = (app.clone(), barrier.clone(), client.clone());
        let call = Call::connect(ticket);
        tasks.spawn(async move {
            barrier.wait().await;
            if i < grpc {
                call.grpc_via(&mut client, Kind::Connect, &[SECRET])
                    .await
                    .expect("status OK")
            } else {
                call.http(&app, Kind::Connect).await.json()
            }
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.expect("task"));
    }
    answers
}

/// Exactly one answer admits the pool ticket's user; every other one is the temporary 503 miss.
#[track_caller]
fn assert_one_success(answers: &[Value], ticket: &str) {
    let (admitted, refused): (Vec<&Value>, Vec<&Value>) = answers
        .iter()
        .partition(|a| a["result"]["user"] == json!(fallback_user(ticket)));
    assert_eq!(admitted.len(), 1, "{answers:?}");
    assert!(refused.iter().all(|a| **a == unavailable()), "{refused:?}");
}

/// Pool misses and consumptions, summed over both transports.
async fn pool_outcomes(app: &TestApp) -> (f64, f64) {
    let mut consumed = 0.0;
    let mut missed = 0.0;
    for transport in ["grpc", "http"] {
        consumed += connect_outcome(app, "fallback_pool_consumed", transport).await;
        missed += connect_outcome(app, "fallback_pool_reused", transport).await;
    }
    (consumed, missed)
}

/// A pool of `<tag>-1` and `<tag>-other`, identity-service down past the window, and
/// `<tag>-1` raced by `grpc` gRPC and `http` HTTP connects: exactly one is admitted, and
/// the other ticket is left.
async fn race_one_ticket(tag: &str, grpc: usize, http: usize) -> Arc<TestApp> {
    let ticket = format!("{tag}-1");
    let app = Arc::new(
        spawn_app_with(|c| {
            c.pool(&[&ticket, &format!("{tag}-other")]);
        })
        .await,
    );
    open_outage(&app, &format!("{tag}-opener")).await;
    let answers = race(&app, &ticket, grpc, http).await;
    assert_eq!(answers.len(), grpc + http);
    assert_one_success(&answers, &ticket);
    assert_eq!(pool_outcomes(&app).await, (1.0, (grpc + http - 1) as f64));
    assert_eq!(pool_size(&app).await, json!(1));
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_pool_ticket_in_64_concurrent_grpc_calls_succeeds_once() {
    let app = race_one_ticket("grpc-race", 64, 0).await;
    assert_eq!(
        connect_outcome(&app, "fallback_pool_reused", "grpc").await,
        63.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_pool_ticket_raced_over_http_and_grpc_succeeds_once() {
    race_one_ticket("grpc-mixed", 32, 32).await;
}
