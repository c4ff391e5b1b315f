//! Issue 8 across replicas: several real service processes sharing one real Redis (a private
//! `redis-server` per test, so it can be stopped), identity-service down (a closed port). Single
//! use holds across replicas, restarts and rotation; a Redis outage falls back as configured and
//! is reconciled; the publish limit is shared; no secret leaks anywhere an operator looks.

use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::{TempDir, SECRET};
use crate::process::{key_prefix, Redis, Service};
use crate::proxies_support::{meta, publish_raw};

/// A degraded window as short as the identity deadline, so a fleet degrades at once.
const QUICK_OUTAGE: [(&str, &str); 2] = [
    ("IDENTITY_VALIDATE_DEADLINE_MS", "50"),
    ("FALLBACK_DEGRADED_WINDOW_MS", "50"),
];

/// Writes the pool file atomically (a rename), so a reload never sees half of it.
pub fn write_pool(path: &Path, tickets: &[&str]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, tickets.join("\n") + "\n").unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `n` replicas with `env` on top of the quick outage, the pool at `pool`, all degraded.
pub async fn fleet(n: usize, pool: &Path, env: &[(&str, &str)]) -> Vec<Service> {
    let pool = pool.display().to_string();
    let mut all: Vec<(&str, &str)> = QUICK_OUTAGE.to_vec();
    all.push(("FALLBACK_TICKETS_PATH", &pool));
    all.extend_from_slice(env);
    let mut replicas = Vec::new();
    for i in 0..n {
        let replica = Service::start("", &all).await;
        replica.degrade(&format!("opener-{i}")).await;
        replicas.push(replica);
    }
    replicas
}

async fn sum(replicas: &[Service], sample: &str) -> f64 {
    let mut total = 0.0;
    for r in replicas {
        total += r.metric(sample).await;
    }
    total
}

async fn reused(replicas: &[Service]) -> f64 {
    sum(
        replicas,
        "realtime_centrifugo_connect_total{outcome=\"fallback_pool_reused\"}",
    )
    .await
}

/// Polls until every replica's `/health` `fallback_pool.generation` differs from `before`.
async fn wait_for_new_generation(replicas: &[Service], before: &Value) {
    for r in replicas {
        crate::helpers::eventually("the pool reloaded", async || {
            r.health_json().await["fallback_pool"]["generation"] != *before
        })
        .await;
    }
}

#[tokio::test]
async fn one_pool_ticket_sent_64_times_to_three_replicas_is_accepted_once_across_restarts_and_rotation(
) {
    let redis = Redis::start();
    let dir = TempDir::new();
    let pool = dir.0.join("pool");
    write_pool(&pool, &["fleet-a", "fleet-b", "fleet-c"]);
    let url = redis.url();
    let prefix = key_prefix("fleet");
    let env = [
        ("FALLBACK_LEDGER", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("FALLBACK_RELOAD_INTERVAL_S", "1"),
    ];
    let mut replicas = fleet(3, &pool, &env).await;
    for r in &replicas {
        let health = r.health_json().await["fallback_pool"].clone();
        assert_eq!(health["ledger"], json!("redis"), "{health}");
        assert_eq!(health["ledger_reachable"], json!(true), "{health}");
    }

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..64 {
        let port = replicas[i % 3].port;
        requests.spawn(async move {
            let body = crate::helpers::connect_body("fleet-a");
            let response = crate::process::client()
                .post(format!("http://127.0.0.1:{port}/centrifugo/connect"))
                .header("content-type", "application/json")
                .header(
                    realtime_service::transport::http::auth::SIGNATURE_HEADER,
                    realtime_service::transport::http::auth::sign(
                        SECRET.as_bytes(),
                        body.as_bytes(),
                    ),
                )
                .body(body)
                .send()
                .await
                .expect("sent");
            response.status().as_u16()
        });
    }
    let statuses = requests.join_all().await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        63,
        "{statuses:?}"
    );
    assert_eq!(reused(&replicas).await, 63.0);

    // Every replica crashes and comes back: the mark is in Redis, not in any process.
    for (i, r) in replicas.iter_mut().enumerate() {
        r.restart().await;
        r.degrade(&format!("opener-again-{i}")).await;
    }
    for r in &replicas {
        assert_eq!(r.connect("fleet-a").await, 503);
    }
    assert_eq!(reused(&replicas).await, 3.0);
    assert_eq!(replicas[1].connect("fleet-b").await, 200);

    // A rotation keeps the consumed tickets in the new set: they stay consumed.
    let before = replicas[0].health_json().await["fallback_pool"]["generation"].clone();
    write_pool(&pool, &["fleet-a", "fleet-b", "fleet-d"]);
    wait_for_new_generation(&replicas, &before).await;
    for r in &replicas {
        assert_eq!(r.connect("fleet-a").await, 503);
        assert_eq!(r.connect("fleet-b").await, 503);
        assert_eq!(r.connect("fleet-c").await, 503, "removed by the rotation");
    }
    assert_eq!(replicas[2].connect("fleet-d").await, 200);
    // Size sees every replica's consumption (at most one reload interval late).
    for r in &replicas {
        crate::helpers::eventually("size counts the fleet's consumption", async || {
            r.health_json().await["fallback_pool"]["size"] == json!(0)
        })
        .await;
    }
}

#[tokio::test]
async fn redis_stopped_mid_outage_local_claims_once_per_process_then_backfills_and_counts_the_conflict(
) {
    let mut redis = Redis::start();
    let dir = TempDir::new();
    let pool = dir.0.join("pool");
    write_pool(&pool, &["local-shared", "local-only-a", "local-after"]);
    let url = redis.url();
    let prefix = key_prefix("local");
    let env = [
        ("FALLBACK_LEDGER", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("FALLBACK_LEDGER_UNAVAILABLE", "local"),
        // A stopped Redis refuses at once; the margin is for a loaded machine, where a claim
        // slower than 100 ms would be made locally and the last assertions would not hold.
        ("REDIS_TIMEOUT_MS", "1000"),
    ];
    let replicas = fleet(2, &pool, &env).await;
    let (a, b) = (&replicas[0], &replicas[1]);

    redis.stop();
    // Once per process: each replica accepts the shared ticket once, on its own.
    assert_eq!(a.connect("local-shared").await, 200);
    assert_eq!(a.connect("local-shared").await, 503);
    assert_eq!(b.connect("local-shared").await, 200);
    assert_eq!(b.connect("local-shared").await, 503);
    assert_eq!(a.connect("local-only-a").await, 200);
    for r in &replicas {
        assert_eq!(
            r.health_json().await["fallback_pool"]["ledger_reachable"],
            json!(false)
        );
        assert!(
            r.metric("realtime_fallback_ledger_local_claims_total")
                .await
                >= 1.0
        );
    }
    assert_eq!(
        sum(&replicas, "realtime_fallback_ledger_conflicts_total").await,
        0.0
    );

    redis.restart();
    // Backfill: the ticket claimed by both is one conflict, seen by the replica that wrote second.
    crate::helpers::eventually("the conflict is counted", async || {
        sum(&replicas, "realtime_fallback_ledger_conflicts_total").await == 1.0
    })
    .await;
    // The claim made only on `a` reached Redis: `b` refuses it now.
    crate::helpers::eventually("the local claim was backfilled", async || {
        b.connect("local-only-a").await == 503
    })
    .await;
    let logs = a.log() + &b.log();
    assert!(logs.contains("WARN"), "{logs}");
    assert_eq!(a.connect("local-after").await, 200);
    assert_eq!(b.connect("local-after").await, 503);
    // Stays one: nothing is counted twice.
    assert_eq!(
        sum(&replicas, "realtime_fallback_ledger_conflicts_total").await,
        1.0
    );
}

#[tokio::test]
async fn redis_stopped_mid_outage_with_deny_answers_503_and_consumes_nothing() {
    let mut redis = Redis::start();
    let replica = crate::redis_engine::deny_replica(&redis, "deny", &["deny-1"], &[]).await;
    let r = &replica.service;
    redis.stop();
    assert_eq!(r.connect("deny-1").await, 503);
    assert_eq!(r.connect("deny-1").await, 503);
    assert!(
        r.metric("realtime_fallback_ledger_errors_total{ledger=\"redis\"}")
            .await
            >= 1.0
    );
    redis.restart();
    crate::helpers::eventually("Redis answers again", async || {
        r.connect("deny-1").await == 200
    })
    .await;
    assert_eq!(r.connect("deny-1").await, 503);
}

/// A publish of a small object on the user's own diary channel; the JSON answer.
async fn publish(r: &Service, user: &str) -> Value {
    let m = meta(user, "fam-rl", "free");
    let (status, body) = r
        .post_signed(
            "publish",
            &publish_raw(user, &m, &format!("diary:{user}"), r#"{"text":"hi"}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn is_limited(answer: &Value) -> bool {
    answer["error"]["code"] == json!(429)
}

#[tokio::test]
async fn a_burst_of_40_is_shared_by_three_replicas_and_per_replica_while_redis_is_down() {
    let mut redis = Redis::start();
    let url = redis.url();
    let prefix = key_prefix("ratelimit");
    let env = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("PUBLISH_BURST", "40"),
        // One token per 1000 s: nothing refills while the test runs.
        ("PUBLISH_RATE_PER_SECOND", "0.001"),
    ];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Service::start("", &env).await);
    }
    for n in 0..40 {
        let answer = publish(&replicas[n % 3], "u-shared").await;
        assert_eq!(answer, json!({"result": {}}), "publish {n}");
    }
    for r in &replicas {
        assert!(is_limited(&publish(r, "u-shared").await), "the 41st");
    }
    assert_eq!(
        sum(&replicas, "realtime_publish_limiter_fallback_total").await,
        0.0
    );

    // Redis down: each replica falls back to its own bucket of 40.
    redis.stop();
    for r in &replicas {
        for n in 0..40 {
            let answer = publish(r, "u-apart").await;
            assert_eq!(answer, json!({"result": {}}), "publish {n}");
        }
        assert!(is_limited(&publish(r, "u-apart").await));
    }
    assert!(sum(&replicas, "realtime_publish_limiter_fallback_total").await >= 120.0);
}

#[tokio::test]
async fn no_ticket_secret_or_redis_password_appears_in_logs_health_metrics_or_check_config() {
    const PASSWORD: &str = "pw-7f3c9e";
    let redis = Redis::start_with(Some(PASSWORD));
    let dir = TempDir::new();
    let pool = dir.0.join("pool");
    let tickets = ["leak-ticket-0a1b2c3d", "leak-ticket-4e5f6a7b"];
    write_pool(&pool, &tickets);
    let url = redis.url();
    assert!(url.contains(PASSWORD));
    let prefix = key_prefix("leak");
    let env = [
        ("FALLBACK_LEDGER", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("LOG_LEVEL", "debug"),
    ];
    let replicas = fleet(1, &pool, &env).await;
    let r = &replicas[0];
    // The password works: the ledger answers, so the test exercises the authenticated path.
    assert_eq!(
        r.health_json().await["fallback_pool"]["ledger_reachable"],
        json!(true)
    );
    assert_eq!(r.connect(tickets[0]).await, 200);
    assert_eq!(r.connect(tickets[0]).await, 503);
    assert_eq!(r.connect("leak-not-in-pool-99").await, 503);
    let (_, health) = r.get("/health").await.unwrap();
    let (_, metrics) = r.get("/metrics").await.unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_realtime-service"));
    command
        .arg("check-config")
        .env_clear()
        .env("CENTRIFUGO_PROXY_AUTH", "hmac")
        .env("CENTRIFUGO_PROXY_SECRET", SECRET)
        .env("FALLBACK_TICKETS_PATH", &pool)
        .envs(env);
    let output = command.output().expect("check-config runs");
    assert!(output.status.success());
    let check = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        check.contains("answered every command the service uses"),
        "{check}"
    );
    for (place, text) in [
        ("log", r.log()),
        ("/health", health),
        ("/metrics", metrics),
        ("check-config", check),
    ] {
        for secret in [
            PASSWORD,
            SECRET,
            tickets[0],
            tickets[1],
            "leak-not-in-pool-99",
        ] {
            assert!(!text.contains(secret), "{secret} in {place}:\n{text}");
        }
    }
}
