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

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntGauge, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service as _;

/// How long Go's `http.Transport` (Centrifugo's HTTP client) keeps an idle pooled connection.
pub const CLIENT_IDLE_POOL: Duration = Duration::from_secs(90);

/// hyper refuses a smaller buffer: its first read is this large.
const MIN_HEADER_BYTES: usize = 8192;

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
    /// Connections closed to make room for a new one (they were waiting, not serving).
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
        let metrics = Self {
            connections: IntGauge::new(
                "realtime_http_connections",
                "Open HTTP connections.",
            )
            .expect("static metric definition"),
            refused: counter(
                "realtime_http_connections_refused_total",
                "Connections closed at once because HTTP_MAX_CONNECTIONS were all serving requests.",
            ),
            evicted: counter(
                "realtime_http_connections_evicted_total",
                "Waiting connections closed to make room under HTTP_MAX_CONNECTIONS.",
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
            Box::new(metrics.evicted.clone()),
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
    let mut accept_warn = WarnLimiter::default();
    let mut full_warn = WarnLimiter::default();
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
                            if let Some(suppressed) = full_warn.allow(Instant::now()) {
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
                    let open = Open { table: table.clone(), id: next_id, gauge: metrics.connections.clone() };
                    tasks.spawn(serve_connection(stream, router.clone(), activity, limits, stop_rx.clone(), open));
                }
                Err(error) => {
                    metrics.accept_errors.inc();
                    if let Some(suppressed) = accept_warn.allow(Instant::now()) {
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

/// One connection: hyper serving `router`, raced against the watchdog and the stop signal.
async fn serve_connection(
    stream: TcpStream,
    router: Router,
    activity: Arc<Activity>,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
    _open: Open,
) {
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let serving = Serving::begin(requests.clone());
        let mut router = router.clone();
        async move {
            // axum's Router is always ready and answers every request (errors included).
            let Ok(response) = router.call(request).await;
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                _serving: serving,
            }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);

    let mut draining = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    // Malformed requests and resets are the client's business, not an operator's.
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = sleep_until(deadline) => {}
            _ = stop.wait_for(|stop| *stop), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
        if activity.is_evicted() && !draining {
            // Chosen while waiting, a request may have started since: let it finish.
            if activity.is_busy() {
                draining = true;
                connection.as_mut().graceful_shutdown();
            } else {
                return;
            }
        }
        if activity.expired(&limits, Instant::now()) {
            // Dropping the connection closes the socket.
            return;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Where a connection is between requests; the watchdog's clock depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing in flight and no byte of a next request. `fresh`: no request served yet.
    Waiting { since: Instant, fresh: bool },
    /// Part of a request head has arrived; `since` is when this head's clock started.
    Head { since: Instant },
    /// Requests handed to the router whose responses are not finished. Bytes arriving now
    /// are not timed as a head: they are usually this request's body. (A client pipelining
    /// half a head behind a response therefore gets the idle clock, which is still bounded.)
    Busy { requests: usize },
}

impl Phase {
    fn accepted(now: Instant) -> Self {
        Self::Waiting {
            since: now,
            fresh: true,
        }
    }

    /// Bytes arrived. A new connection's first head is timed from accept, so trickling a byte
    /// just before the deadline does not restart the clock.
    fn on_bytes(self, now: Instant) -> Self {
        match self {
            Self::Waiting { since, fresh: true } => Self::Head { since },
            Self::Waiting { fresh: false, .. } => Self::Head { since: now },
            other => other,
        }
    }

    fn on_request(self) -> Self {
        match self {
            Self::Busy { requests } => Self::Busy {
                requests: requests + 1,
            },
            _ => Self::Busy { requests: 1 },
        }
    }

    fn on_response_done(self, now: Instant) -> Self {
        match self {
            Self::Busy { requests } if requests > 1 => Self::Busy {
                requests: requests - 1,
            },
            _ => Self::Waiting {
                since: now,
                fresh: false,
            },
        }
    }

    /// When the connection is to be closed; `None` while serving (the body read timeout and
    /// the handlers' own deadlines bound that).
    fn deadline(self, limits: &ServeLimits) -> Option<Instant> {
        match self {
            Self::Waiting { since, fresh: true } | Self::Head { since } => {
                Some(since + limits.header_read_timeout)
            }
            Self::Waiting {
                since,
                fresh: false,
            } => Some(since + limits.idle_timeout),
            Self::Busy { .. } => None,
        }
    }

    /// Since when it has been waiting, for eviction; `None` while serving.
    fn waiting_since(self) -> Option<Instant> {
        match self {
            Self::Waiting { since, .. } | Self::Head { since } => Some(since),
            Self::Busy { .. } => None,
        }
    }
}

/// A connection's phase, shared by its socket wrapper, its requests and its watchdog.
struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when the deadline may have moved earlier, or on eviction.
    changed: Notify,
    evicted: AtomicBool,
}

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            phase: Mutex::new(Phase::accepted(now)),
            changed: Notify::new(),
            evicted: AtomicBool::new(false),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // A panic elsewhere cannot leave a `Phase` half-written: it is a Copy value.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, step: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase();
        let next = step(*phase);
        if next != *phase {
            *phase = next;
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn deadline(&self, limits: &ServeLimits) -> Option<Instant> {
        self.phase().deadline(limits)
    }

    fn expired(&self, limits: &ServeLimits, now: Instant) -> bool {
        self.deadline(limits)
            .is_some_and(|deadline| deadline <= now)
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    fn is_busy(&self) -> bool {
        matches!(*self.phase(), Phase::Busy { .. })
    }

    fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }
}

/// The socket, reporting to the watchdog when bytes arrive.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = Instant::now();
            self.activity.update(|phase| phase.on_bytes(now));
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request being served: from the router call until hyper drops the response body, which
/// it does once the body is written (or the connection is gone).
struct Serving(Arc<Activity>);

impl Serving {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.update(Phase::on_request);
        Self(activity)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0.update(|phase| phase.on_response_done(now));
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
struct Tracked {
    body: axum::body::Body,
    _serving: Serving,
}

impl hyper::body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The open connections, by id, for the cap and for eviction. A connection stays in it until
/// its socket is closed, so its size is the number of descriptors held.
#[derive(Clone, Default)]
struct Table(Arc<TableInner>);

#[derive(Default)]
struct TableInner {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    /// Signalled each time a connection closes.
    freed: Notify,
}

#[derive(Debug, PartialEq, Eq)]
enum Room {
    Free,
    /// The longest-waiting connection was just told to close; its slot follows shortly.
    Evicted,
    /// A connection told to close earlier has not closed yet; its slot follows shortly.
    Freeing,
    /// Every connection is serving a request.
    Full,
}

impl Table {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.0.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, id: u64) -> Arc<Activity> {
        let activity = Arc::new(Activity::new(Instant::now()));
        self.open().insert(id, activity.clone());
        activity
    }

    fn remove(&self, id: u64) {
        self.open().remove(&id);
        self.0.freed.notify_one();
    }

    fn has_room(&self, max: usize) -> bool {
        self.open().len() < max
    }

    /// Resolves after some connection has closed (possibly before this was called).
    async fn freed(&self) {
        self.0.freed.notified().await;
    }

    /// Makes room for one more connection under `max`. The scan is linear, but only runs
    /// while the table is full.
    fn make_room(&self, max: usize) -> Room {
        let open = self.open();
        if open.len() < max {
            return Room::Free;
        }
        if open.values().any(|activity| activity.is_evicted()) {
            return Room::Freeing;
        }
        let oldest = open
            .values()
            .filter_map(|activity| Some((activity.phase().waiting_since()?, activity)))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, activity)) => {
                activity.evict();
                Room::Evicted
            }
            None => Room::Full,
        }
    }

    #[cfg(test)]
    fn count(&self, matches: impl Fn(Phase) -> bool) -> usize {
        self.open()
            .values()
            .filter(|activity| matches(*activity.phase()))
            .count()
    }
}

/// Held by a connection task: leaving the table and the gauge happens however it ends.
struct Open {
    table: Table,
    id: u64,
    gauge: IntGauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.table.remove(self.id);
        self.gauge.dec();
    }
}

/// Lets a WARN through at most once per [`WARN_EVERY`], counting the ones held back.
#[derive(Debug, Default)]
struct WarnLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    /// `Some(held back since the last one)` when a WARN may be written now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
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

/// A request held in flight on purpose, for tests of anything that bounds requests.
#[cfg(test)]
pub(crate) mod test_gate {
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    use tokio::sync::{mpsc, watch};

    type Held = Pin<Box<dyn Future<Output = &'static str> + Send>>;

    /// Its handler reports when it runs, then answers `done` once the gate opens.
    pub struct Gate {
        entered_tx: mpsc::UnboundedSender<()>,
        entered: mpsc::UnboundedReceiver<()>,
        open: watch::Sender<bool>,
    }

    impl Gate {
        pub fn new() -> Self {
            let (entered_tx, entered) = mpsc::unbounded_channel();
            Self {
                entered_tx,
                entered,
                open: watch::channel(false).0,
            }
        }

        pub fn handler(&self) -> impl Fn() -> Held + Clone + Send + Sync + 'static {
            let entered = self.entered_tx.clone();
            let open = self.open.subscribe();
            move || {
                let entered = entered.clone();
                let mut open = open.clone();
                Box::pin(async move {
                    let _ = entered.send(());
                    let _ = open.wait_for(|open| *open).await;
                    "done"
                })
            }
        }

        /// Waits until one more request reached the handler (20 s at most, against hangs).
        pub async fn entered(&mut self) {
            let entered = tokio::time::timeout(Duration::from_secs(20), self.entered.recv());
            assert!(matches!(entered.await, Ok(Some(()))), "handler never ran");
        }

        /// Lets every held request, and any later one, answer.
        pub fn open(&self) {
            self.open.send_replace(true);
        }

        /// Opens the gate from elsewhere (`send_replace(true)`).
        pub fn opener(&self) -> watch::Sender<bool> {
            self.open.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

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
                    .arg(
                        "transport::http::serve::tests::serve_in_a_child_with_few_file_descriptors",
                    )
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
            max_connections: usize::try_from(env("SERVE_CHILD_MAX_CONNECTIONS"))
                .unwrap_or(usize::MAX),
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
                .metric("realtime_http_connections_evicted_total")
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
        let mut limiter = WarnLimiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.allow(t0), Some(0));
        assert_eq!(limiter.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(limiter.allow(t0 + WARN_EVERY), Some(2));
        assert_eq!(limiter.allow(t0 + WARN_EVERY), None);
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
}
