//! `CHANNEL_POLICY_PATH`: a valid TOML or JSON policy replaces the built-in one and changes
//! the decisions; an invalid one stops startup (`Application::build`, and the real binary
//! with exit code 2) with a message that names the variable and the offending rule.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use realtime_service::app::Application;
use realtime_service::config::Settings;
use serde_json::json;

use crate::helpers::{spawn_app_with, TempDir};
use crate::proxies_support::{
    allowed, expire_at, meta, object_of_len, on_channel, permission_denied, publish_raw, too_large,
    with,
};

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.0.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GAMES_TOML: &str = r#"
# A policy that only knows two namespaces.
[namespaces.games]
owner = "user"
subscribe = true
publish = true
publish_max_bytes = 64
publish_require_object = false
closed_by = ["screen_time_lock"]
subscription_ttl_s = 60

[namespaces.status]
owner = "none"
subscribe = true
publish = false
allow_degraded = true
"#;

#[tokio::test]
async fn a_toml_policy_file_replaces_the_builtin_policy() {
    let dir = TempDir::new();
    let path = write(&dir, "policy.toml", GAMES_TOML);
    let app = spawn_app_with(|c| {
        c.set("CHANNEL_POLICY_PATH", path.display().to_string());
    })
    .await;
    let m = meta("u-pf1", "fam-pf1", "free");
    let sub = |channel: &str, meta: &serde_json::Value| on_channel("u-pf1", Some(meta), channel);
    let now = app.clock.unix_seconds();
    app.post_signed("subscribe", &sub("games:u-pf1", &m))
        .await
        .assert(200, expire_at(now + 60));
    app.post_signed("subscribe", &sub("games:u-other", &m))
        .await
        .assert(200, permission_denied());
    let locked = with(&m, "parental_state/screen_time_lock", json!(true));
    app.post_signed("subscribe", &sub("games:u-pf1", &locked))
        .await
        .assert(200, permission_denied());
    // The built-in namespaces are gone.
    for channel in ["chat:fam-pf1", "family:fam-pf1", "broadcast:news"] {
        app.post_signed("subscribe", &sub(channel, &m))
            .await
            .assert(200, permission_denied());
    }
    // Degraded connections may use `status` only.
    let degraded = with(&m, "degraded", json!(true));
    app.post_signed("subscribe", &sub("status:x", &degraded))
        .await
        .assert(200, allowed());
    app.post_signed("subscribe", &sub("games:u-pf1", &degraded))
        .await
        .assert(200, permission_denied());

    // Publish: any JSON value (no object required), at most 64 bytes.
    let publish = |payload: &str| publish_raw("u-pf1", &m, "games:u-pf1", payload);
    app.post_signed("publish", &publish("[1,2,3]"))
        .await
        .assert(200, allowed());
    app.post_signed("publish", &publish(&object_of_len(64)))
        .await
        .assert(200, allowed());
    app.post_signed("publish", &publish(&object_of_len(65)))
        .await
        .assert(200, too_large());
}

#[tokio::test]
async fn a_json_policy_file_replaces_the_builtin_policy() {
    let dir = TempDir::new();
    let path = write(
        &dir,
        "policy.json",
        &json!({"namespaces": {
            "room": {"owner": "family", "subscribe": false, "publish": true,
                     "publish_max_bytes": 10, "publish_require_object": false},
            "news": {"owner": "none", "subscribe": true, "publish": false,
                     "subscription_ttl_s": 30},
            "secret": {"owner": "none", "require_admin": true, "min_tier": "family",
                       "subscribe": true, "publish": false},
        }})
        .to_string(),
    );
    let app = spawn_app_with(|c| {
        c.set("CHANNEL_POLICY_PATH", path.display().to_string());
    })
    .await;
    let m = meta("u-pf2", "fam-pf2", "pro");
    let now = app.clock.unix_seconds();
    app.post_signed("subscribe", &on_channel("u-pf2", Some(&m), "news:today"))
        .await
        .assert(200, expire_at(now + 30));
    // subscribe = false
    app.post_signed("subscribe", &on_channel("u-pf2", Some(&m), "room:fam-pf2"))
        .await
        .assert(200, permission_denied());
    app.post_signed("publish", &publish_raw("u-pf2", &m, "room:fam-pf2", "[1]"))
        .await
        .assert(200, allowed());
    app.post_signed(
        "publish",
        &publish_raw("u-pf2", &m, "room:fam-pf2", "12345678901"),
    )
    .await
    .assert(200, too_large());
    // admin, then tier: a pro admin is below the family floor; a family admin is in.
    let admin = with(&m, "is_admin", json!(true));
    app.post_signed("subscribe", &on_channel("u-pf2", Some(&admin), "secret:x"))
        .await
        .assert(200, permission_denied());
    let family_admin = with(&admin, "subscription_tier", json!("family"));
    app.post_signed(
        "subscribe",
        &on_channel("u-pf2", Some(&family_admin), "secret:x"),
    )
    .await
    .assert(200, allowed());
    // No chat namespace in this file.
    app.post_signed("subscribe", &on_channel("u-pf2", Some(&m), "chat:fam-pf2"))
        .await
        .assert(200, permission_denied());
}

/// Bad policy files: (file name, text, what the startup error must mention).
fn bad_policies() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        (
            "unknown-field.toml",
            "[namespaces.games]\nowner = \"user\"\nsubscribe = true\npublish = false\nrequires_admin = true\n",
            vec!["requires_admin", "line 5"],
        ),
        (
            "bad-lock.toml",
            "[namespaces.games]\nowner = \"user\"\nsubscribe = true\npublish = false\nclosed_by = [\"feature_lock_games\"]\n",
            vec!["feature_lock_games"],
        ),
        (
            "no-max-bytes.toml",
            "[namespaces.games]\nowner = \"user\"\nsubscribe = true\npublish = true\n",
            vec!["namespace \"games\"", "publish_max_bytes"],
        ),
        (
            "zero-max-bytes.json",
            r#"{"namespaces":{"games":{"owner":"user","subscribe":true,"publish":true,"publish_max_bytes":0}}}"#,
            vec!["namespace \"games\"", "publish_max_bytes"],
        ),
        (
            "ttl-range.toml",
            "[namespaces.games]\nowner = \"user\"\nsubscribe = true\npublish = false\nsubscription_ttl_s = 86401\n",
            vec!["namespace \"games\"", "subscription_ttl_s"],
        ),
        (
            "bad-owner.toml",
            "[namespaces.games]\nowner = \"parent\"\nsubscribe = true\npublish = false\n",
            vec!["parent"],
        ),
        (
            "bad-tier.toml",
            "[namespaces.games]\nowner = \"user\"\nsubscribe = true\npublish = false\nmin_tier = \"gold\"\n",
            vec!["gold"],
        ),
        (
            "bad-name.toml",
            "[namespaces.\"ga:mes\"]\nowner = \"user\"\nsubscribe = true\npublish = false\n",
            vec!["namespace \"ga:mes\"", "name"],
        ),
        (
            "unknown-field.json",
            r#"{"namespaces":{"games":{"owner":"user","subscribe":true,"publish":false,"colour":"red"}}}"#,
            vec!["colour", "JSON"],
        ),
        (
            "twice.json",
            r#"{"namespaces":{"games":{"owner":"user","subscribe":true,"publish":false},"games":{"owner":"none","subscribe":true,"publish":false}}}"#,
            vec!["games", "twice"],
        ),
        ("empty.json", r#"{"namespaces":{}}"#, vec!["no namespaces"]),
        ("not-toml.toml", "this is = = not toml", vec!["TOML"]),
        (
            "policy.yaml",
            "namespaces: {}\n",
            vec!["unsupported file extension"],
        ),
    ]
}

fn settings_with_policy(path: &str) -> Settings {
    Settings::from_pairs([
        ("CENTRIFUGO_PROXY_SECRET", "policy-test-secret-0123"),
        ("LISTEN_HOST", "127.0.0.1"),
        ("LISTEN_PORT", "0"),
        ("CHANNEL_POLICY_PATH", path),
    ])
    .expect("the environment itself is valid")
}

async fn startup_error(path: &str) -> String {
    match Application::build(&settings_with_policy(path)).await {
        Ok(_) => panic!("{path}: the service started with a bad policy"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn invalid_policy_files_stop_startup_naming_the_problem() {
    let dir = TempDir::new();
    for (name, text, mentions) in bad_policies() {
        let path = write(&dir, name, text);
        let shown = path.display().to_string();
        let error = startup_error(&shown).await;
        assert!(
            error.starts_with("CHANNEL_POLICY_PATH: "),
            "{name}: {error}"
        );
        assert!(error.contains(&shown), "{name} names the file: {error}");
        for mention in mentions {
            assert!(
                error.contains(mention),
                "{name} mentions {mention:?}: {error}"
            );
        }
    }
    // A file that does not exist.
    let missing = dir.0.join("nope.toml").display().to_string();
    let error = startup_error(&missing).await;
    assert!(
        error.starts_with("CHANNEL_POLICY_PATH: ") && error.contains(&missing),
        "{error}"
    );
    assert!(error.contains("cannot read the file"), "{error}");
}

/// Runs the real binary's `command` with a clean environment and the given policy; waits for
/// it to exit (at most 10 s) and returns its exit code and stderr.
fn run_with_policy(command: &str, path: &str) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-service"))
        .arg(command)
        .env_clear()
        .env("CENTRIFUGO_PROXY_AUTH", "none")
        .env("LISTEN_HOST", "127.0.0.1")
        .env("LISTEN_PORT", "0")
        .env("CHANNEL_POLICY_PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("realtime-service {command} did not exit with a bad policy file {path}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    (status.code(), stderr)
}

#[test]
fn the_binary_exits_2_on_a_bad_policy_file() {
    let dir = TempDir::new();
    let bad = write(
        &dir,
        "bad.toml",
        "[namespaces.games]\nowner = \"user\"\nsubscribe = true\npublish = true\n",
    );
    // `check-config` validates the policy file too.
    for command in ["serve", "check-config"] {
        let (code, stderr) = run_with_policy(command, &bad.display().to_string());
        assert_eq!(code, Some(2), "{command}: {stderr}");
        for mention in [
            "CHANNEL_POLICY_PATH",
            bad.to_str().unwrap(),
            "namespace \"games\"",
            "publish_max_bytes",
        ] {
            assert!(
                stderr.contains(mention),
                "{command}: stderr mentions {mention:?}: {stderr}"
            );
        }
    }

    let missing = dir.0.join("missing.json").display().to_string();
    let (code, stderr) = run_with_policy("serve", &missing);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("CHANNEL_POLICY_PATH") && stderr.contains(&missing),
        "{stderr}"
    );
}
