//! The real binary and a private `redis-server` as child processes, for the tests that need
//! more than one replica, a restart, a signal or a Redis that can be stopped.

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use realtime_service::transport::http::auth::{sign, SIGNATURE_HEADER};
use serde_json::Value;

use crate::helpers::{connect_body, metric_in, TempDir, SECRET};

const BINARY: &str = env!("CARGO_BIN_EXE_realtime-service");

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The real binary, killed (by its own pid) when dropped; its output goes to one log file that
/// survives restarts.
pub struct Service {
    child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
    prelude: String,
    env: Vec<(String, String)>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Service {
    /// Starts `serve` with `env` over a small base (HMAC with `SECRET`, identity on a closed
    /// port, text logs at INFO), through `bash -c "$prelude; exec ..."` so a test can lower
    /// limits for the child alone. Returns once `/health` answers.
    pub async fn start(prelude: &str, env: &[(&str, &str)]) -> Self {
        let mut service = Self::spawn_only(prelude, env);
        service.wait_started().await;
        service
    }

    /// Starts `serve` like `start` without waiting for `/health`: for a process expected to
    /// exit at startup.
    pub fn spawn_only(prelude: &str, env: &[(&str, &str)]) -> Self {
        let mut service = Self {
            child: None,
            port: free_port(),
            dir: TempDir::new(),
            prelude: prelude.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        service.spawn_child();
        service
    }

    async fn spawn(&mut self) {
        self.spawn_child();
        self.wait_started().await;
    }

    async fn wait_started(&mut self) {
        let started = Instant::now();
        while self.health().await != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the binary did not start:\n{}",
                self.log()
            );
            assert!(self.running(), "the binary exited:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn_child(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("log"))
            .expect("log file");
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!("{}\nexec \"$0\" serve", self.prelude))
            .arg(BINARY)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CENTRIFUGO_PROXY_AUTH", "hmac")
            .env("CENTRIFUGO_PROXY_SECRET", SECRET)
            .env("LISTEN_HOST", "127.0.0.1")
            .env("LISTEN_PORT", self.port.to_string())
            .env("IDENTITY_VALIDATE_GRPC_ADDRESS", "127.0.0.1:9")
            .env("SHUTDOWN_DRAIN_DELAY_MS", "0")
            .env("LOG_LEVEL", "info")
            .env("LOG_FORMAT", "text");
        for (name, value) in &self.env {
            command.env(name, value);
        }
        self.child = Some(
            command
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("binary starts"),
        );
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process (no drain: what a crash does) and starts it again with the same
    /// environment on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGHUP to the binary (the `exec` made it bash's pid).
    pub fn hup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -HUP failed");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("log")).unwrap_or_default()
    }

    pub fn addr(&self) -> (&'static str, u16) {
        ("127.0.0.1", self.port)
    }

    /// `GET /health` on a new connection; `None` when it is not answered within 5 s.
    pub async fn health(&self) -> Option<u16> {
        self.get("/health").await.map(|(status, _)| status)
    }

    pub async fn health_json(&self) -> Value {
        let (_, text) = self.get("/health").await.expect("health answered");
        serde_json::from_str(&text).expect("health is JSON")
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        // A new connection each time: the point is that new ones are still accepted.
        let response = client()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// POSTs `body` to `/centrifugo/<proxy>`, signed with `SECRET`: the status and body.
    pub async fn post_signed(&self, proxy: &str, body: &str) -> (u16, Value) {
        let response = client()
            .post(format!("http://127.0.0.1:{}/centrifugo/{proxy}", self.port))
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sign(SECRET.as_bytes(), body.as_bytes()))
            .body(body.to_owned())
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A connect with `ticket`: its HTTP status (200 accepted, 503 the temporary error).
    pub async fn connect(&self, ticket: &str) -> u16 {
        self.post_signed("connect", &connect_body(ticket)).await.0
    }

    /// Opens the identity outage past its window (the service must have been started with a
    /// degraded window as short as its deadline): a connect with `opener` fails, then
    /// `/health` reports degraded.
    pub async fn degrade(&self, opener: &str) {
        assert_eq!(self.connect(opener).await, 503);
        let started = Instant::now();
        while self.health_json().await["identity_outage"]["degraded"] != Value::Bool(true) {
            assert!(started.elapsed() < Duration::from_secs(10), "not degraded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, text) = self.get("/metrics").await.expect("metrics answered");
        metric_in(&text, sample).unwrap_or_else(|| panic!("no {sample}"))
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
    pub fn memory(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {field}"))
            * 1024
    }

    /// Waits for the process to exit, at most `within`; its exit code.
    pub async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < within {
            let child = self.child.as_mut().expect("started");
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the process did not exit within {within:?}:\n{}",
            self.log()
        );
    }
}

pub fn client() -> reqwest::Client {
    // No `Application` runs in this process to install it.
    realtime_service::tls::install_crypto_provider();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// A private `redis-server` on a free port, without persistence, stopped when dropped.
pub struct Redis {
    pub port: u16,
    password: Option<String>,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// With `password`, the server requires it (`--requirepass`).
    pub fn start_with(password: Option<&str>) -> Self {
        let mut redis = Self {
            port: free_port(),
            password: password.map(str::to_owned),
            child: None,
        };
        redis.restart();
        redis
    }

    /// `redis://[:password@]127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Starts (again) on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(pw) = &self.password {
            command.args(["--requirepass", pw]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): these tests need a real Redis; install it with `apt-get install redis-server`"
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        while self.ping().is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on port {} does not answer",
                self.port
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// One inline `PING` (with `AUTH` first when there is a password).
    fn ping(&self) -> std::io::Result<()> {
        use std::io::Read as _;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        if let Some(pw) = &self.password {
            write!(stream, "AUTH {pw}\r\n")?;
        }
        stream.write_all(b"PING\r\n")?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        while !seen.ends_with(b"+PONG\r\n") {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(())
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: a Redis that holds its
    /// connections open and answers nothing, as a stalled or overloaded one does.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A key prefix no other test uses.
pub fn key_prefix(test: &str) -> String {
    format!("rt-test:{}:{test}:", std::process::id())
}
