//! The outage detector: the degraded window (manual clock), what counts as a failure, the
//! single probing slot while degraded, the background probe, and an identity-service that
//! is black-holed or down at startup.

use std::time::{Duration, Instant};

use crate::fake_identity::{FakeIdentity, Scripted};
use realtime_service::identity::outage::SLOT_SPACING;
use serde_json::{json, Value};
use tonic::Code;

use crate::helpers::{
    eventually, spawn_app_against, spawn_app_with, TestApp, DEADLINE_MS, WINDOW_MS,
};
use crate::replies::{invalid_ticket, unavailable};

/// A probe interval long enough that the background probe never runs during a test, so
/// counts and states change only through requests.
const NO_PROBE: &str = "600000";

async fn outage(app: &TestApp) -> (bool, u64) {
    let health = app.health().await;
    let o = &health["identity_outage"];
    (
        o["degraded"].as_bool().expect("degraded is a bool"),
        o["consecutive_failure_count"]
            .as_u64()
            .expect("count is a number"),
    )
}

async fn pool_size(app: &TestApp) -> u64 {
    app.health().await["fallback_pool"]["size"]
        .as_u64()
        .expect("size")
}

fn is_fallback(response: &crate::helpers::TestResponse) -> bool {
    response.status == 200
        && response.json()["result"]["user"]
            .as_str()
            .is_some_and(|u| u.starts_with("fallback:"))
}

#[tokio::test]
async fn the_pool_opens_only_strictly_after_the_window() {
    let app = spawn_app_with(|c| {
        c.pool(&["out-win-pool-1"]);
    })
    .await;
    app.identity.fail_with(Code::Unavailable);
    app.connect("out-win-first")
        .await
        .assert(503, unavailable());
    // Before the window a pool ticket is not even looked at.
    app.connect("out-win-pool-1")
        .await
        .assert(503, unavailable());
    app.clock.advance(Duration::from_millis(WINDOW_MS - 1));
    app.connect("out-win-pool-1")
        .await
        .assert(503, unavailable());
    // Exactly the window is not past it.
    app.clock.advance(Duration::from_millis(1));
    app.connect("out-win-pool-1")
        .await
        .assert(503, unavailable());
    let (degraded, count) = outage(&app).await;
    assert!(!degraded && count >= 4, "{degraded} {count}");
    assert_eq!(pool_size(&app).await, 1);
    assert_eq!(app.metric("realtime_identity_outage").await, 0.0);

    app.clock.advance(Duration::from_millis(1));
    assert!(outage(&app).await.0, "degraded once past the window");
    assert_eq!(app.health().await["status"], json!("degraded"));
    assert_eq!(app.metric("realtime_identity_outage").await, 1.0);
    let response = app.connect("out-win-pool-1").await;
    assert!(
        is_fallback(&response),
        "{} {}",
        response.status,
        response.text
    );
    assert_eq!(pool_size(&app).await, 0);
}

#[tokio::test]
async fn the_outage_age_counts_from_the_first_failure_of_the_streak() {
    let app = spawn_app_with(|c| {
        c.pool(&["out-age-pool-1"])
            .set("IDENTITY_PROBE_INTERVAL_MS", NO_PROBE);
    })
    .await;
    app.identity.fail_with(Code::Unavailable);
    app.connect("out-age-1").await.assert(503, unavailable());
    app.clock.advance(Duration::from_millis(WINDOW_MS - 100));
    // A later failure in the same streak does not restart the age.
    app.connect("out-age-2").await.assert(503, unavailable());
    app.clock.advance(Duration::from_millis(101));
    assert_eq!(outage(&app).await, (true, 2));
    assert!(is_fallback(&app.connect("out-age-pool-1").await));
}

#[tokio::test]
async fn any_answer_resets_the_streak() {
    let app = spawn_app_with(|c| {
        c.set("IDENTITY_PROBE_INTERVAL_MS", NO_PROBE);
    })
    .await;
    let answers: [(&str, Scripted, u16); 6] = [
        ("out-reset-success", Scripted::success("u-reset"), 200),
        (
            "out-reset-disconnect",
            Scripted::disconnect(4403, "no"),
            401,
        ),
        ("out-reset-notfound", Scripted::Status(Code::NotFound), 401),
        ("out-reset-error", Scripted::error(2, "cannot decide"), 503),
        ("out-reset-internal", Scripted::Status(Code::Internal), 500),
        (
            "out-reset-exhausted",
            Scripted::Status(Code::ResourceExhausted),
            500,
        ),
    ];
    for (i, (ticket, answer, status)) in answers.into_iter().enumerate() {
        app.identity.fail_with(Code::Unavailable);
        app.connect(&format!("out-reset-fail-{i}-a"))
            .await
            .assert(503, unavailable());
        app.connect(&format!("out-reset-fail-{i}-b"))
            .await
            .assert(503, unavailable());
        assert_eq!(outage(&app).await, (false, 2), "{ticket}");
        app.identity.answer_normally();
        app.identity.add_ticket(ticket, answer);
        assert_eq!(app.connect(ticket).await.status, status, "{ticket}");
        assert_eq!(outage(&app).await, (false, 0), "{ticket} ends the streak");
    }
}

#[tokio::test]
async fn an_answer_through_the_slot_ends_a_degraded_outage() {
    let app = spawn_app_with(|c| {
        c.pool(&["out-slotend-pool"])
            .set("IDENTITY_PROBE_INTERVAL_MS", NO_PROBE);
    })
    .await;
    app.identity.fail_with(Code::Unavailable);
    app.connect("out-slotend-1")
        .await
        .assert(503, unavailable());
    app.pass_window();
    assert_eq!(outage(&app).await, (true, 1));
    app.identity.answer_normally();
    // identity-service answers again: the ticket is judged by it, not by the pool.
    app.connect("out-slotend-pool")
        .await
        .assert(401, invalid_ticket());
    assert_eq!(outage(&app).await, (false, 0));
    assert_eq!(pool_size(&app).await, 1);
    assert_eq!(app.health().await["status"], json!("ok"));
}

#[tokio::test]
async fn only_unavailability_counts_as_a_failure() {
    let app = spawn_app_with(|c| {
        c.pool(&["out-flood-pool"]);
    })
    .await;
    for i in 0..20 {
        app.connect(&format!("out-flood-unknown-{i}"))
            .await
            .assert(401, invalid_ticket());
    }
    for (i, code) in [Code::Internal, Code::PermissionDenied, Code::Unknown]
        .into_iter()
        .enumerate()
    {
        let ticket = format!("out-flood-code-{i}");
        app.identity.add_ticket(&ticket, Scripted::Status(code));
        app.connect(&ticket).await;
    }
    app.clock.advance(Duration::from_millis(WINDOW_MS * 10));
    assert_eq!(outage(&app).await, (false, 0));
    // The pool stays closed: identity-service is asked, and refuses.
    app.connect("out-flood-pool")
        .await
        .assert(401, invalid_ticket());
    assert_eq!(pool_size(&app).await, 1);
}

#[tokio::test]
async fn while_degraded_one_request_at_a_time_calls_identity() {
    let pool: Vec<String> = (0..8).map(|i| format!("out-slot-pool-{i}")).collect();
    let mut tickets: Vec<&str> = pool.iter().map(String::as_str).collect();
    tickets.push("out-slot-holder");
    let app = spawn_app_with(|c| {
        c.pool(&tickets).set("IDENTITY_PROBE_INTERVAL_MS", NO_PROBE);
    })
    .await;
    app.identity.fail_with(Code::Unavailable);
    app.connect("out-slot-opener")
        .await
        .assert(503, unavailable());
    app.pass_window();
    // The slot holder's call reaches identity-service and hangs there.
    app.identity.stall(Duration::from_secs(5));
    let calls_before = app.identity.calls();

    let holder = async {
        let started = Instant::now();
        let response = app.connect("out-slot-holder").await;
        (response, started.elapsed())
    };
    let others = async {
        eventually("the slot holder reached identity-service", async || {
            app.identity.calls() == calls_before + 1
        })
        .await;
        let mut answers = vec![];
        for ticket in &pool {
            let started = Instant::now();
            let response = app.connect(ticket).await;
            answers.push((ticket.clone(), response, started.elapsed()));
        }
        let started = Instant::now();
        let miss = app.connect("out-slot-not-in-pool").await;
        answers.push(("out-slot-not-in-pool".into(), miss, started.elapsed()));
        answers
    };
    let ((holder, holder_took), answers) = tokio::join!(holder, others);

    let (last, pooled) = answers.split_last().expect("answers");
    for (ticket, response, took) in pooled {
        assert!(
            is_fallback(response),
            "{ticket}: {} {}",
            response.status,
            response.text
        );
        assert!(
            took < &Duration::from_millis(DEADLINE_MS - 50),
            "{ticket} waited {took:?}"
        );
    }
    last.1.assert(503, unavailable());
    assert!(
        last.2 < Duration::from_millis(DEADLINE_MS - 50),
        "miss waited {:?}",
        last.2
    );
    // Nobody but the slot holder called identity-service.
    assert_eq!(app.identity.calls(), calls_before + 1);
    assert_eq!(
        app.metric(r#"realtime_centrifugo_connect_total{outcome="fallback_pool_miss"}"#)
            .await,
        1.0
    );

    // The holder gave up at the deadline (a failure: still degraded) and fell back to the pool.
    assert!(is_fallback(&holder), "{} {}", holder.status, holder.text);
    assert!(
        holder_took >= Duration::from_millis(DEADLINE_MS - 50),
        "{holder_took:?}"
    );
    let (degraded, _) = outage(&app).await;
    assert!(degraded);

    // After a failed call the slot stays closed for SLOT_SPACING: a request now goes
    // straight to the pool, without a call.
    app.identity.answer_normally();
    app.identity
        .add_ticket("out-slot-after", Scripted::success("u-slot-after"));
    app.connect("out-slot-spaced")
        .await
        .assert(503, unavailable());
    assert_eq!(app.identity.calls(), calls_before + 1);

    // Then it is free again: the next request calls identity-service, whose answer ends it.
    app.clock.advance(SLOT_SPACING);
    let response = app.connect("out-slot-after").await;
    assert_eq!(
        response.json()["result"]["user"],
        json!("u-slot-after"),
        "{}",
        response.text
    );
    assert_eq!(app.identity.calls(), calls_before + 2);
    assert_eq!(outage(&app).await, (false, 0));
}

#[tokio::test]
async fn the_background_probe_sees_recovery_without_traffic() {
    let app = spawn_app_with(|_| {}).await;
    app.identity.stop();
    app.connect("out-probe-stop-1")
        .await
        .assert(503, unavailable());
    // Failed probes extend the streak with no traffic at all.
    eventually("probes count as failures", async || {
        outage(&app).await.1 >= 3
    })
    .await;
    app.identity.restart().await.expect("restart");
    eventually("the probe closes the streak", async || {
        outage(&app).await == (false, 0)
    })
    .await;
}

#[tokio::test]
async fn the_background_probe_ends_a_degraded_outage() {
    let app = spawn_app_with(|c| {
        c.pool(&["out-probe-pool"]);
    })
    .await;
    app.identity.fail_with(Code::Unavailable);
    app.connect("out-probe-fail-1")
        .await
        .assert(503, unavailable());
    app.pass_window();
    assert!(outage(&app).await.0);
    app.identity.answer_normally();
    eventually("the probe ends the outage", async || {
        outage(&app).await == (false, 0)
    })
    .await;
    assert_eq!(app.health().await["status"], json!("ok"));
    // Back to normal: the pool is closed again.
    app.connect("out-probe-pool")
        .await
        .assert(401, invalid_ticket());
    assert_eq!(pool_size(&app).await, 1);
}

#[tokio::test]
async fn probes_send_an_empty_ticket() {
    let app = spawn_app_with(|_| {}).await;
    app.identity.fail_with(Code::Unavailable);
    app.connect("out-probe-empty-1")
        .await
        .assert(503, unavailable());
    eventually("two probes", async || app.identity.calls() >= 3).await;
    let seen = app.identity.seen();
    assert_eq!(seen[0].ticket, "out-probe-empty-1");
    for call in &seen[1..] {
        assert_eq!(
            (
                call.ticket.as_str(),
                call.client_id.as_str(),
                call.transport.as_str()
            ),
            ("", "", ""),
            "{call:?}"
        );
        assert!(call.grpc_timeout.is_some(), "probes carry the deadline too");
    }
}

#[tokio::test]
async fn a_black_holed_identity_answers_a_temporary_503_within_the_deadline() {
    let app = spawn_app_with(|_| {}).await;
    app.identity
        .add_ticket("out-bh-1", Scripted::success("u-bh"));
    assert_eq!(app.connect("out-bh-1").await.status, 200);
    app.identity.blackhole().await.expect("blackhole");
    for ticket in ["out-bh-2", "out-bh-3"] {
        let started = Instant::now();
        app.connect(ticket).await.assert(503, unavailable());
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(DEADLINE_MS + 700),
            "{ticket} took {took:?}"
        );
    }
    assert!(outage(&app).await.1 >= 2);
}

#[tokio::test]
async fn the_service_starts_and_serves_while_identity_is_down() {
    let fake = FakeIdentity::start().await.expect("fake starts");
    fake.stop();
    let app = spawn_app_against(fake, |_| {}).await;
    let health: Value = app.health().await;
    assert_eq!(health["status"], json!("ok"));
    assert_eq!(app.get("/readyz").await.status, 200);
    assert_eq!(app.get("/livez").await.status, 200);
    app.connect("out-down-1").await.assert(503, unavailable());
    // Readiness does not follow identity-service.
    assert_eq!(app.get("/readyz").await.status, 200);

    app.identity.restart().await.expect("restart");
    let mut attempt = 0;
    eventually(
        "connects succeed once identity-service is back",
        async || {
            attempt += 1;
            let ticket = format!("out-down-ok-{attempt}");
            app.identity
                .add_ticket(&ticket, Scripted::success("u-down"));
            app.connect(&ticket).await.status == 200
        },
    )
    .await;
}
