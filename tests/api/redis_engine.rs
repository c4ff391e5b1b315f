//! Redis as a dependable engine, against real `redis-server` processes: a Redis that stops
//! answering is decided around at once (one probe at a time asks it) and used again as soon
//! as it answers; a restart costs no claim; an outage is one log line.

use crate::helpers::{TempDir, SECRET};
use crate::pool_fleet::{fleet, write_pool};
use crate::process::{key_prefix, Redis, Service};
use crate::proxies_support::{meta, publish_raw};

/// A publish on the user's own diary channel: its HTTP status.
async fn publish(r: &Service, user: &str) -> u16 {
    let m = meta(user, "fam-engine", "free");
    r.post_signed(
        "publish",
        &publish_raw(user, &m, &format!("diary:{user}"), r#"{"text":"hi"}"#),
    )
    .await
    .0
}

fn lines_with(log: &str, text: &str) -> usize {
    log.lines().filter(|l| l.contains(text)).count()
}

/// A frozen Redis (SIGSTOP: connections open, nothing answered) costs one call's timeout;
/// every connect and publish after it is decided without waiting, the outage is one WARN and
/// no ERROR, and Redis decides again once it answers.
#[tokio::test]
async fn redis_frozen_is_decided_around_at_once_logged_once_and_used_again_when_it_answers() {
    let redis = Redis::start();
    let dir = TempDir::new();
    let pool = dir.0.join("pool");
    let tickets: Vec<String> = (0..30).map(|n| format!("frozen-{n}")).collect();
    let mut all: Vec<&str> = tickets.iter().map(String::as_str).collect();
    all.push("after-thaw");
    write_pool(&pool, &all);
    let (url, prefix) = (redis.url(), key_prefix("frozen"));
    let env = [
        ("FALLBACK_LEDGER", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("FALLBACK_LEDGER_UNAVAILABLE", "deny"),
        ("REDIS_TIMEOUT_MS", "300"),
        ("PUBLISH_BURST", "1000"),
    ];
    let replicas = fleet(1, &pool, &env).await;
    let r = &replicas[0];
    assert_eq!(publish(r, "u-engine").await, 200, "Redis answers at first");

    redis.signal("-STOP");
    for ticket in &tickets {
        assert_eq!(r.connect(ticket).await, 503, "deny refuses while frozen");
    }
    for _ in 0..30 {
        assert_eq!(
            publish(r, "u-engine").await,
            200,
            "the local limiter decides"
        );
    }
    // Sixty calls needed Redis; only the first waited for it (and, at most, one more raced
    // it); the rest were answered by the open breaker.
    let waited = r
        .metric("realtime_redis_errors_total{reason=\"timeout\"}")
        .await;
    assert!((1.0..=2.0).contains(&waited), "{waited} calls waited");
    assert!(r.metric("realtime_redis_fast_failures_total").await >= 58.0);
    assert_eq!(r.metric("realtime_redis_available").await, 0.0);

    redis.signal("-CONT");
    crate::helpers::eventually("Redis decides claims again", async || {
        r.connect("after-thaw").await == 200
    })
    .await;
    assert_eq!(r.metric("realtime_redis_available").await, 1.0);
    // A refused ticket was not consumed: it is accepted now.
    assert_eq!(r.connect(&tickets[0]).await, 200);

    let log = r.log();
    assert_eq!(lines_with(&log, "Redis does not answer"), 1, "{log}");
    assert_eq!(lines_with(&log, "ERROR"), 0, "{log}");
    assert_eq!(lines_with(&log, "Redis answers again"), 1, "{log}");
}

/// Redis restarted between two claims: the connection it dropped is retried on a fresh one,
/// so the next claim is not refused (`deny`) and nothing counts as a failure.
#[tokio::test]
async fn the_first_claim_after_a_redis_restart_is_not_refused() {
    let mut redis = Redis::start();
    let dir = TempDir::new();
    let pool = dir.0.join("pool");
    write_pool(&pool, &["before-restart", "after-restart"]);
    let (url, prefix) = (redis.url(), key_prefix("restart"));
    let env = [
        ("FALLBACK_LEDGER", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("FALLBACK_LEDGER_UNAVAILABLE", "deny"),
    ];
    let replicas = fleet(1, &pool, &env).await;
    let r = &replicas[0];
    assert_eq!(r.connect("before-restart").await, 200);
    redis.stop();
    redis.restart();
    assert_eq!(r.connect("after-restart").await, 200);
    assert_eq!(
        r.metric("realtime_fallback_ledger_errors_total{ledger=\"redis\",op=\"claim\"}")
            .await,
        0.0
    );
    let _ = SECRET;
}
