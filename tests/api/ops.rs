//! Operational endpoints (`/health`, `/livez`, `/readyz`, `/metrics`, unknown paths), the
//! separate metrics listener, and shutdown (in-process, and the real binary on signals).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fake_identity::Scripted;
use realtime_service::app::{Application, Shutdown};
use realtime_service::clock::Clock;
use realtime_service::config::Settings;
use serde_json::json;
use tonic::Code;

use crate::helpers::{eventually, spawn_app, spawn_app_with};
use crate::replies::unavailable;

#[tokio::test]
async fn health_has_exactly_the_documented_fields() {
    let app = spawn_app().await;
    assert_eq!(app.address, format!("http://127.0.0.1:{}", app.port));
    let response = app.get("/health").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({
            "status": "ok",
            "identity_outage": {"degraded": false, "consecutive_failure_count": 0},
            "fallback_pool": {
                "size": 0, "status": "disabled", "ledger": "memory", "ledger_reachable": true,
                "ledger_data_losses": 0,
                "generation": null, "last_reload": null, "reload_error": null,
            },
            "channel_policy": {"source": "builtin", "last_reload": null, "reload_error": null},
            "proxy_auth": "hmac",
        })
    );
}

#[tokio::test]
async fn health_reports_a_degraded_outage_and_the_pool() {
    let app = spawn_app_with(|c| {
        c.pool(&["ops-health-pool-1", "ops-health-pool-2"])
            .set("IDENTITY_PROBE_INTERVAL_MS", "600000")
            .set("CENTRIFUGO_PROXY_AUTH", "static_header");
    })
    .await;
    app.identity.fail_with(Code::Unavailable);
    let body = crate::helpers::connect_body("ops-health-1");
    let header = [(
        realtime_service::transport::http::auth::SECRET_HEADER,
        crate::helpers::SECRET,
    )];
    app.post_with_headers("connect", body.as_bytes(), &header)
        .await
        .assert(503, unavailable());
    let loaded = app.health().await["fallback_pool"].clone();
    let expected = |status: &str, degraded: bool| {
        json!({
            "status": status,
            "identity_outage": {"degraded": degraded, "consecutive_failure_count": 1},
            "fallback_pool": {
                "size": 2, "status": "loaded", "ledger": "memory", "ledger_reachable": true,
                "ledger_data_losses": 0,
                "generation": loaded["generation"], "last_reload": loaded["last_reload"],
                "reload_error": null,
            },
            "channel_policy": {"source": "builtin", "last_reload": null, "reload_error": null},
            "proxy_auth": "static_header",
        })
    };
    assert_eq!(
        loaded["generation"].as_str().map(str::len),
        Some(12),
        "a short hash of the set: {loaded}"
    );
    assert_eq!(app.health().await, expected("ok", false));
    app.pass_window();
    assert_eq!(app.health().await, expected("degraded", true));
}

#[tokio::test]
async fn livez_and_readyz_answer_200() {
    let app = spawn_app().await;
    for path in ["/livez", "/readyz"] {
        let response = app.get(path).await;
        assert_eq!(response.status, 200, "{path}: {}", response.text);
    }
}

#[tokio::test]
async fn readyz_turns_503_at_once_on_drain_while_requests_are_still_served() {
    let mut app = spawn_app_with(|c| {
        c.set("SHUTDOWN_DRAIN_DELAY_MS", "2000");
    })
    .await;
    assert_eq!(app.get("/readyz").await.status, 200);
    let started = Instant::now();
    let server = app.begin_shutdown(Shutdown::Drain);
    eventually("readyz answers 503", async || {
        app.get("/readyz").await.status == 503
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert!(!app.state.readiness.is_ready());
    // Still serving during the drain.
    let health = app.health().await;
    assert_eq!(health["status"], json!("shutting_down"));
    assert_eq!(app.get("/livez").await.status, 200);
    app.identity
        .add_ticket("ops-drain-1", Scripted::success("u-drain"));
    let response = app.connect("ops-drain-1").await;
    assert_eq!(response.status, 200, "{}", response.text);
    assert!(
        !server.is_finished(),
        "the server keeps running for the drain delay"
    );
}

#[tokio::test]
async fn immediate_shutdown_stops_serving_promptly() {
    let mut app = spawn_app_with(|c| {
        c.set("SHUTDOWN_DRAIN_DELAY_MS", "60000");
    })
    .await;
    assert_eq!(app.get("/readyz").await.status, 200);
    let server = app.begin_shutdown(Shutdown::Immediate);
    let result = tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("stopped without the drain delay")
        .expect("server task");
    result.expect("server ended cleanly");
    assert!(
        app.client
            .get(format!("{}/livez", app.address))
            .send()
            .await
            .is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let mut app = spawn_app().await;
    app.identity.stall(Duration::from_secs(5));
    let client = app.client.clone();
    let url = format!("{}/centrifugo/connect", app.address);
    let body = crate::helpers::connect_body("ops-inflight-2");
    let signature = realtime_service::transport::http::auth::sign(
        crate::helpers::SECRET.as_bytes(),
        body.as_bytes(),
    );
    let request = tokio::spawn(async move {
        let response = client
            .post(url)
            .header(
                realtime_service::transport::http::auth::SIGNATURE_HEADER,
                signature,
            )
            .body(body)
            .send()
            .await
            .expect("in-flight request answered");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    });
    eventually("the request reached identity-service", async || {
        app.identity.calls() == 1
    })
    .await;
    let started = Instant::now();
    let server = app.begin_shutdown(Shutdown::Immediate);
    let (status, text) = request.await.expect("request task");
    // Answered (at the identity deadline), not cut off.
    assert_eq!(status, 503, "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("stops once the in-flight request is answered")
        .expect("task")
        .expect("clean exit");
}

const METRIC_NAMES: &[&str] = &[
    "realtime_fallback_pool_size",
    "realtime_fallback_pool_status",
    "realtime_centrifugo_connect_total",
    "realtime_proxy_request_duration_seconds",
    "realtime_identity_validate_duration_seconds",
    "realtime_identity_outage",
    "realtime_proxy_signature_rejections_total",
];

#[tokio::test]
async fn metrics_expose_the_documented_names() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("ops-metrics-1", Scripted::success("u-metrics"));
    assert_eq!(app.connect("ops-metrics-1").await.status, 200);
    let response = app.get("/metrics").await;
    assert_eq!(response.status, 200);
    for name in METRIC_NAMES {
        assert!(
            response
                .text
                .lines()
                .any(|l| l.starts_with(&format!("# TYPE {name} "))),
            "{name} missing:\n{}",
            response.text
        );
    }
    assert_eq!(
        app.metric(r#"realtime_centrifugo_connect_total{outcome="accepted"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.metric(r#"realtime_proxy_request_duration_seconds_count{proxy="connect"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.metric(
            r#"realtime_identity_validate_duration_seconds_count{code="ok",source="request"}"#
        )
        .await,
        1.0
    );
    // Every outcome and rejection reason exists from the first scrape.
    for outcome in [
        "accepted",
        "accepted_degraded",
        "disconnected",
        "invalid_ticket",
        "identity_error",
        "unavailable",
        "fallback_pool_consumed",
        "fallback_pool_miss",
        "bad_request",
        "internal_error",
    ] {
        app.metric(&format!(
            "realtime_centrifugo_connect_total{{outcome=\"{outcome}\"}}"
        ))
        .await;
    }
    for reason in ["missing", "malformed", "mismatch"] {
        app.metric(&format!(
            "realtime_proxy_signature_rejections_total{{reason=\"{reason}\"}}"
        ))
        .await;
    }
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let app = spawn_app().await;
    let expected = json!({"error":{"code":404,"message":"not found"}});
    app.get("/nope").await.assert(404, expected.clone());
    app.get("/centrifugo").await.assert(404, expected.clone());
    app.post_signed("does-not-exist", "{}")
        .await
        .assert(404, expected);
}

#[tokio::test]
async fn a_separate_metrics_port_serves_metrics_there_only() {
    let settings = Settings::from_pairs([
        ("LISTEN_HOST", "127.0.0.1"),
        ("LISTEN_PORT", "0"),
        ("METRICS_LISTEN_PORT", "0"),
        ("CENTRIFUGO_PROXY_AUTH", "none"),
        ("IDENTITY_VALIDATE_GRPC_ADDRESS", "127.0.0.1:9"),
        ("SHUTDOWN_DRAIN_DELAY_MS", "0"),
    ])
    .expect("settings");
    let app = Application::build_with_clock(&settings, Clock::manual())
        .await
        .expect("builds");
    let port = app.port();
    let metrics_port = app.metrics_port().expect("a separate metrics listener");
    assert_ne!(port, metrics_port);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
        Shutdown::Immediate
    }));
    let client = crate::helpers::http_client();
    let get = async |port: u16, path: &str| {
        let response = client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .expect("request sent");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    };
    let (status, text) = get(metrics_port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("realtime_centrifugo_connect_total"), "{text}");
    let (status, text) = get(port, "/metrics").await;
    assert_eq!(status, 404, "{text}");
    assert_eq!(get(port, "/health").await.0, 200);
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("stops")
        .expect("task")
        .expect("clean exit");
}

/// The real binary, killed (by its own pid) if a test fails before it exits.
pub(crate) struct Service {
    pub child: Child,
    pub port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

async fn start_binary(drain_ms: &str) -> Service {
    spawn_binary(
        &[
            ("CENTRIFUGO_PROXY_AUTH", "none"),
            ("SHUTDOWN_DRAIN_DELAY_MS", drain_ms),
            ("LOG_LEVEL", "warn"),
        ],
        Stdio::null(),
    )
    .await
}

/// The binary serving on a free loopback port (identity-service at a closed port) with
/// `env` added, once `/readyz` answers 200.
pub(crate) async fn spawn_binary(env: &[(&str, &str)], stdout: Stdio) -> Service {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_realtime-service"))
        .arg("serve")
        .env_clear()
        .env("LISTEN_HOST", "127.0.0.1")
        .env("LISTEN_PORT", port.to_string())
        .env("IDENTITY_VALIDATE_GRPC_ADDRESS", "127.0.0.1:9")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let service = Service { child, port };
    let client = crate::helpers::http_client();
    eventually("the binary is ready", async || {
        readyz(&client, service.port).await == Some(200)
    })
    .await;
    service
}

async fn readyz(client: &reqwest::Client, port: u16) -> Option<u16> {
    client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

pub(crate) fn signal(service: &Service, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(service.child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits (polling) for the process to exit, at most `within`.
pub(crate) async fn exit_code(service: &mut Service, within: Duration) -> Option<i32> {
    let started = Instant::now();
    while started.elapsed() < within {
        if let Some(status) = service.child.try_wait().expect("try_wait") {
            return status.code();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the process did not exit within {within:?}");
}

#[tokio::test]
async fn sigterm_drains_then_exits_0() {
    let mut service = start_binary("1500").await;
    let client = crate::helpers::http_client();
    signal(&service, "TERM");
    let signalled = Instant::now();
    eventually("readyz turns 503", async || {
        readyz(&client, service.port).await == Some(503)
    })
    .await;
    assert!(
        signalled.elapsed() < Duration::from_millis(1000),
        "{:?}",
        signalled.elapsed()
    );
    // Still serving during the drain.
    let health = client
        .get(format!("http://127.0.0.1:{}/health", service.port))
        .send()
        .await
        .expect("served during the drain");
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(
        exit_code(&mut service, Duration::from_secs(5)).await,
        Some(0)
    );
    assert!(
        signalled.elapsed() >= Duration::from_millis(1400),
        "exited before the drain delay: {:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn sigint_exits_0_without_the_drain_delay() {
    let mut service = start_binary("60000").await;
    signal(&service, "INT");
    assert_eq!(
        exit_code(&mut service, Duration::from_secs(2)).await,
        Some(0)
    );
}
