//! The command line, through the real binary: every subcommand answers `--help` without
//! doing its work, refuses an unknown argument with exit 2 and its usage, `check-config`
//! names every bad variable in one run, and `sign` holds its secret to the service's rules.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_realtime-service");
const COMMANDS: [&str; 5] = ["serve", "check-config", "demo", "sign", "healthcheck"];

/// Runs the binary with `args` and only `env` (and `LISTEN_PORT=1`, a port nothing should
/// serve on, in case a command wrongly starts), killed after 20 s. `stdin`: `Some` is written
/// and closed; `None` is a pipe held open and never written (a command that waited on it, or
/// started serving, would not exit).
fn run(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .env_clear()
        .env("LISTEN_PORT", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut pipe = child.stdin.take();
    if let (Some(body), Some(mut open)) = (stdin, pipe.take()) {
        // A command that refuses early exits before reading: the pipe may be closed.
        let _ = open.write_all(body);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`realtime-service {}` did not exit", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(pipe);
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_subcommand_answers_help_with_its_usage_and_exit_codes() {
    for command in COMMANDS {
        for flag in ["--help", "-h"] {
            let output = run(&[command, flag], &[], None);
            let stdout = text(&output.stdout);
            assert_eq!(
                output.status.code(),
                Some(0),
                "{command} {flag}: {output:?}"
            );
            assert!(stdout.starts_with("usage: "), "{command} {flag}: {stdout}");
            assert!(stdout.contains(command), "{command} {flag}: {stdout}");
            assert!(stdout.contains("exit codes:"), "{command} {flag}: {stdout}");
        }
    }
    let top = run(&["--help"], &[], None);
    assert_eq!(top.status.code(), Some(0));
    for command in COMMANDS {
        assert!(text(&top.stdout).contains(command), "{}", text(&top.stdout));
    }
}

#[test]
fn every_subcommand_refuses_an_unknown_argument_with_exit_2_and_its_usage() {
    for command in COMMANDS {
        for extra in [&["--verbose"][..], &["extra"], &["--help", "more"]] {
            let mut args = vec![command];
            args.extend_from_slice(extra);
            let output = run(&args, &[], None);
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
            assert!(stderr.contains("unknown argument"), "{args:?}: {stderr}");
            assert!(stderr.contains("usage: "), "{args:?}: {stderr}");
            assert!(output.stdout.is_empty(), "{args:?}: {output:?}");
        }
    }
    let unknown = run(&["frobnicate"], &[], None);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("unknown command"));
}

#[test]
fn check_config_names_every_bad_variable_in_one_run() {
    // Values that do not parse (the first step) and values that parse but break a rule
    // (the second): all of them come out of one run.
    let parse_errors = [
        ("LISTEN_PORT", "nine"),
        ("METRICS_LISTEN_PORT", "70000"),
        ("CENTRIFUGO_PROXY_AUTH", "basic"),
        ("PROXY_MAX_INFLIGHT", "many"),
        ("OTEL_SDK_DISABLED", "perhaps"),
    ];
    let rule_errors = [
        ("CENTRIFUGO_PROXY_SECRET", "short"),
        ("PROXY_MAX_BODY_BYTES", "0"),
        ("FALLBACK_CONNECT_TTL_S", "5"),
        ("FALLBACK_DEGRADED_WINDOW_MS", "100"),
        ("HTTP_MAX_HEADER_BYTES", "100"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
    ];
    let mut env: Vec<(&str, &str)> = parse_errors.to_vec();
    env.extend_from_slice(&rule_errors);
    env.push(("FALLBACK_TICKETS_PATH", "/var/run/secrets/tickets"));
    // Valid itself, but it requires FALLBACK_LEDGER_PATH.
    env.push(("FALLBACK_LEDGER", "file"));
    let output = run(&["check-config"], &env, None);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let mut named: Vec<&str> = parse_errors.iter().map(|(var, _)| *var).collect();
    named.extend(rule_errors.iter().map(|(var, _)| *var));
    named.push("FALLBACK_LEDGER_PATH");
    let missing: Vec<&&str> = named
        .iter()
        .filter(|var| {
            !stderr
                .lines()
                .any(|l| l.contains(&format!("configuration error: {var}:")))
        })
        .collect();
    assert!(missing.is_empty(), "not named: {missing:?}\n{stderr}");
    // A variable that did not parse is reported once, not again by a rule that judged its
    // stand-in.
    for (var, _) in parse_errors {
        let times = stderr
            .lines()
            .filter(|l| l.contains(&format!("configuration error: {var}:")))
            .count();
        assert_eq!(times, 1, "{var}:\n{stderr}");
    }
}

fn run_sign(env: &[(&str, &str)], body: &[u8]) -> Output {
    run(&["sign"], env, Some(body))
}

#[test]
fn sign_refuses_a_secret_the_service_would_refuse() {
    let dir = crate::helpers::TempDir::new();
    let short_file = dir.0.join("short");
    std::fs::write(&short_file, "fifteen-bytes!!\n").expect("write");
    let good_file = dir.0.join("good");
    std::fs::write(&good_file, "sixteen-bytes!!!\n").expect("write");
    let short_path = short_file.display().to_string();
    let good_path = good_file.display().to_string();

    for env in [
        &[("CENTRIFUGO_PROXY_SECRET", "fifteen-bytes!!")][..],
        &[("CENTRIFUGO_PROXY_SECRET_FILE", short_path.as_str())],
    ] {
        let output = run_sign(env, b"{}");
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {output:?}");
        assert!(stderr.contains("at least 16 bytes"), "{stderr}");
        assert!(!stderr.contains("fifteen-bytes"), "secret echoed: {stderr}");
        assert!(output.stdout.is_empty());
    }
    for env in [
        &[("CENTRIFUGO_PROXY_SECRET", "sixteen-bytes!!!")][..],
        &[("CENTRIFUGO_PROXY_SECRET_FILE", good_path.as_str())],
    ] {
        let output = run_sign(env, b"{}");
        assert_eq!(output.status.code(), Some(0), "{env:?}: {output:?}");
        assert!(text(&output.stdout).starts_with("X-Centrifugo-Proxy-Signature: "));
    }
    // Both spellings of the secret sign alike (the file's trailing newline is not part).
    let from_var = run_sign(&[("CENTRIFUGO_PROXY_SECRET", "sixteen-bytes!!!")], b"{}");
    let from_file = run_sign(&[("CENTRIFUGO_PROXY_SECRET_FILE", &good_path)], b"{}");
    assert_eq!(from_var.stdout, from_file.stdout);
}
