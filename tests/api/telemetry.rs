//! Observability as the conventions define it: the `process_*` families and
//! `realtime_build_info{commit}` on `/metrics`; and, through the real binary, `LOG_LEVEL`
//! refused when it is no filter, JSON log lines carrying the trace and span ids, text lines
//! without colour codes off a terminal, spans exported to the traces endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::spawn_app;
use crate::ops::{exit_code, free_port, signal, spawn_binary, Service};

const BINARY: &str = env!("CARGO_BIN_EXE_realtime-service");
const PROCESS_FAMILIES: &[(&str, &str)] = &[
    ("process_cpu_seconds_total", "counter"),
    ("process_resident_memory_bytes", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_max_fds", "gauge"),
    ("process_start_time_seconds", "gauge"),
    ("process_threads", "gauge"),
];

#[tokio::test]
async fn metrics_have_the_process_families_and_build_info_with_the_commit() {
    let app = spawn_app().await;
    let text = app.get("/metrics").await.text;
    for (name, kind) in PROCESS_FAMILIES {
        let header = format!("# TYPE {name} {kind}");
        assert!(
            text.lines().any(|l| l == header),
            "{header} missing:\n{text}"
        );
    }
    let open = app.metric("process_open_fds").await;
    assert!(open >= 3.0, "stdin, stdout, stderr, listeners: {open}");
    assert!(app.metric("process_max_fds").await >= open);
    assert!(app.metric("process_resident_memory_bytes").await > 0.0);
    assert!(app.metric("process_threads").await >= 1.0);
    assert!(app.metric("process_start_time_seconds").await > 1.6e9);

    let info = text
        .lines()
        .find(|l| l.starts_with("realtime_build_info{"))
        .unwrap_or_else(|| panic!("no realtime_build_info:\n{text}"));
    let version = format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"));
    assert!(info.contains(&version) && info.ends_with(" 1"), "{info}");
    let commit = info
        .split_once(r#"commit=""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(commit, _)| commit)
        .unwrap_or_else(|| panic!("no commit label: {info}"));
    match git_head() {
        // Built from this checkout (no override): the commit it is at.
        Some(head) if std::env::var_os("REALTIME_GIT_COMMIT").is_none() => {
            assert_eq!(commit, head, "{info}")
        }
        _ => assert!(
            commit == "unknown"
                || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
            "{info}"
        ),
    }
}

fn git_head() -> Option<String> {
    let output = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs the binary to its exit (killed and failed if it is still running after 20 s).
fn run_to_exit(command: &mut Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after 20 s: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn a_log_level_that_is_no_filter_exits_2_naming_log_level() {
    for subcommand in ["serve", "check-config"] {
        let output = run_to_exit(
            Command::new(BINARY)
                .arg(subcommand)
                .env_clear()
                .env("CENTRIFUGO_PROXY_AUTH", "none")
                .env("LISTEN_HOST", "127.0.0.1")
                .env("LISTEN_PORT", "0")
                .env("LOG_LEVEL", "verbose")
                .env("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{subcommand}: {stderr}");
        assert!(
            stderr.contains("configuration error: LOG_LEVEL: \"verbose\""),
            "{subcommand}: {stderr}"
        );
        // Reported together with the other problems.
        assert!(
            stderr.contains("configuration error: OTEL_TRACES_SAMPLER_ARG:"),
            "{subcommand}: {stderr}"
        );
    }
}

/// A stand-in OTLP/HTTP collector: answers 200 to every request and reports each request
/// line (`POST /path`). Stops accepting when dropped.
struct Collector {
    port: u16,
    requests: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
}

impl Collector {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let (tx, requests) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let tx = tx.clone();
                        std::thread::spawn(move || serve_otlp(stream, &tx));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            port,
            requests,
            stop,
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// HTTP/1.1 requests on one connection, each answered 200, until EOF or 10 s of silence.
fn serve_otlp(stream: TcpStream, tx: &mpsc::Sender<String>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length.min(1 << 20)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let line: Vec<&str> = request_line.split_whitespace().take(2).collect();
        let _ = tx.send(line.join(" "));
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The binary serving with `env` (HMAC auth), its stdout piped.
pub(crate) async fn serve(env: &[(&str, &str)]) -> Service {
    let mut all = vec![
        ("CENTRIFUGO_PROXY_SECRET", "telemetry-test-secret-7c1e9a04"),
        ("SHUTDOWN_DRAIN_DELAY_MS", "0"),
    ];
    all.extend_from_slice(env);
    spawn_binary(&all, Stdio::piped()).await
}

/// SIGTERM, exit 0, and everything the binary wrote to stdout.
pub(crate) async fn stop(mut service: Service) -> String {
    signal(&service, "TERM");
    assert_eq!(
        exit_code(&mut service, Duration::from_secs(20)).await,
        Some(0)
    );
    let mut stdout = String::new();
    service
        .child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .expect("stdout");
    stdout
}

/// An unsigned connect: refused 401 with a WARN inside the request's span.
pub(crate) async fn unsigned_connect(port: u16, traceparent: Option<&str>) {
    let mut request = crate::helpers::http_client()
        .post(format!("http://127.0.0.1:{port}/centrifugo/connect"))
        .header("content-type", "application/json")
        .body(r#"{"client":"c","transport":"websocket","protocol":"json","encoding":"json","data":{}}"#);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("sent");
    assert_eq!(response.status().as_u16(), 401);
}

fn is_hex(value: &Value, len: usize) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test]
async fn json_lines_carry_trace_ids_and_spans_go_to_the_traces_endpoint() {
    let collector = Collector::start();
    let traces_url = format!("http://127.0.0.1:{}/custom/traces", collector.port);
    // The generic endpoint points at nothing: the traces endpoint must win.
    let generic = format!("http://127.0.0.1:{}", free_port());
    let service = serve(&[
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "info"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &generic),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces_url),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ])
    .await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    unsigned_connect(service.port, Some(&traceparent)).await;
    unsigned_connect(service.port, None).await;
    let stdout = stop(service).await;

    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("proxy call refused"))
        })
        .collect();
    assert_eq!(refused.len(), 2, "{stdout}");
    for line in &refused {
        assert!(is_hex(&line["trace_id"], 32), "{line}");
        assert!(is_hex(&line["span_id"], 16), "{line}");
        assert_ne!(
            line["span_id"], CALLER_SPAN,
            "the service's own span: {line}"
        );
    }
    assert_eq!(
        refused[0]["trace_id"], CALLER_TRACE,
        "the caller's trace continues"
    );
    assert_ne!(
        refused[1]["trace_id"], CALLER_TRACE,
        "a new root: {}",
        refused[1]
    );
    // Lines outside any span (startup) carry no ids.
    let startup = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("listening"))
        })
        .unwrap_or_else(|| panic!("no startup line:\n{stdout}"));
    assert!(startup.get("trace_id").is_none(), "{startup}");

    // The batch was flushed on shutdown, to the traces endpoint as given.
    let exported: Vec<String> = collector.requests.try_iter().collect();
    assert!(
        exported.iter().any(|r| r == "POST /custom/traces"),
        "requests seen by the collector: {exported:?}"
    );
}

#[tokio::test]
async fn without_an_exporter_json_lines_still_carry_trace_ids() {
    let service = serve(&[("LOG_FORMAT", "json"), ("LOG_LEVEL", "warn")]).await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    unsigned_connect(service.port, Some(&traceparent)).await;
    let stdout = stop(service).await;
    let refused: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("proxy call refused"))
        })
        .unwrap_or_else(|| panic!("no refused line:\n{stdout}"));
    assert_eq!(refused["trace_id"], CALLER_TRACE, "{refused}");
    assert!(is_hex(&refused["span_id"], 16), "{refused}");
}

#[tokio::test]
async fn text_lines_have_no_colour_codes_off_a_terminal() {
    let service = serve(&[("LOG_FORMAT", "text"), ("LOG_LEVEL", "info")]).await;
    unsigned_connect(service.port, None).await;
    let stdout = stop(service).await;
    assert!(stdout.contains("proxy call refused"), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}'),
        "ANSI escape codes in: {stdout:?}"
    );
}
