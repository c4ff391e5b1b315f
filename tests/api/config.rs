//! Configuration invariants, through `Settings::from_pairs`, `Application::build` and the
//! real binary's `check-config`.

use std::process::{Command, Output};

use realtime_service::app::{Application, StartupError};
use realtime_service::config::{Config, Settings};

const BINARY: &str = env!("CARGO_BIN_EXE_realtime-service");
const CONFIG_SECRET: &str = "cfg-secret-value-9d2e";
const CONFIG_PREVIOUS: &str = "cfg-previous-value-41b7";

fn pairs(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs = vec![
        (
            "CENTRIFUGO_PROXY_SECRET".to_owned(),
            CONFIG_SECRET.to_owned(),
        ),
        ("LISTEN_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("LISTEN_PORT".to_owned(), "0".to_owned()),
    ];
    for (k, v) in extra {
        pairs.retain(|(key, _)| key != k);
        pairs.push(((*k).to_owned(), (*v).to_owned()));
    }
    pairs
}

#[track_caller]
fn rejected(extra: &[(&str, &str)]) -> String {
    match Config::from_pairs(pairs(extra)) {
        Ok(_) => panic!("accepted: {extra:?}"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn accepted(extra: &[(&str, &str)]) -> Settings {
    let settings =
        Settings::from_pairs(pairs(extra)).unwrap_or_else(|e| panic!("rejected {extra:?}: {e}"));
    Config::from_settings(&settings).unwrap_or_else(|e| panic!("rejected {extra:?}: {e}"));
    settings
}

const POOL: (&str, &str) = ("FALLBACK_TICKETS_PATH", "/var/run/secrets/tickets");

#[test]
fn a_zero_window_is_rejected_when_the_pool_is_enabled() {
    let err = rejected(&[POOL, ("FALLBACK_DEGRADED_WINDOW_MS", "0")]);
    assert!(err.starts_with("FALLBACK_DEGRADED_WINDOW_MS:"), "{err}");
}

#[test]
fn a_window_shorter_than_the_deadline_is_rejected_when_the_pool_is_enabled() {
    let err = rejected(&[
        POOL,
        ("FALLBACK_DEGRADED_WINDOW_MS", "999"),
        ("IDENTITY_VALIDATE_DEADLINE_MS", "1000"),
    ]);
    assert!(err.starts_with("FALLBACK_DEGRADED_WINDOW_MS:"), "{err}");
    assert!(err.contains("IDENTITY_VALIDATE_DEADLINE_MS"), "{err}");
    // With the default deadline (2500 ms).
    let err = rejected(&[POOL, ("FALLBACK_DEGRADED_WINDOW_MS", "2499")]);
    assert!(err.contains("IDENTITY_VALIDATE_DEADLINE_MS"), "{err}");
    accepted(&[
        POOL,
        ("FALLBACK_DEGRADED_WINDOW_MS", "1000"),
        ("IDENTITY_VALIDATE_DEADLINE_MS", "1000"),
    ]);
}

#[test]
fn a_ttl_outside_60_to_3600_is_rejected_when_the_pool_is_enabled() {
    for ttl in ["0", "59", "3601", "86400"] {
        let err = rejected(&[POOL, ("FALLBACK_CONNECT_TTL_S", ttl)]);
        assert!(err.starts_with("FALLBACK_CONNECT_TTL_S:"), "{ttl}: {err}");
    }
    for ttl in ["60", "300", "3600"] {
        assert_eq!(
            accepted(&[POOL, ("FALLBACK_CONNECT_TTL_S", ttl)])
                .fallback_connect_ttl_s
                .to_string(),
            ttl
        );
    }
}

#[test]
fn pool_invariants_do_not_apply_without_a_pool() {
    accepted(&[
        ("FALLBACK_DEGRADED_WINDOW_MS", "0"),
        ("FALLBACK_CONNECT_TTL_S", "1"),
    ]);
    accepted(&[
        ("FALLBACK_DEGRADED_WINDOW_MS", "10"),
        ("IDENTITY_VALIDATE_DEADLINE_MS", "5000"),
        ("FALLBACK_CONNECT_TTL_S", "99999"),
    ]);
    // A blank path is no pool either.
    accepted(&[
        ("FALLBACK_TICKETS_PATH", "  "),
        ("FALLBACK_DEGRADED_WINDOW_MS", "0"),
    ]);
}

#[test]
fn the_secret_is_required_unless_auth_is_none() {
    for mode in ["hmac", "static_header"] {
        for secret in [None, Some("")] {
            let mut env = vec![("CENTRIFUGO_PROXY_AUTH".to_owned(), mode.to_owned())];
            if let Some(s) = secret {
                env.push(("CENTRIFUGO_PROXY_SECRET".to_owned(), s.to_owned()));
            }
            let err = Config::from_pairs(env)
                .expect_err("secret required")
                .to_string();
            assert!(
                err.starts_with("CENTRIFUGO_PROXY_SECRET:"),
                "{mode} {secret:?}: {err}"
            );
        }
    }
    // Default mode is hmac.
    let err = Config::from_pairs(Vec::<(String, String)>::new())
        .expect_err("secret required")
        .to_string();
    assert!(err.starts_with("CENTRIFUGO_PROXY_SECRET:"), "{err}");
    Config::from_pairs([("CENTRIFUGO_PROXY_AUTH", "none")]).expect("none needs no secret");
}

#[test]
fn static_header_secrets_must_be_sendable_as_a_header() {
    for (var, value) in [
        ("CENTRIFUGO_PROXY_SECRET", "has a space in it"),
        ("CENTRIFUGO_PROXY_SECRET", "tab\there-tab-there"),
        ("CENTRIFUGO_PROXY_SECRET", "caf\u{e9}-caf\u{e9}-caf\u{e9}-x"),
        ("CENTRIFUGO_PROXY_SECRET_PREVIOUS", "old one, old one!"),
    ] {
        let err = rejected(&[("CENTRIFUGO_PROXY_AUTH", "static_header"), (var, value)]);
        assert!(err.starts_with(&format!("{var}:")), "{value:?}: {err}");
        assert!(!err.contains(value), "the secret is not echoed: {err}");
    }
    // Any bytes make an HMAC key.
    accepted(&[("CENTRIFUGO_PROXY_SECRET", "has a space in it")]);
}

#[tokio::test]
async fn application_build_enforces_the_invariants() {
    let valid = accepted(&[POOL]);
    type Breaks = fn(&mut Settings);
    let cases: [(&str, Breaks); 5] = [
        ("FALLBACK_DEGRADED_WINDOW_MS", |s| {
            s.fallback_degraded_window_ms = 0
        }),
        ("FALLBACK_DEGRADED_WINDOW_MS", |s| {
            s.fallback_degraded_window_ms = s.identity_validate_deadline_ms - 1
        }),
        ("FALLBACK_CONNECT_TTL_S", |s| s.fallback_connect_ttl_s = 59),
        ("FALLBACK_CONNECT_TTL_S", |s| {
            s.fallback_connect_ttl_s = 3601
        }),
        ("CENTRIFUGO_PROXY_SECRET", |s| {
            s.centrifugo_proxy_secret = None
        }),
    ];
    for (var, break_it) in cases {
        let mut settings = valid.clone();
        break_it(&mut settings);
        match Application::build(&settings).await {
            Err(StartupError::Config(e)) => {
                let text = e.to_string();
                assert!(text.starts_with(&format!("{var}:")), "{text}");
            }
            Err(e) => panic!("{var}: unexpected error {e}"),
            Ok(_) => panic!("{var}: built"),
        }
    }
    // The same invariants do not apply without a pool.
    let mut no_pool = accepted(&[]);
    no_pool.fallback_degraded_window_ms = 0;
    no_pool.fallback_connect_ttl_s = 1;
    Application::build(&no_pool)
        .await
        .expect("builds without a pool");
    // A pool file that does not exist is a status, not a startup failure.
    Application::build(&valid)
        .await
        .expect("builds with a missing pool file");
}

pub fn check_config(env: &[(&str, &str)]) -> Output {
    Command::new(BINARY)
        .arg("check-config")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("binary runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_config_exits_2_naming_the_variable() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "CENTRIFUGO_PROXY_SECRET"),
        (
            &[
                ("CENTRIFUGO_PROXY_SECRET", CONFIG_SECRET),
                ("LISTEN_PORT", "nine"),
            ],
            "LISTEN_PORT",
        ),
        (
            &[
                ("CENTRIFUGO_PROXY_SECRET", CONFIG_SECRET),
                ("CENTRIFUGO_PROXY_AUTH", "basic"),
            ],
            "CENTRIFUGO_PROXY_AUTH",
        ),
        (
            &[
                ("CENTRIFUGO_PROXY_SECRET", CONFIG_SECRET),
                POOL,
                ("FALLBACK_CONNECT_TTL_S", "5"),
            ],
            "FALLBACK_CONNECT_TTL_S",
        ),
        (
            &[
                ("CENTRIFUGO_PROXY_SECRET", CONFIG_SECRET),
                POOL,
                ("FALLBACK_DEGRADED_WINDOW_MS", "100"),
            ],
            "FALLBACK_DEGRADED_WINDOW_MS",
        ),
    ];
    for (env, var) in cases {
        let output = check_config(env);
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert_eq!(output.status.code(), Some(2), "{var}: {stdout}{stderr}");
        assert!(stderr.contains(var), "{var} not named: {stderr}");
        assert!(
            !stderr.contains(CONFIG_SECRET) && !stdout.contains(CONFIG_SECRET),
            "{stderr}"
        );
    }
}

#[test]
fn check_config_prints_redacted_settings() {
    let output = check_config(&[
        ("CENTRIFUGO_PROXY_SECRET", CONFIG_SECRET),
        ("CENTRIFUGO_PROXY_SECRET_PREVIOUS", CONFIG_PREVIOUS),
        POOL,
        ("FALLBACK_CONNECT_TTL_S", "120"),
        ("LISTEN_PORT", "9999"),
    ]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    for line in [
        "CENTRIFUGO_PROXY_AUTH=hmac",
        "CENTRIFUGO_PROXY_SECRET=<redacted>",
        "CENTRIFUGO_PROXY_SECRET_PREVIOUS=<redacted>",
        "FALLBACK_CONNECT_TTL_S=120",
        "LISTEN_PORT=9999",
        "FALLBACK_TICKETS_PATH=/var/run/secrets/tickets",
        "FALLBACK_DEGRADED_WINDOW_MS=5000",
        "IDENTITY_VALIDATE_DEADLINE_MS=2500",
        "PROXY_MAX_BODY_BYTES=65536",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
    for secret in [CONFIG_SECRET, CONFIG_PREVIOUS] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked:\n{stdout}{stderr}"
        );
    }
}

#[test]
fn check_config_reports_the_pool_file_it_would_load() {
    let dir = crate::helpers::TempDir::new();
    let file = dir.0.join("tickets");
    std::fs::write(&file, "cfg-pool-1\ncfg-pool-2\n\ncfg-pool-1\n").expect("write pool");
    let path = file.display().to_string();
    let cases = [
        (path.as_str(), "# fallback pool: loaded (2 tickets)"),
        (
            "/var/run/definitely/missing",
            "# fallback pool: missing (0 tickets)",
        ),
        ("", "# fallback pool: disabled (0 tickets)"),
    ];
    for (pool_path, line) in cases {
        let output = check_config(&[
            ("CENTRIFUGO_PROXY_AUTH", "none"),
            ("FALLBACK_TICKETS_PATH", pool_path),
        ]);
        let stdout = text(&output.stdout);
        // A missing pool is reported, not refused: the service must start without it.
        assert_eq!(output.status.code(), Some(0), "{stdout}");
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
        assert!(
            !stdout.contains("cfg-pool-1"),
            "a ticket was printed:\n{stdout}"
        );
    }
}

#[test]
fn check_config_names_every_ledger_problem_in_one_run() {
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Env, &[&str]); 2] = [
        (
            &[
                ("FALLBACK_LEDGER", "redis"),
                ("FALLBACK_LEDGER_TTL_S", "3600"),
                ("FALLBACK_RELOAD_INTERVAL_S", "soon"),
            ],
            &[
                "REDIS_URL",
                "FALLBACK_LEDGER_TTL_S",
                "shorter than a day",
                "FALLBACK_RELOAD_INTERVAL_S",
            ],
        ),
        (
            &[
                ("FALLBACK_LEDGER", "file"),
                ("FALLBACK_LEDGER_UNAVAILABLE", "maybe"),
            ],
            &["FALLBACK_LEDGER_PATH", "FALLBACK_LEDGER_UNAVAILABLE"],
        ),
    ];
    for (env, named) in cases {
        let mut all = vec![("CENTRIFUGO_PROXY_SECRET", CONFIG_SECRET), POOL];
        all.extend_from_slice(env);
        let output = check_config(&all);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        for var in named {
            assert!(stderr.contains(var), "{var} not named:\n{stderr}");
        }
    }
}

#[test]
fn check_config_says_whether_redis_answered_without_failing_when_it_does_not() {
    let redis = crate::process::Redis::start();
    let closed = format!("redis://127.0.0.1:{}", crate::process::free_port());
    for (url, line) in [
        (redis.url(), "answered every command the service uses"),
        (closed, "unreachable (REDIS_URL: Redis is unreachable"),
    ] {
        let output = check_config(&[
            ("CENTRIFUGO_PROXY_SECRET", CONFIG_SECRET),
            POOL,
            ("FALLBACK_LEDGER", "redis"),
            ("REDIS_URL", &url),
        ]);
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{stdout}");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("# redis: ") && l.contains(line)),
            "no {line:?} in:\n{stdout}"
        );
        assert!(stdout.contains("# fallback ledger: redis"), "{stdout}");
    }
    // The test's Redis runs without persistence: check-config says what that costs.
    let output = check_config(&[
        ("CENTRIFUGO_PROXY_SECRET", CONFIG_SECRET),
        POOL,
        ("FALLBACK_LEDGER", "redis"),
        ("REDIS_URL", &redis.url()),
    ]);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("has no persistence"), "{stdout}");
}
