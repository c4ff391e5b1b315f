//! Tests of the server loop over real sockets (timeouts, the cap, eviction, shutdown, and
//! running out of file descriptors in a child process), and of its pure decisions beside it.

use std::net::SocketAddr;

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::conn::{Phase, Watchdog, MIN_HEADER_BYTES};
use super::table::{Evictable, Room, Table};
use super::test_gate::Gate;
use super::*;

/// Only keeps a broken test from hanging; no assertion depends on it.
const HANG_GUARD: Duration = Duration::from_secs(20);
const LONG: Duration = Duration::from_secs(60);

fn limits() -> ServeLimits {
    ServeLimits {
        header_read_timeout: LONG,
        idle_timeout: LONG,
        max_connections: 100,
        shutdown_timeout: LONG,
        max_header_bytes: MIN_HEADER_BYTES,
    }
}

struct Server {
    addr: SocketAddr,
    metrics: ServeMetrics,
    table: Table,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<usize>,
    /// Holds requests to `/wait`.
    gate: Gate,
}

impl Server {
    async fn start(limits: ServeLimits) -> Self {
        let gate = Gate::new();
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/wait", get(gate.handler()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = ServeMetrics::new(&Registry::new());
        let table = Table::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(run(
            listener,
            router,
            limits,
            metrics.clone(),
            async {
                let _ = stopped.await;
            },
            table.clone(),
        ));
        Self {
            addr,
            metrics,
            table,
            stop: Some(stop),
            done,
            gate,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    /// Waits until `n` connections are in the phase `matches` picks.
    async fn until_phases(&self, n: usize, matches: impl Fn(Phase) -> bool) {
        guard(async {
            while self.table.count(&matches) != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    async fn shutdown(mut self) -> (usize, ServeMetrics) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let cut = guard(self.done).await.expect("serve task");
        (cut, self.metrics)
    }
}

async fn guard<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .expect("test hung")
}

async fn send_get(stream: &mut TcpStream, path: &str) {
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
}

/// Reads one response and returns its body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if buf.len() >= end + 4 + length {
                return String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into();
            }
        }
        let n = guard(stream.read(&mut chunk)).await.expect("read");
        assert!(n > 0, "closed before a whole response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn ask(stream: &mut TcpStream, path: &str) -> String {
    send_get(stream, path).await;
    read_response(stream).await
}

/// True once the server has closed the connection (end of stream or reset).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(guard(stream.read(&mut byte)).await, Ok(0) | Err(_))
}

#[tokio::test]
async fn an_unfinished_head_is_closed_after_the_header_timeout() {
    let server = Server::start(ServeLimits {
        header_read_timeout: Duration::from_millis(200),
        ..limits()
    })
    .await;
    let mut partial = server.connect().await;
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .await
        .expect("write");
    let mut silent = server.connect().await;
    assert!(closed(&mut partial).await);
    assert!(closed(&mut silent).await, "a connection that sends nothing");
    let (cut, _) = server.shutdown().await;
    assert_eq!(cut, 0);
}

#[tokio::test]
async fn an_idle_connection_is_timed_by_the_idle_timeout_not_the_header_one() {
    let server = Server::start(ServeLimits {
        header_read_timeout: Duration::from_millis(100),
        ..limits()
    })
    .await;
    let mut stream = server.connect().await;
    assert_eq!(ask(&mut stream, "/").await, "ok");
    // Several header timeouts later, the keep-alive connection still serves.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ask(&mut stream, "/").await, "ok");
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start(ServeLimits {
        idle_timeout: Duration::from_millis(300),
        ..limits()
    })
    .await;
    let mut stream = server.connect().await;
    assert_eq!(ask(&mut stream, "/").await, "ok");
    assert!(closed(&mut stream).await);
    let (_, metrics) = server.shutdown().await;
    assert_eq!(metrics.connections.get(), 0);
}

#[tokio::test]
async fn a_request_being_served_is_not_timed_out() {
    let mut server = Server::start(ServeLimits {
        header_read_timeout: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(100),
        ..limits()
    })
    .await;
    let mut stream = server.connect().await;
    send_get(&mut stream, "/wait").await;
    server.gate.entered().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.gate.open();
    assert_eq!(read_response(&mut stream).await, "done");
    server.shutdown().await;
}

#[tokio::test]
async fn past_the_cap_a_new_connection_is_refused_when_all_are_busy() {
    let mut server = Server::start(ServeLimits {
        max_connections: 2,
        ..limits()
    })
    .await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = server.connect().await;
        send_get(&mut stream, "/wait").await;
        server.gate.entered().await;
        busy.push(stream);
    }
    let mut third = server.connect().await;
    assert!(closed(&mut third).await);
    assert_eq!(server.metrics.refused.get(), 1);
    server.gate.open();
    for stream in &mut busy {
        assert_eq!(read_response(stream).await, "done");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn past_the_cap_the_longest_waiting_connection_makes_room() {
    let server = Server::start(ServeLimits {
        max_connections: 2,
        ..limits()
    })
    .await;
    let mut oldest = server.connect().await;
    assert_eq!(ask(&mut oldest, "/").await, "ok");
    let mut newer = server.connect().await;
    assert_eq!(ask(&mut newer, "/").await, "ok");
    let mut third = server.connect().await;
    assert_eq!(ask(&mut third, "/").await, "ok");
    assert!(closed(&mut oldest).await);
    assert_eq!(ask(&mut newer, "/").await, "ok");
    assert_eq!(server.metrics.evicted.get(), 1);
    assert_eq!(server.metrics.refused.get(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_cuts_a_connection_stalled_mid_head_and_closes_idle_ones() {
    let server = Server::start(ServeLimits {
        shutdown_timeout: Duration::from_millis(300),
        ..limits()
    })
    .await;
    let mut idle = server.connect().await;
    assert_eq!(ask(&mut idle, "/").await, "ok");
    let mut stalled = server.connect().await;
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: te")
        .await
        .expect("write");
    server
        .until_phases(1, |p| matches!(p, Phase::Head { .. }))
        .await;
    let (cut, metrics) = server.shutdown().await;
    assert_eq!(cut, 1);
    assert_eq!(metrics.cut.get(), 1);
    assert_eq!(metrics.connections.get(), 0);
    assert!(closed(&mut idle).await);
    assert!(closed(&mut stalled).await);
}

#[tokio::test]
async fn in_flight_requests_finish_during_shutdown() {
    let mut server = Server::start(ServeLimits {
        shutdown_timeout: LONG,
        ..limits()
    })
    .await;
    let mut stream = server.connect().await;
    send_get(&mut stream, "/wait").await;
    server.gate.entered().await;
    let opener = server.gate.opener();
    let addr = server.addr;
    let shutdown = tokio::spawn(server.shutdown());
    // Once the loop has stopped accepting, the listener is gone.
    guard(async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    opener.send_replace(true);
    assert_eq!(read_response(&mut stream).await, "done");
    assert!(closed(&mut stream).await, "no keep-alive while draining");
    let (cut, _) = guard(shutdown).await.expect("shutdown task");
    assert_eq!(cut, 0);
}

/// Runs `serve` in a child process (this test binary again, running
/// `serve_in_a_child_with_few_file_descriptors`) whose soft open-file limit is `nofile`,
/// so that the limit applies to the server alone. Killed when dropped.
struct Child {
    process: std::process::Child,
    addr: SocketAddr,
}

impl Child {
    async fn start(nofile: u64, max_connections: usize) -> Self {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Self {
            process: std::process::Command::new(exe)
                .args(["--exact", "--ignored", "--nocapture", "--test-threads=1"])
                .arg("transport::http::serve::tests::serve_in_a_child_with_few_file_descriptors")
                .env("SERVE_CHILD_NOFILE", nofile.to_string())
                .env("SERVE_CHILD_MAX_CONNECTIONS", max_connections.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child"),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let stdout = child.process.stdout.take().expect("stdout");
        // The harness writes its own text on the same line, before the port.
        let port = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find_map(|line| line.split("SERVE_CHILD_PORT=").nth(1)?.trim().parse().ok())
        });
        // On failure `child` is dropped, killing the process, which ends the reader too.
        child
            .addr
            .set_port(guard(port).await.expect("reader").expect("child port"));
        child
    }

    /// The child's metrics, over a fresh connection: proof that it still serves.
    async fn metric(&self, name: &str) -> f64 {
        let mut stream = guard(TcpStream::connect(self.addr)).await.expect("connect");
        let text = ask(&mut stream, "/metrics").await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The server side of the two tests below; does nothing unless started by them.
#[tokio::test]
#[ignore = "run as a child process by the open-file-limit tests"]
async fn serve_in_a_child_with_few_file_descriptors() {
    let env = |name: &str| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not set: only run as a child process"))
    };
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(env("SERVE_CHILD_NOFILE")),
            maximum: hard,
        },
    )
    .expect("lower the soft limit");
    let registry = Registry::new();
    let metrics = ServeMetrics::new(&registry);
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                prometheus::TextEncoder::new()
                    .encode_to_string(&registry.gather())
                    .unwrap_or_default()
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    println!("SERVE_CHILD_PORT={port}");
    let limits = ServeLimits {
        max_connections: usize::try_from(env("SERVE_CHILD_MAX_CONNECTIONS")).unwrap_or(usize::MAX),
        ..limits()
    };
    serve(listener, router, limits, metrics, std::future::pending()).await;
}

/// Opens `n` connections and waits until the server has seen some of them.
async fn hold(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(guard(TcpStream::connect(addr)).await.expect("connect"));
    }
    held
}

#[tokio::test]
async fn out_of_file_descriptors_the_loop_counts_and_recovers() {
    // A cap far above the limit: accept itself fails with EMFILE.
    let child = Child::start(64, 100_000).await;
    let held = hold(child.addr, 150).await;
    // Give the child time to fill its descriptor table and fail (the loop does not stop).
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    assert!(child.metric("realtime_http_accept_errors_total").await >= 1.0);
}

#[tokio::test]
async fn with_the_cap_below_the_limit_new_connections_are_served_however_many_idle() {
    let child = Child::start(64, 16).await;
    let _held = hold(child.addr, 150).await;
    // Served although 150 connections sit idle: the oldest made room.
    assert!(
        child
            .metric("realtime_http_connections_evicted_total{transport=\"http\"}")
            .await
            >= 1.0
    );
    assert_eq!(child.metric("realtime_http_accept_errors_total").await, 0.0);
    assert!(child.metric("realtime_http_connections ").await <= 16.0);
}

#[test]
fn a_first_head_is_timed_from_accept_and_later_ones_from_their_first_byte() {
    let limits = ServeLimits::default();
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(5);
    let fresh = Phase::accepted(t0);
    assert_eq!(
        fresh.deadline(&limits),
        Some(t0 + limits.header_read_timeout)
    );
    assert_eq!(fresh.on_bytes(later), Phase::Head { since: t0 });

    let idle = fresh.on_request().on_response_done(t0);
    assert_eq!(idle.deadline(&limits), Some(t0 + limits.idle_timeout));
    let head = idle.on_bytes(later);
    assert_eq!(
        head.deadline(&limits),
        Some(later + limits.header_read_timeout)
    );
    // More bytes of the same head do not restart its clock.
    assert_eq!(head.on_bytes(later + Duration::from_secs(1)), head);
}

#[test]
fn a_busy_connection_has_no_deadline_until_its_last_response_is_done() {
    let limits = ServeLimits::default();
    let t0 = Instant::now();
    let two = Phase::accepted(t0).on_request().on_request();
    assert_eq!(two.deadline(&limits), None);
    assert_eq!(two.waiting_since(), None);
    let one = two.on_response_done(t0);
    assert_eq!(one, Phase::Busy { requests: 1 });
    assert_eq!(one.on_bytes(t0), one, "body bytes are not a new head");
    let done = one.on_response_done(t0);
    assert_eq!(done.waiting_since(), Some(t0));
}

#[test]
fn eviction_picks_the_longest_waiting_and_never_a_busy_connection() {
    let table = Table::default();
    let busy = table.insert(1);
    busy.update(Phase::on_request);
    assert_eq!(table.make_room(1), Room::Full);
    let waiting = table.insert(2);
    let _newer = table.insert(3);
    assert_eq!(table.make_room(5), Room::Free);
    assert_eq!(table.make_room(3), Room::Evicted);
    assert!(waiting.is_evicted() && !busy.is_evicted());
    // Until the evicted one has closed, no second one is chosen.
    assert_eq!(table.make_room(3), Room::Freeing);
    assert!(!table.has_room(3));
    table.remove(2);
    assert!(table.has_room(3));
}

#[test]
fn accept_warnings_are_rate_limited_with_a_count_of_the_rest() {
    let mut limiter = crate::log_limit::LogLimit::new(WARN_EVERY);
    let t0 = std::time::Instant::now();
    assert_eq!(limiter.admit(t0), Some(0));
    assert_eq!(limiter.admit(t0 + Duration::from_secs(1)), None);
    assert_eq!(limiter.admit(t0 + Duration::from_secs(2)), None);
    assert_eq!(limiter.admit(t0 + WARN_EVERY), Some(2));
    assert_eq!(limiter.admit(t0 + WARN_EVERY), None);
}

#[test]
fn accept_backoff_doubles_to_a_ceiling_and_resets() {
    let mut backoff = Backoff::default();
    let pauses: Vec<_> = (0..9).map(|_| backoff.next()).collect();
    assert_eq!(pauses[0], BACKOFF_FIRST);
    assert_eq!(pauses[1], BACKOFF_FIRST * 2);
    assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*pauses.last().unwrap_or(&Duration::ZERO), BACKOFF_MAX);
    backoff.reset();
    assert_eq!(backoff.next(), BACKOFF_FIRST);
}

#[test]
fn the_default_idle_timeout_outlives_centrifugos_pool() {
    assert!(ServeLimits::default().idle_outlives_client_pool());
    let short = ServeLimits {
        idle_timeout: CLIENT_IDLE_POOL,
        ..ServeLimits::default()
    };
    assert!(!short.idle_outlives_client_pool());
}

#[test]
fn the_watchdog_looks_at_the_deadline_or_one_step_ahead_whichever_is_first() {
    let now = Instant::now();
    let secs = Duration::from_secs;
    let limits = ServeLimits {
        header_read_timeout: secs(10),
        idle_timeout: secs(120),
        ..limits()
    };
    let step = Watchdog::step(&limits);
    assert_eq!(step, secs(10));
    // Busy: no deadline, so one step ahead.
    assert_eq!(Watchdog::next_check(None, now, step), now + step);
    // A head's deadline inside the step is aimed at exactly.
    assert_eq!(
        Watchdog::next_check(Some(now + secs(3)), now, step),
        now + secs(3)
    );
    // The idle deadline is far: a phase change before it can only set one at least a step
    // after itself, so looking again in one step misses nothing.
    assert_eq!(
        Watchdog::next_check(Some(now + secs(120)), now, step),
        now + step
    );
    let short_idle = ServeLimits {
        idle_timeout: secs(4),
        ..limits
    };
    assert_eq!(Watchdog::step(&short_idle), secs(4));
}
