//! The HTTP/1.1 server loop (in place of `axum::serve`): no client can hold a connection, a
//! file descriptor or memory for as long as it likes.
//!
//! What is bounded here, and why it is not left to hyper:
//! - **Request heads** must arrive within `header_read_timeout`, counted from the first byte of
//!   the head (from accept for a new connection), and fit in `max_header_bytes`. hyper has a
//!   `header_read_timeout` of its own, but its clock starts as soon as hyper waits for a head,
//!   which on a keep-alive connection is right after the previous response: it would close
//!   Centrifugo's pooled connections after 10 s instead of letting them idle. So hyper's is off
//!   (and hyper needs no timer) and a watchdog per connection keeps both clocks.
//! - **Idle keep-alive connections** (no request in flight, no byte of the next one) close
//!   after `idle_timeout`. The default is above the 90 s that Go's HTTP client, and so
//!   Centrifugo, keeps idle pooled connections, so the client normally closes first and never
//!   sends a request on a connection this side is closing.
//! - **Connections** are capped at `max_connections`. When full, the connection that has waited
//!   longest without a request in flight (idle, or still sending its head) is closed to make
//!   room, and the new one is served once that socket is closed, so descriptors in use never
//!   pass the cap by more than one; only when every connection is serving a request is the new
//!   one closed at once.
//!   Evicting instead of refusing keeps health checks and Centrifugo served while someone holds
//!   thousands of sockets open doing nothing.
//! - **Accept errors** (EMFILE, ENFILE, ...) are counted, logged as a rate-limited WARN, and
//!   the loop backs off (10 ms doubling to 1 s) instead of spinning on a full descriptor table.
//! - **Shutdown** stops accepting, asks every connection to finish (hyper closes idle ones at
//!   once and busy ones after their response), and after `shutdown_timeout` cuts whatever is
//!   left, returning how many so the caller can log it.
//!
//! Request bodies are bounded by the body extractor (`crate::limits::read_body`) rather than
//! here: only the route knows its body limit, and the answer to a slow body is a 408.
//!
//! The public API and the accept loop live here. One connection's clock (`conn`) and the
//! table with its eviction choice (`table`) are separate because each is a decision of its
//! own, with its own unit tests, that the loop only consults.

mod conn;
pub(crate) mod table;
#[cfg(test)]
pub(crate) mod test_gate;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::time::Duration;

use axum::Router;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::log_limit::LogLimit;

use conn::serve_connection;
use table::{Open, Room, Table};

/// How long Go's `http.Transport` (Centrifugo's HTTP client) keeps an idle pooled connection.
pub const CLIENT_IDLE_POOL: Duration = Duration::from_secs(90);

/// One accept-error WARN at most this often; the ones in between are counted in the next.
const WARN_EVERY: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The bounds of the server loop; the environment names are the integrator's to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// `HTTP_HEADER_READ_TIMEOUT_MS` (10 000): the whole request head must arrive within this,
    /// counted from its first byte, or from accept for a connection's first request.
    pub header_read_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_MS` (120 000): a keep-alive connection with nothing in flight is
    /// closed after this. Keep it above [`CLIENT_IDLE_POOL`].
    pub idle_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS` (4096): open connections at most, on this listener.
    pub max_connections: usize,
    /// `SHUTDOWN_TIMEOUT_MS` (15 000): how long shutdown waits for connections to finish.
    pub shutdown_timeout: Duration,
    /// Largest request head hyper buffers (16 KiB; at least 8 KiB); larger heads get 431.
    /// Bounds memory per connection: hyper's default (~400 KB) let 1000 unfinished heads hold
    /// 400 MB.
    pub max_header_bytes: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_millis(10_000),
            idle_timeout: Duration::from_millis(120_000),
            max_connections: 4096,
            shutdown_timeout: Duration::from_millis(15_000),
            max_header_bytes: 16 * 1024,
        }
    }
}

impl ServeLimits {
    /// False when this side would close idle connections Centrifugo still considers pooled
    /// (a request sent on one of them as it closes fails): worth a `check-config` warning.
    pub fn idle_outlives_client_pool(&self) -> bool {
        self.idle_timeout > CLIENT_IDLE_POOL
    }
}

/// The server loop's metrics. Clone it to serve several listeners: they then share the series.
#[derive(Clone)]
pub struct ServeMetrics {
    /// Connections open now.
    connections: IntGauge,
    /// Connections closed at once because every slot was serving a request.
    refused: IntCounter,
    /// Connections closed to make room for a new one (they were waiting, not serving), by
    /// listener: `transport` is `http` or `grpc`.
    evicted_by: IntCounterVec,
    /// The HTTP listener's series of `evicted_by`.
    evicted: IntCounter,
    /// Failed `accept` calls (EMFILE, ENFILE, aborted handshakes, ...).
    accept_errors: IntCounter,
    /// Connections still open when the shutdown timeout ran out.
    cut: IntCounter,
}

impl ServeMetrics {
    pub fn new(registry: &Registry) -> Self {
        let counter =
            |name: &str, help: &str| IntCounter::new(name, help).expect("static metric definition");
        let evicted_by = IntCounterVec::new(
            Opts::new(
                "realtime_http_connections_evicted_total",
                "Waiting connections closed to make room under HTTP_MAX_CONNECTIONS, by listener (transport).",
            ),
            &["transport"],
        )
        .expect("static metric definition");
        let metrics = Self {
            evicted: evicted_by.with_label_values(&["http"]),
            evicted_by,
            connections: IntGauge::new(
                "realtime_http_connections",
                "Open HTTP connections.",
            )
            .expect("static metric definition"),
            refused: counter(
                "realtime_http_connections_refused_total",
                "Connections closed at once because HTTP_MAX_CONNECTIONS were all serving requests.",
            ),
            accept_errors: counter(
                "realtime_http_accept_errors_total",
                "Failed accepts of new connections (for example out of file descriptors).",
            ),
            cut: counter(
                "realtime_http_connections_cut_total",
                "Connections cut at shutdown after SHUTDOWN_TIMEOUT_MS.",
            ),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 5] = [
            Box::new(metrics.connections.clone()),
            Box::new(metrics.refused.clone()),
            Box::new(metrics.evicted_by.clone()),
            Box::new(metrics.accept_errors.clone()),
            Box::new(metrics.cut.clone()),
        ];
        for collector in collectors {
            registry
                .register(collector)
                .expect("each metric is registered once");
        }
        metrics
    }

    /// The gRPC listener's eviction count (`transport="grpc"`).
    pub fn grpc_evictions(&self) -> IntCounter {
        self.evicted_by.with_label_values(&["grpc"])
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains within
/// `limits.shutdown_timeout`. Returns the number of connections cut (0 after a clean drain).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    metrics: ServeMetrics,
    shutdown: impl Future<Output = ()>,
) -> usize {
    run(
        listener,
        router,
        limits,
        metrics,
        shutdown,
        Table::default(),
    )
    .await
}

async fn run(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    metrics: ServeMetrics,
    shutdown: impl Future<Output = ()>,
    table: Table,
) -> usize {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = 0;
    let mut backoff = Backoff::default();
    let mut accept_warn = LogLimit::new(WARN_EVERY);
    let mut full_warn = LogLimit::new(WARN_EVERY);
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connections so the set does not grow with every one ever served.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    backoff.reset();
                    match table.make_room(limits.max_connections) {
                        Room::Free => {}
                        room @ (Room::Evicted | Room::Freeing) => {
                            if room == Room::Evicted {
                                metrics.evicted.inc();
                            }
                            // Hold this one until the evicted socket is closed, so that the
                            // descriptors in use never pass the cap by more than one, and
                            // accept nothing more meanwhile (the kernel's backlog waits).
                            let room = async {
                                while !table.has_room(limits.max_connections) {
                                    table.freed().await;
                                }
                            };
                            tokio::select! {
                                () = &mut shutdown => break,
                                () = room => {}
                            }
                        }
                        Room::Full => {
                            metrics.refused.inc();
                            if let Some(suppressed) = full_warn.admit(Instant::now().into_std()) {
                                tracing::warn!(
                                    max = limits.max_connections,
                                    suppressed,
                                    "HTTP_MAX_CONNECTIONS reached and all are serving requests: new connection closed"
                                );
                            }
                            continue;
                        }
                    }
                    // Small answers: do not wait for more to fill a segment.
                    let _ = stream.set_nodelay(true);
                    next_id += 1;
                    let activity = table.insert(next_id);
                    metrics.connections.inc();
                    let open = Open { table: table.clone(), id: next_id, gauge: Some(metrics.connections.clone()) };
                    tasks.spawn(serve_connection(stream, router.clone(), activity, limits, stop_rx.clone(), open));
                }
                Err(error) => {
                    metrics.accept_errors.inc();
                    if let Some(suppressed) = accept_warn.admit(Instant::now().into_std()) {
                        tracing::warn!(%error, suppressed, "accepting a connection failed");
                    }
                    // A client that gave up during the handshake says nothing about us.
                    if is_connection_error(&error) {
                        continue;
                    }
                    // EMFILE and friends fail again at once while the connection waits in the
                    // backlog: pause instead of spinning, and stay stoppable.
                    let pause = backoff.next();
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            },
        }
    }

    // New connections are refused by the kernel from here on.
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    let mut cut = 0;
    if !drained {
        tasks.abort_all();
        while let Some(result) = tasks.join_next().await {
            if result.is_err_and(|e| e.is_cancelled()) {
                cut += 1;
            }
        }
    }
    metrics.cut.inc_by(cut as u64);
    cut
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The pause after a failed accept: doubling from [`BACKOFF_FIRST`] to [`BACKOFF_MAX`].
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = self.next;
        self.next = (pause * 2).min(BACKOFF_MAX);
        pause
    }

    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}
