//! Test helpers: a Redis of the test's own (plain or TLS), a delaying proxy in front of
//! one, and unique key prefixes.

use super::*;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// A `redis-server` shared by the tests of this process (each uses its own key prefix),
/// started on first use on a free port: no Redis has to be running beforehand. A static is
/// never dropped, so a watchdog shell beside it stops it once this process is gone.
pub fn shared_url() -> String {
    static SHARED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let script = format!(
                "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no --dir \"$TMPDIR_OR\" & \
                 r=$!; while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $r",
                parent = std::process::id(),
            );
            // Never waited for: it outlives every test of this process by design.
            #[allow(clippy::zombie_processes)]
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("TMPDIR_OR", std::env::temp_dir())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start sh for the shared redis-server: {e}"));
            for _ in 0..400 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return format!("redis://127.0.0.1:{port}");
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            panic!(
                "the shared redis-server on port {port} did not start listening; \
                 install it with `apt-get install redis-server`"
            );
        })
        .clone()
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).expect("random");
    format!("rt-test:{test}:{}:", hex::encode(nonce))
}

pub fn config(url: &str, prefix: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_owned(),
        password_file: None,
        tls: TlsFiles::default(),
        key_prefix: prefix.to_owned(),
        // Generous for a loaded CI machine; the down-path tests hit refused connections,
        // which fail at once rather than at the timeout.
        timeout: Duration::from_millis(2000),
    }
}

pub fn client(url: &str, prefix: &str) -> RedisClient {
    RedisClient::connect_lazy(&config(url, prefix)).expect("redis client")
}

/// A `redis-server` of the test's own on a free port, stopped on drop.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
    /// The port and TLS arguments of a TLS-only server; empty for plain TCP.
    tls_args: Vec<String>,
}

impl OwnRedis {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut redis = Self {
            port,
            child: None,
            tls_args: Vec::new(),
        };
        redis.restart();
        redis
    }

    /// A TLS-only server (`rediss://`) with `cert`/`key` as its identity; `ca` verifies
    /// client certificates, which it requires.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let path = |p: &std::path::Path| p.display().to_string();
        let mut redis = Self {
            port,
            child: None,
            tls_args: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path(cert),
                "--tls-key-file".into(),
                path(key),
                "--tls-ca-cert-file".into(),
                path(ca),
                "--tls-auth-clients".into(),
                "yes".into(),
            ],
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port_args = if self.tls_args.is_empty() {
            vec!["--port".to_owned(), self.port.to_string()]
        } else {
            self.tls_args.clone()
        };
        let child = Command::new("redis-server")
            .args(&port_args)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            // A test that switches AOF on must not write into the working tree.
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); install it with `apt-get install redis-server`"
                )
            });
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {} did not start listening", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy in front of a Redis that holds every byte the client sends for a delay
/// the test sets (in order): a Redis answering slower than `REDIS_TIMEOUT_MS`.
pub struct DelayProxy {
    pub port: u16,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(redis_port: u16) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await
                else {
                    continue;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let (queue, mut queued) =
                    tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                let delay = delay.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                        let due = tokio::time::Instant::now()
                            + Duration::from_millis(delay.load(Ordering::Relaxed));
                        if queue.send((due, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some((due, bytes)) = queued.recv().await {
                        tokio::time::sleep_until(due).await;
                        if server_tx.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                });
            }
        });
        Self {
            port,
            delay_ms,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
