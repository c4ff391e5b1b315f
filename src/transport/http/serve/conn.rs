//! One connection's clock. hyper's own header timeout starts as soon as it waits for a head,
//! so it cannot tell a pooled keep-alive connection from a slow head; instead the socket
//! wrapper and the response body record the connection's phase, and a watchdog in the
//! connection's task closes it when its phase's deadline passes, when it is evicted, or on
//! shutdown.
//!
//! The watchdog is not woken by phase changes, which happen several times per request: it
//! checks the phase when its timer fires and re-arms the timer for the phase's deadline, but
//! never further ahead than the shorter of the two timeouts (`Watchdog::step`). A phase change
//! at time `t` sets a deadline of at least `t + step`, and `t` is after the last check, so no
//! deadline can fall before the next check (a new connection's first head keeps the deadline
//! it had from accept, which the first check already aims at): every deadline is kept exactly,
//! and a request costs the watchdog nothing. Only eviction, which must act at once, wakes it.

use std::convert::Infallible;
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower_service::Service as _;

use super::table::{Evictable, Open};
use super::ServeLimits;

/// hyper refuses a smaller buffer: its first read is this large.
pub(super) const MIN_HEADER_BYTES: usize = 8192;

/// One connection: hyper serving `router`, raced against the watchdog and the stop signal.
pub(super) async fn serve_connection(
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

    let step = Watchdog::step(&limits);
    let timer = tokio::time::sleep_until(Watchdog::next_check(
        activity.deadline(&limits),
        Instant::now(),
        step,
    ));
    tokio::pin!(timer);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    // Malformed requests and resets are the client's business, not an operator's.
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = activity.evicting.notified() => {}
            () = timer.as_mut() => {}
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
        let now = Instant::now();
        let deadline = activity.deadline(&limits);
        if deadline.is_some_and(|deadline| deadline <= now) {
            // Dropping the connection closes the socket.
            return;
        }
        timer
            .as_mut()
            .reset(Watchdog::next_check(deadline, now, step));
    }
}

/// When the watchdog looks at a connection's phase next.
pub(super) struct Watchdog;

impl Watchdog {
    /// The longest the watchdog sleeps: no phase change can set a deadline sooner than this
    /// after it happens.
    pub(super) fn step(limits: &ServeLimits) -> Duration {
        limits.header_read_timeout.min(limits.idle_timeout)
    }

    /// The phase's deadline, or `now + step` if that comes first (or there is none).
    pub(super) fn next_check(deadline: Option<Instant>, now: Instant, step: Duration) -> Instant {
        let latest = now + step;
        deadline.map_or(latest, |deadline| deadline.min(latest))
    }
}

/// Where a connection is between requests; the watchdog's clock depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
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
    pub(super) fn accepted(now: Instant) -> Self {
        Self::Waiting {
            since: now,
            fresh: true,
        }
    }

    /// Bytes arrived. A new connection's first head is timed from accept, so trickling a byte
    /// just before the deadline does not restart the clock.
    pub(super) fn on_bytes(self, now: Instant) -> Self {
        match self {
            Self::Waiting { since, fresh: true } => Self::Head { since },
            Self::Waiting { fresh: false, .. } => Self::Head { since: now },
            other => other,
        }
    }

    pub(super) fn on_request(self) -> Self {
        match self {
            Self::Busy { requests } => Self::Busy {
                requests: requests + 1,
            },
            _ => Self::Busy { requests: 1 },
        }
    }

    pub(super) fn on_response_done(self, now: Instant) -> Self {
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
    pub(super) fn deadline(self, limits: &ServeLimits) -> Option<Instant> {
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
    pub(super) fn waiting_since(self) -> Option<Instant> {
        match self {
            Self::Waiting { since, .. } | Self::Head { since } => Some(since),
            Self::Busy { .. } => None,
        }
    }
}

/// A connection's phase, shared by its socket wrapper, its requests and its watchdog.
pub(crate) struct Activity {
    phase: Mutex<Phase>,
    /// Wakes the watchdog on eviction (phase changes need not: see the module doc).
    evicting: Notify,
    evicted: AtomicBool,
}

impl Activity {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            phase: Mutex::new(Phase::accepted(now)),
            evicting: Notify::new(),
            evicted: AtomicBool::new(false),
        }
    }

    pub(super) fn phase(&self) -> MutexGuard<'_, Phase> {
        // A panic elsewhere cannot leave a `Phase` half-written: it is a Copy value.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn update(&self, step: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase();
        *phase = step(*phase);
    }

    /// Bytes arrived. Only a waiting connection's phase changes, so only then is the clock read.
    fn bytes_arrived(&self) {
        let mut phase = self.phase();
        if matches!(*phase, Phase::Waiting { .. }) {
            *phase = phase.on_bytes(Instant::now());
        }
    }

    fn deadline(&self, limits: &ServeLimits) -> Option<Instant> {
        self.phase().deadline(limits)
    }

    fn is_busy(&self) -> bool {
        matches!(*self.phase(), Phase::Busy { .. })
    }
}

impl Evictable for Activity {
    fn waiting_since(&self) -> Option<Instant> {
        self.phase().waiting_since()
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.evicting.notify_one();
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
            self.activity.bytes_arrived();
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
