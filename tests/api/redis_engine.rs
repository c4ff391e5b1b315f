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

/// One degraded replica on `redis` with `FALLBACK_LEDGER_UNAVAILABLE=deny`, a pool of
/// `tickets` and `extra` settings; the directory holding the pool lives as long as it.
pub struct DenyReplica {
    pub service: Service,
    _dir: TempDir,
}

pub async fn deny_replica(
    redis: &Redis,
    test: &str,
    tickets: &[&str],
    extra: &[(&str, &str)],
) -> DenyReplica {
    let dir = TempDir::new();
    let pool = dir.0.join("pool");
    write_pool(&pool, tickets);
    let (url, prefix) = (redis.url(), key_prefix(test));
    let mut env = vec![
        ("FALLBACK_LEDGER", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("FALLBACK_LEDGER_UNAVAILABLE", "deny"),
    ];
    env.extend_from_slice(extra);
    let mut replicas = fleet(1, &pool, &env).await;
    DenyReplica {
        service: replicas.remove(0),
        _dir: dir,
    }
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
    let tickets: Vec<String> = (0..30).map(|n| format!("frozen-{n}")).collect();
    let mut all: Vec<&str> = tickets.iter().map(String::as_str).collect();
    all.push("after-thaw");
    let extra = [("REDIS_TIMEOUT_MS", "300"), ("PUBLISH_BURST", "1000")];
    let replica = deny_replica(&redis, "frozen", &all, &extra).await;
    let r = &replica.service;
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
    let replica = deny_replica(&redis, "restart", &["before-restart", "after-restart"], &[]).await;
    let r = &replica.service;
    assert_eq!(r.connect("before-restart").await, 200);
    redis.stop();
    redis.restart();
    assert_eq!(r.connect("after-restart").await, 200);
    assert_eq!(
        r.metric("realtime_fallback_ledger_errors_total{ledger=\"redis\",op=\"claim\"}")
            .await,
        0.0
    );
}

/// `redis-cli` against a test's Redis, as its administrator.
fn redis_cli(redis: &Redis, password: &str, args: &[&str]) {
    let status = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--no-auth-warning",
            "-a",
            password,
        ])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("redis-cli runs (apt-get install redis-tools)");
    assert!(status.success(), "redis-cli {args:?}");
}

/// `check-config` says what is wrong with Redis and which variable to fix: a refused
/// password and a missing permission are configuration errors (exit 2), a closed port is an
/// outage the service starts through (exit 0). No password appears in the output.
#[test]
fn check_config_tells_a_refused_password_from_a_missing_permission_from_an_unreachable_redis() {
    let redis = Redis::start_with(Some("admin-pw-5521"));
    // A user that may run everything but EVALSHA: the shared limit would silently become
    // per replica.
    redis_cli(
        &redis,
        "admin-pw-5521",
        &[
            "ACL",
            "SETUSER",
            "limited",
            "on",
            ">limited-pw-8812",
            "~*",
            "+@all",
            "-evalsha",
        ],
    );
    let dir = TempDir::new();
    let pw_file = dir.0.join("redis-password");
    std::fs::write(&pw_file, "bad-file-pw-3390\n").expect("write");
    let pw_file = pw_file.display().to_string();
    let port = redis.port;
    let bad_url = format!("redis://:bad-url-pw-4417@127.0.0.1:{port}");
    let plain_url = format!("redis://127.0.0.1:{port}");
    let limited_url = format!("redis://limited:limited-pw-8812@127.0.0.1:{port}");
    let closed_url = format!("redis://127.0.0.1:{}", crate::process::free_port());
    let cases: [(&str, Option<&str>, i32, &str); 4] = [
        (
            &bad_url,
            None,
            2,
            "REDIS_URL: Redis refused the authentication",
        ),
        (
            &plain_url,
            Some(&pw_file),
            2,
            "REDIS_PASSWORD_FILE: Redis refused the authentication",
        ),
        (
            &limited_url,
            None,
            2,
            "REDIS_URL: the Redis user lacks a permission the service needs: EVALSHA",
        ),
        (&closed_url, None, 0, "REDIS_URL: Redis is unreachable"),
    ];
    for (url, password_file, code, says) in cases {
        let mut env = vec![
            ("CENTRIFUGO_PROXY_SECRET", SECRET),
            ("FALLBACK_LEDGER", "redis"),
            ("REDIS_URL", url),
        ];
        if let Some(file) = password_file {
            env.push(("REDIS_PASSWORD_FILE", file));
        }
        let output = crate::config::check_config(&env);
        let all = crate::config::text(&output.stdout) + &crate::config::text(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{all}");
        assert!(all.contains(says), "no {says:?} in:\n{all}");
        for secret in ["bad-url-pw-4417", "bad-file-pw-3390", "limited-pw-8812"] {
            assert!(!all.contains(secret), "{secret} leaked:\n{all}");
        }
    }
}

/// `serve` with a password Redis refuses exits 2 at once, naming the variable, instead of
/// starting and claiming locally for ever.
#[tokio::test]
async fn serve_exits_2_when_redis_refuses_the_password() {
    let redis = Redis::start_with(Some("right-pw-1188"));
    let url = format!("redis://:wrong-pw-2277@127.0.0.1:{}", redis.port);
    let prefix = key_prefix("refused");
    let env = [
        ("FALLBACK_LEDGER", "redis"),
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    let mut service = Service::spawn_only("", &env);
    assert_eq!(
        service.exit_code(std::time::Duration::from_secs(20)).await,
        Some(2)
    );
    let log = service.log();
    assert!(
        log.contains("REDIS_URL: Redis refused the authentication"),
        "{log}"
    );
    assert!(!log.contains("wrong-pw-2277"), "{log}");
}
