//! Test harness: starts the real service on a random port against a real tonic fake of
//! identity-service, with a manual clock, and talks to it over HTTP with real signatures.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use crate::fake_identity::FakeIdentity;
use realtime_service::app::{Application, Shutdown};
use realtime_service::clock::Clock;
use realtime_service::config::Settings;
use realtime_service::transport::grpc::proto::centrifugo_proxy_client::CentrifugoProxyClient;
use realtime_service::transport::http::auth::{sign, SIGNATURE_HEADER};
use realtime_service::transport::http::AppState;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A plain reqwest client for tests that talk to a service in another process. reqwest's
/// rustls needs a process-wide crypto provider; in-process apps install it, but a test that
/// starts none (and may run first) must not depend on another test having done so.
pub fn http_client() -> reqwest::Client {
    realtime_service::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// At least 16 bytes: shorter proxy secrets are refused.
pub const SECRET: &str = "test-secret-0123456789";
/// Short enough that stall tests finish quickly; the window (manual clock) is independent.
pub const DEADLINE_MS: u64 = 300;
pub const WINDOW_MS: u64 = 5000;

/// Everything the service logged in this test binary (each test uses unique tickets, so
/// "this ticket never appears" is a meaningful check across parallel tests).
static LOGS: LazyLock<Mutex<Vec<u8>>> = LazyLock::new(|| Mutex::new(Vec::new()));

static TRACING: LazyLock<()> = LazyLock::new(|| {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let capture = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(|| CaptureWriter);
    let stdout =
        std::env::var_os("TEST_LOG").map(|_| tracing_subscriber::fmt::layer().with_test_writer());
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            "trace,h2=info,hyper=info,tower=info,hyper_util=info",
        ))
        .with(capture)
        .with(stdout)
        .try_init();
});

struct CaptureWriter;

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// How to start a test app. Defaults: HMAC auth with `SECRET`, a fresh fake identity-service,
/// deadline `DEADLINE_MS`, window `WINDOW_MS`, no pool, manual clock.
pub struct TestConfig {
    pub env: Vec<(String, String)>,
    /// Lines of the fallback pool file; `None` = pool disabled.
    pub pool: Option<Vec<String>>,
}

impl TestConfig {
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn pool(&mut self, tickets: &[&str]) -> &mut Self {
        self.pool = Some(tickets.iter().map(|t| (*t).to_owned()).collect());
        self
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// The gRPC proxy listener (every test app has one; `GRPC_PROXY_LISTEN_PORT=0`).
    pub grpc_port: u16,
    pub identity: FakeIdentity,
    pub clock: Clock,
    pub state: AppState,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<Shutdown>>,
    pub server: Option<JoinHandle<std::io::Result<()>>>,
    _pool_dir: Option<TempDir>,
}

pub struct TestResponse {
    pub status: u16,
    pub text: String,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text))
    }

    #[track_caller]
    pub fn assert(&self, status: u16, body: Value) {
        assert_eq!(
            (self.status, self.json()),
            (status, body),
            "unexpected answer: {} {}",
            self.status,
            self.text
        );
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut TestConfig)) -> TestApp {
    let identity = FakeIdentity::start().await.expect("fake identity starts");
    spawn_app_against(identity, configure).await
}

/// Starts the app against an already running fake.
pub async fn spawn_app_against(
    identity: FakeIdentity,
    configure: impl FnOnce(&mut TestConfig),
) -> TestApp {
    LazyLock::force(&TRACING);
    let mut config = TestConfig {
        env: vec![],
        pool: None,
    };
    config
        .set("LISTEN_HOST", "127.0.0.1")
        .set("LISTEN_PORT", "0")
        .set("CENTRIFUGO_PROXY_SECRET", SECRET)
        .set("IDENTITY_VALIDATE_GRPC_ADDRESS", identity.address())
        .set("IDENTITY_VALIDATE_DEADLINE_MS", DEADLINE_MS.to_string())
        .set("FALLBACK_DEGRADED_WINDOW_MS", WINDOW_MS.to_string())
        .set("IDENTITY_PROBE_INTERVAL_MS", "50")
        .set("FALLBACK_LOW_WATERMARK", "0")
        .set("SHUTDOWN_DRAIN_DELAY_MS", "0")
        .set("GRPC_PROXY_LISTEN_PORT", "0");
    configure(&mut config);
    let pool_dir = config.pool.clone().map(|tickets| {
        let dir = TempDir::new();
        let path = dir.0.join("tickets");
        std::fs::write(&path, tickets.join("\n")).expect("write pool");
        config.set("FALLBACK_TICKETS_PATH", path.display().to_string());
        dir
    });
    let settings = Settings::from_pairs(config.env.clone()).expect("test settings are valid");
    let clock = Clock::manual();
    let app = Application::build_with_clock(&settings, clock.clone())
        .await
        .expect("app builds");
    let port = app.port();
    let grpc_port = app.grpc_port().unwrap_or_default();
    let state = app.state().clone();
    let (tx, rx) = oneshot::channel();
    let server =
        tokio::spawn(app.run_until(async move { rx.await.unwrap_or(Shutdown::Immediate) }));
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        grpc_port,
        identity,
        clock,
        state,
        client: http_client(),
        shutdown: Some(tx),
        server: Some(server),
        _pool_dir: pool_dir,
    }
}

/// A gRPC connect request carrying `ticket`, with `secret` in the metadata Centrifugo's
/// `grpc.static_metadata` fills.
pub fn grpc_connect_request(
    ticket: &str,
    secret: &str,
) -> tonic::Request<realtime_service::transport::grpc::proto::ConnectRequest> {
    let mut request =
        tonic::Request::new(realtime_service::transport::grpc::proto::ConnectRequest {
            client: "9c5f9e2b-2d6f-4c1b-8d57-1d2a4f0e7a11".into(),
            transport: "websocket".into(),
            protocol: "json".into(),
            encoding: "json".into(),
            data: serde_json::json!({"token": ticket})
                .to_string()
                .into_bytes(),
            ..Default::default()
        });
    request.metadata_mut().insert(
        realtime_service::transport::grpc::SECRET_METADATA,
        tonic::metadata::MetadataValue::try_from(secret).expect("a secret is visible ASCII"),
    );
    request
}

/// A Centrifugo-shaped connect body carrying `ticket`.
pub fn connect_body(ticket: &str) -> String {
    serde_json::json!({
        "client": "9c5f9e2b-2d6f-4c1b-8d57-1d2a4f0e7a11",
        "transport": "websocket",
        "protocol": "json",
        "encoding": "json",
        "name": "js",
        "data": {"token": ticket},
    })
    .to_string()
}

impl TestApp {
    /// POSTs `body` to `/centrifugo/<proxy>`, signed with `SECRET`.
    pub async fn post_signed(&self, proxy: &str, body: &str) -> TestResponse {
        let signature = sign(SECRET.as_bytes(), body.as_bytes());
        self.post_with_headers(proxy, body.as_bytes(), &[(SIGNATURE_HEADER, &signature)])
            .await
    }

    pub async fn connect(&self, ticket: &str) -> TestResponse {
        self.post_signed("connect", &connect_body(ticket)).await
    }

    pub async fn post_with_headers(
        &self,
        proxy: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut request = self
            .client
            .post(format!("{}/centrifugo/{proxy}", self.address))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        into_test_response(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent");
        into_test_response(response).await
    }

    /// A gRPC `CentrifugoProxy` client on the app's gRPC listener (connects lazily).
    pub fn grpc(&self) -> CentrifugoProxyClient<tonic::transport::Channel> {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.grpc_port))
                .expect("endpoint");
        CentrifugoProxyClient::new(endpoint.connect_lazy())
    }

    pub async fn health(&self) -> Value {
        let response = self.get("/health").await;
        assert_eq!(response.status, 200, "{}", response.text);
        response.json()
    }

    /// The value of a sample in `/metrics`, e.g. `realtime_centrifugo_connect_total{outcome="accepted"}`:
    /// the sum over every series of that name whose labels include the given ones (so a
    /// sample named without its `transport` label counts both transports).
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.get("/metrics").await.text;
        metric_in(&text, sample).unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
    }

    /// Moves the service's clock past the degraded window.
    pub fn pass_window(&self) {
        self.clock.advance(Duration::from_millis(WINDOW_MS + 1));
    }

    /// Begins shutdown and returns the server's join handle.
    pub fn begin_shutdown(&mut self, kind: Shutdown) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(kind);
        }
        self.server.take().expect("server running")
    }
}

/// See `TestApp::metric`.
pub fn metric_in(text: &str, sample: &str) -> Option<f64> {
    let (name, wanted) = split_sample(sample);
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, labels) = split_sample(series);
        if series_name == name && wanted.iter().all(|w| labels.contains(w)) {
            *found.get_or_insert(0.0) += value.trim().parse::<f64>().expect("numeric sample");
        }
    }
    found
}

fn split_sample(sample: &str) -> (&str, Vec<&str>) {
    match sample.split_once('{') {
        Some((name, rest)) => (
            name,
            rest.trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .collect(),
        ),
        None => (sample, Vec::new()),
    }
}

async fn into_test_response(response: reqwest::Response) -> TestResponse {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    TestResponse { status, text }
}

/// Polls `check` until it holds (for background work such as the probe), at most 5 s.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("rt-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
