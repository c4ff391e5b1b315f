//! The static fallback pool: load statuses, parsing, the exact fallback answer, single use
//! under concurrency, misses, and when the pool is (not) consulted.

use crate::fake_identity::Scripted;
use realtime_service::transport::http::auth::{sign, SIGNATURE_HEADER};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::helpers::{connect_body, spawn_app, spawn_app_with, TempDir, TestApp, SECRET};
use crate::replies::{invalid_ticket, unavailable};

/// identity-service down and the outage past the window. `opener` is a unique ticket.
async fn degrade(app: &TestApp, opener: &str) {
    app.identity.fail_with(Code::Unavailable);
    app.connect(opener).await.assert(503, unavailable());
    app.pass_window();
    assert_eq!(
        app.health().await["identity_outage"]["degraded"],
        json!(true)
    );
}

pub fn fallback_user(ticket: &str) -> String {
    format!(
        "fallback:{}",
        &hex::encode(Sha256::digest(ticket.as_bytes()))[..12]
    )
}

/// `/health` `fallback_pool`'s size and status (the ledger and reload fields have tests of
/// their own, in `pool_store`).
async fn pool_health(app: &TestApp) -> Value {
    let pool = app.health().await["fallback_pool"].clone();
    json!({"size": pool["size"], "status": pool["status"]})
}

async fn assert_pool_status(app: &TestApp, status: &str, size: u64) {
    assert_eq!(
        pool_health(app).await,
        json!({"size": size, "status": status})
    );
    for s in ["disabled", "loaded", "missing", "unreadable", "empty"] {
        let sample = format!("realtime_fallback_pool_status{{status=\"{s}\"}}");
        assert_eq!(
            app.metric(&sample).await,
            f64::from(u8::from(s == status)),
            "{sample}"
        );
    }
    assert_eq!(app.metric("realtime_fallback_pool_size").await, size as f64);
}

async fn outcome(app: &TestApp, outcome: &str) -> f64 {
    app.metric(&format!(
        "realtime_centrifugo_connect_total{{outcome=\"{outcome}\"}}"
    ))
    .await
}

#[tokio::test]
async fn pool_status_disabled_by_default() {
    let app = spawn_app().await;
    assert_pool_status(&app, "disabled", 0).await;
}

#[tokio::test]
async fn pool_status_loaded() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-st-1", "pool-st-2", "pool-st-3"]);
    })
    .await;
    assert_pool_status(&app, "loaded", 3).await;
}

#[tokio::test]
async fn pool_status_missing() {
    let dir = TempDir::new();
    let path = dir.0.join("no-such-file");
    let app = spawn_app_with(|c| {
        c.set("FALLBACK_TICKETS_PATH", path.display().to_string());
    })
    .await;
    assert_pool_status(&app, "missing", 0).await;
    assert_eq!(app.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn pool_status_unreadable_for_a_path_through_a_file() {
    // A directory is a valid pool (every file in it); a path below a regular file is not
    // readable for anyone (ENOTDIR), root included.
    let dir = TempDir::new();
    let file = dir.0.join("file");
    std::fs::write(&file, "t\n").expect("write");
    let app = spawn_app_with(|c| {
        c.set(
            "FALLBACK_TICKETS_PATH",
            file.join("below").display().to_string(),
        );
    })
    .await;
    assert_pool_status(&app, "unreadable", 0).await;
    assert_eq!(app.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn pool_status_empty_for_blank_lines_only() {
    let app = spawn_app_with(|c| {
        c.pool(&["", "   ", "\t\r", ""]);
    })
    .await;
    assert_pool_status(&app, "empty", 0).await;
}

#[tokio::test]
async fn duplicates_count_once_and_whitespace_is_trimmed() {
    let app = spawn_app_with(|c| {
        c.pool(&[
            "  pool-ws-a  ",
            "pool-ws-b\r",
            "",
            "\tpool-ws-a",
            "pool-ws-c",
            "pool-ws-b",
            " \r",
        ]);
    })
    .await;
    assert_pool_status(&app, "loaded", 3).await;
    degrade(&app, "pool-ws-opener").await;
    for ticket in ["pool-ws-a", "pool-ws-b"] {
        let response = app.connect(ticket).await;
        assert_eq!(response.status, 200, "{ticket}: {}", response.text);
        assert_eq!(
            response.json()["result"]["user"],
            json!(fallback_user(ticket))
        );
    }
    // A duplicated line is still one ticket: its second use misses.
    app.connect("pool-ws-a").await.assert(503, unavailable());
    assert_eq!(pool_health(&app).await["size"], json!(1));
}

#[tokio::test]
async fn the_fallback_answer_has_the_exact_shape() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-shape-1", "pool-shape-2"])
            .set("FALLBACK_CONNECT_TTL_S", "120");
    })
    .await;
    degrade(&app, "pool-shape-opener").await;
    let user = fallback_user("pool-shape-1");
    let expire_at = app.clock.unix_seconds() + 120;
    app.connect("pool-shape-1").await.assert(
        200,
        json!({"result":{
            "user": user,
            "expire_at": expire_at,
            "info": {"degraded": true, "fallback_path": "pool"},
            "meta": {
                "user": user,
                "family_id": "",
                "subscription_tier": "unspecified",
                "is_admin": false,
                "parental_state": {
                    "screen_time_lock": true,
                    "feature_lock_chat": true,
                    "feature_lock_diary": true,
                    "feature_lock_flowcoach": true,
                },
                "degraded": true,
                "fallback_path": "pool",
            },
        }}),
    );
}

#[tokio::test]
async fn fallback_expiry_follows_the_clock_and_the_default_ttl() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-ttl-1", "pool-ttl-2"]);
    })
    .await;
    degrade(&app, "pool-ttl-opener").await;
    let first = app.connect("pool-ttl-1").await;
    assert_eq!(
        first.json()["result"]["expire_at"],
        json!(app.clock.unix_seconds() + 300)
    );
    app.clock.advance(std::time::Duration::from_secs(1000));
    let second = app.connect("pool-ttl-2").await;
    assert_eq!(
        second.json()["result"]["expire_at"],
        json!(app.clock.unix_seconds() + 300)
    );
}

#[tokio::test]
async fn consuming_a_ticket_shrinks_the_pool_and_counts() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-count-1", "pool-count-2", "pool-count-3"]);
    })
    .await;
    degrade(&app, "pool-count-opener").await;
    for (used, ticket) in ["pool-count-1", "pool-count-2"].into_iter().enumerate() {
        let response = app.connect(ticket).await;
        assert_eq!(response.status, 200, "{}", response.text);
        let left = 3 - (used as u64 + 1);
        assert_eq!(app.metric("realtime_fallback_pool_size").await, left as f64);
        assert_eq!(
            pool_health(&app).await,
            json!({"size": left, "status": "loaded"})
        );
        assert_eq!(
            outcome(&app, "fallback_pool_consumed").await,
            used as f64 + 1.0
        );
    }
    // Single use: the same ticket again is refused, counted as reused (not a miss).
    app.connect("pool-count-1").await.assert(503, unavailable());
    assert_eq!(outcome(&app, "fallback_pool_reused").await, 1.0);
    assert_eq!(outcome(&app, "fallback_pool_miss").await, 0.0);
    assert_eq!(outcome(&app, "fallback_pool_consumed").await, 2.0);
}

#[tokio::test]
async fn a_ticket_not_in_the_pool_misses() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-miss-in"]);
    })
    .await;
    degrade(&app, "pool-miss-opener").await;
    app.connect("pool-miss-out")
        .await
        .assert(503, unavailable());
    // Near misses do not match: no trimming or case folding of the request's ticket.
    app.connect("POOL-MISS-IN").await.assert(503, unavailable());
    app.connect(" pool-miss-in")
        .await
        .assert(503, unavailable());
    assert_eq!(outcome(&app, "fallback_pool_miss").await, 3.0);
    assert_eq!(outcome(&app, "fallback_pool_consumed").await, 0.0);
    assert_eq!(pool_health(&app).await["size"], json!(1));
}

#[tokio::test]
async fn one_pool_ticket_used_by_64_concurrent_requests_succeeds_once() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-race-1", "pool-race-other"]);
    })
    .await;
    degrade(&app, "pool-race-opener").await;
    let body = connect_body("pool-race-1");
    let signature = sign(SECRET.as_bytes(), body.as_bytes());
    let url = format!("{}/centrifugo/connect", app.address);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (client, url, body, signature, barrier) = (
            app.client.clone(),
            url.clone(),
            body.clone(),
            signature.clone(),
            barrier.clone(),
        );
        tasks.spawn(async move {
            barrier.wait().await;
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, signature)
                .body(body)
                .send()
                .await
                .expect("request sent");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        });
    }
    let mut ok = 0;
    let mut missed = 0;
    while let Some(result) = tasks.join_next().await {
        let (status, text) = result.expect("task");
        let body: Value = serde_json::from_str(&text).expect("json");
        match status {
            200 => {
                ok += 1;
                assert_eq!(body["result"]["user"], json!(fallback_user("pool-race-1")));
            }
            503 => {
                missed += 1;
                assert_eq!(body, unavailable());
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    assert_eq!((ok, missed), (1, 63));
    assert_eq!(outcome(&app, "fallback_pool_consumed").await, 1.0);
    assert_eq!(outcome(&app, "fallback_pool_reused").await, 63.0);
    assert_eq!(pool_health(&app).await["size"], json!(1));
}

#[tokio::test]
async fn the_pool_is_not_used_before_the_window() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-early-1"]);
    })
    .await;
    app.identity.fail_with(Code::Unavailable);
    for _ in 0..5 {
        app.connect("pool-early-1").await.assert(503, unavailable());
    }
    assert_eq!(outcome(&app, "unavailable").await, 5.0);
    assert_eq!(outcome(&app, "fallback_pool_miss").await, 0.0);
    assert_eq!(outcome(&app, "fallback_pool_consumed").await, 0.0);
    assert_eq!(pool_health(&app).await["size"], json!(1));
}

#[tokio::test]
async fn the_pool_is_not_used_while_identity_answers() {
    let app = spawn_app_with(|c| {
        c.pool(&["pool-up-1", "pool-up-2", "pool-up-3"]);
    })
    .await;
    app.clock.advance(std::time::Duration::from_secs(3600));
    // A pool ticket identity-service knows is judged by identity-service...
    app.identity
        .add_ticket("pool-up-1", Scripted::success("u-pool-up"));
    let response = app.connect("pool-up-1").await;
    assert_eq!(
        response.json()["result"]["user"],
        json!("u-pool-up"),
        "{}",
        response.text
    );
    // ...and one it does not know is refused, like any other.
    app.connect("pool-up-2").await.assert(401, invalid_ticket());
    app.identity
        .add_ticket("pool-up-3", Scripted::error(1, "busy"));
    app.connect("pool-up-3").await.assert(503, unavailable());
    assert_eq!(pool_health(&app).await["size"], json!(3));
    assert_eq!(outcome(&app, "fallback_pool_consumed").await, 0.0);
}

fn log_lines(needle: &str, field: &str) -> usize {
    crate::helpers::captured_logs()
        .lines()
        .filter(|l| l.contains(needle) && l.contains(field))
        .count()
}

#[tokio::test]
async fn the_low_watermark_warns_at_startup_when_strictly_below() {
    let _below = spawn_app_with(|c| {
        c.pool(&["pool-lw-a1", "pool-lw-a2"])
            .set("FALLBACK_LOW_WATERMARK", "4243");
    })
    .await;
    assert_eq!(
        log_lines("starts below its low watermark", "low_watermark=4243"),
        1
    );
    let tickets: Vec<String> = (0..3).map(|i| format!("pool-lw-b{i}")).collect();
    let tickets: Vec<&str> = tickets.iter().map(String::as_str).collect();
    let _at = spawn_app_with(|c| {
        c.pool(&tickets).set("FALLBACK_LOW_WATERMARK", "3");
    })
    .await;
    assert_eq!(
        log_lines("starts below its low watermark", "low_watermark=3"),
        0
    );
}

#[tokio::test]
async fn the_low_watermark_warns_once_when_consumption_crosses_it() {
    let tickets: Vec<String> = (0..6).map(|i| format!("pool-lwx-{i}")).collect();
    let refs: Vec<&str> = tickets.iter().map(String::as_str).collect();
    let app = spawn_app_with(|c| {
        c.pool(&refs).set("FALLBACK_LOW_WATERMARK", "5");
    })
    .await;
    let crossed = || log_lines("fell below its low watermark", "low_watermark=5");
    degrade(&app, "pool-lwx-opener").await;
    assert_eq!(app.connect(&tickets[0]).await.status, 200);
    assert_eq!(crossed(), 0, "5 left: not below 5 yet");
    assert_eq!(app.connect(&tickets[1]).await.status, 200);
    assert_eq!(crossed(), 1, "4 left: crossed below 5");
    for ticket in &tickets[2..] {
        assert_eq!(app.connect(ticket).await.status, 200);
    }
    assert_eq!(crossed(), 1, "warned once");
}
