//! The `demo` and `sign` subcommands, run as the real binary: every curl the demo prints is
//! run through bash and answers as the demo says, the pool window is announced when it opens,
//! Ctrl-C stops the demo while its stdin stays open, and `sign` signs as the service checks.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use realtime_service::demo::WINDOW_OPEN;
use realtime_service::transport::http::auth::{sign, SIGNATURE_HEADER};

use crate::fake_identity::Scripted;
use crate::helpers::{connect_body, spawn_app, SECRET};

const BINARY: &str = env!("CARGO_BIN_EXE_realtime-service");
/// Liveness bounds, not speed assertions: a demo that takes this long is stuck.
const LIVENESS: Duration = Duration::from_secs(10);
const WINDOW_LIVENESS: Duration = Duration::from_secs(30);

/// A running demo: its stdin kept open (as a terminal's would be) and its stdout as lines.
/// Dropping it kills the child, so a failing test leaves nothing behind.
struct Demo {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Demo {
    fn start(listen_host: Option<&str>) -> Self {
        let mut command = Command::new(BINARY);
        command
            .arg("demo")
            .env("LISTEN_PORT", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        match listen_host {
            Some(host) => command.env("LISTEN_HOST", host),
            None => command.env_remove("LISTEN_HOST"),
        };
        let mut child = command.spawn().expect("the demo starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Every stdout line up to and including the first one containing `marker`.
    fn read_until(&self, marker: &str, bound: Duration) -> Vec<String> {
        let deadline = Instant::now() + bound;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(marker);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!(
                    "no {marker:?} from the demo ({e}); it printed:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    fn press_enter(&mut self) {
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Ctrl-C, as a terminal sends it, then the exit status within `LIVENESS`.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + LIVENESS;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo is still running {LIVENESS:?} after SIGINT with its stdin open"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One printed command and what the demo says it answers.
struct Printed {
    curl: String,
    status: u16,
    fragment: String,
}

/// The `#   expect: HTTP <status>, body with <fragment>` line before each curl.
fn printed_commands(lines: &[String]) -> Vec<Printed> {
    let mut commands = Vec::new();
    let mut expect: Option<(u16, String)> = None;
    for line in lines {
        if let Some(rest) = line.strip_prefix("#   expect: HTTP ") {
            let (status, fragment) = rest.split_once(", body with ").expect("expect format");
            expect = Some((status.parse().unwrap(), fragment.to_owned()));
        } else if line.starts_with("curl ") {
            let (status, fragment) = expect
                .take()
                .unwrap_or_else(|| panic!("no expectation printed for {line}"));
            commands.push(Printed {
                curl: line.clone(),
                status,
                fragment,
            });
        }
    }
    commands
}

#[track_caller]
fn run_curl(printed: &Printed) {
    let output = Command::new("bash")
        .args(["-c", &printed.curl])
        .output()
        .expect("bash runs");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{out}{}",
        printed.curl,
        String::from_utf8_lossy(&output.stderr)
    );
    let status_line = format!(" -> HTTP {}", printed.status);
    assert!(
        out.trim_end().ends_with(&status_line) && out.contains(&printed.fragment),
        "expected{status_line} with {} from\n{}\ngot: {out}",
        printed.fragment,
        printed.curl
    );
}

#[test]
fn every_printed_curl_answers_as_the_demo_says_and_the_pool_window_is_announced() {
    // LISTEN_HOST is honoured: bound on every interface, the curls go to loopback.
    let mut demo = Demo::start(Some("0.0.0.0"));
    let lines = demo.read_until("Ctrl-C stops the demo", WINDOW_LIVENESS);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("demo listening on 0.0.0.0:")),
        "{lines:#?}"
    );
    let commands = printed_commands(&lines);
    let proxies: Vec<&str> = commands
        .iter()
        .filter_map(|c| c.curl.split("/centrifugo/").nth(1)?.split(' ').next())
        .collect();
    for proxy in ["connect", "subscribe", "publish", "rpc"] {
        assert!(proxies.contains(&proxy), "no {proxy} curl in {proxies:?}");
    }
    assert!(commands
        .iter()
        .all(|c| c.curl.contains(" http://127.0.0.1:")));

    let (pool, now): (Vec<_>, Vec<_>) =
        commands.iter().partition(|c| c.curl.contains("demo-pool-"));
    assert_eq!(pool.len(), 1, "one pool command");
    for printed in now {
        run_curl(printed);
    }

    demo.press_enter();
    let after = demo.read_until(WINDOW_OPEN, WINDOW_LIVENESS);
    assert!(
        after.iter().any(|l| l.contains("identity-service is DOWN")),
        "{after:#?}"
    );
    run_curl(pool[0]);

    demo.press_enter();
    demo.read_until("identity-service is UP again", LIVENESS);
    assert!(demo.interrupt().success());
}

#[test]
fn ctrl_c_stops_the_demo_while_stdin_stays_open() {
    let mut demo = Demo::start(None);
    let lines = demo.read_until("Ctrl-C stops the demo", WINDOW_LIVENESS);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("demo listening on 127.0.0.1:")),
        "LISTEN_HOST defaults to loopback: {lines:#?}"
    );
    // The stdin pipe stays open (held in `demo`), exactly like an idle terminal.
    assert!(demo.interrupt().success());
}

fn run_sign(secret: Option<&str>, body: &[u8]) -> std::process::Output {
    let mut command = Command::new(BINARY);
    command
        .arg("sign")
        .env_remove("CENTRIFUGO_PROXY_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(secret) = secret {
        command.env("CENTRIFUGO_PROXY_SECRET", secret);
    }
    let mut child = command.spawn().expect("sign starts");
    let mut stdin = child.stdin.take().unwrap();
    // A missing secret exits before reading, so the pipe may already be closed.
    let _ = stdin.write_all(body);
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn sign_prints_the_header_the_service_accepts() {
    let body = connect_body("sign-ok-1");
    let output = run_sign(Some(SECRET), body.as_bytes());
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout,
        format!(
            "X-Centrifugo-Proxy-Signature: {}\n",
            sign(SECRET.as_bytes(), body.as_bytes())
        )
    );

    // The printed value, sent as printed, passes the service's check.
    let (name, value) = stdout.trim_end().split_once(": ").unwrap();
    assert!(name.eq_ignore_ascii_case(SIGNATURE_HEADER));
    let app = spawn_app().await;
    app.identity
        .add_ticket("sign-ok-1", Scripted::success("u-sign"));
    let response = app
        .post_with_headers("connect", body.as_bytes(), &[(name, value)])
        .await;
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(response.json()["result"]["user"], "u-sign");
    let tampered = app
        .post_with_headers("connect", b"{}", &[(name, value)])
        .await;
    assert_eq!(tampered.status, 401, "{}", tampered.text);
}

#[test]
fn sign_without_a_secret_is_a_configuration_error() {
    for secret in [None, Some("")] {
        let output = run_sign(secret, b"{}");
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        assert!(output.stdout.is_empty());
        assert!(String::from_utf8_lossy(&output.stderr).contains("CENTRIFUGO_PROXY_SECRET"));
    }
}

#[test]
fn sign_refuses_a_body_past_its_bound() {
    let output = run_sign(Some(SECRET), &vec![b'x'; 1024 * 1024 + 1]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty());
    let exactly = run_sign(Some(SECRET), &vec![b'x'; 1024 * 1024]);
    assert!(exactly.status.success(), "{exactly:?}");
}
