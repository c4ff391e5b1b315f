//! The gRPC listener's own HTTP/2 loop, on the `h2` crate: unary calls only, which is all
//! Centrifugo's proxy protocol needs.
//!
//! Why not tonic's server: Centrifugo multiplexes every proxy call over one HTTP/2 connection,
//! and hyper runs each stream as a task of its own beside the connection's task; on two worker
//! threads those tasks take h2's per-connection lock from both sides and wake each other
//! across threads (about 3.7 futex calls and 2.3 reactor wake-ups per call, against 2.0 and
//! 0.1 for an HTTP/1.1 call; docs/benchmarks.md). Here a connection's calls run inside the
//! connection's own task, as an HTTP/1.1 connection's do: no lock traffic, no hand-off. The
//! price is that one connection's calls share one core at a time. Each connection runs on a
//! shard (`shard`): a thread of its own with its own identity-service client, so the calls'
//! identity round trips do not wake another thread either.
//!
//! The loop also gives the listener the bounds the HTTP one has: a connection cap
//! (`HTTP_MAX_CONNECTIONS`), a handshake deadline (`HTTP_HEADER_READ_TIMEOUT_MS`), an idle
//! timeout (`HTTP_IDLE_TIMEOUT_MS`), a deadline for a request message
//! (`HTTP_BODY_READ_TIMEOUT_MS`), and a message never buffered or decompressed past
//! `PROXY_MAX_BODY_BYTES` (a larger one is answered 107 whatever its size; `message`). On shutdown it stops accepting and sends
//! GOAWAY; calls in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};
use tokio_rustls::TlsAcceptor;
use tonic::codegen::http::{
    header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode,
};
use tonic::Status;

use super::head::{self, parse_grpc_timeout};
use super::message::{self, Encoding, Message, ACCEPTED_ENCODINGS};
use super::peer::Peer;
use super::shard::Shards;
use super::tls::TlsFiles;
use super::GrpcProxy;
use crate::log_limit::LogLimit;
use crate::transport::http::serve::table::{Open, Room, Table};
use crate::transport::http::serve::ServeLimits;

/// Named once: a name given as a string is parsed and checked on every insert.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
/// The HTTP/2 flow-control windows, per stream and per connection.
const WINDOW: u32 = 1024 * 1024;
/// Streams one connection may have open at once (Centrifugo's calls in flight).
const MAX_STREAMS: u32 = 256;
/// The deadline of a call that carries no `grpc-timeout` (Centrifugo always sends one).
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// One WARN about refused connections or failed accepts at most this often.
const WARN_EVERY: Duration = Duration::from_secs(5);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long a closing connection with no call in flight (evicted, or at shutdown) may take
/// to flush its GOAWAY before it is dropped.
const CLOSED_GRACE: Duration = Duration::from_secs(1);
/// "Never" for a timer that is off (a year; tokio caps sleeps at about two).
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// The bounds of the loop, from the HTTP listener's settings.
#[derive(Debug, Clone, Copy)]
pub struct GrpcLimits {
    pub serve: ServeLimits,
    /// `HTTP_BODY_READ_TIMEOUT_MS`: a request message must arrive within this.
    pub message_timeout: Duration,
    /// `PROXY_MAX_BODY_BYTES`: the largest request message served.
    pub max_message_bytes: usize,
    /// `GRPC_PROXY_MAX_CONNECTION_AGE_S`: a graceful GOAWAY after this (jittered); `None`
    /// keeps connections for as long as they are used.
    pub max_age: Option<Duration>,
    /// `GRPC_PROXY_MAX_CONNECTION_AGE_GRACE_S`: calls in flight at the age GOAWAY may
    /// finish within this.
    pub max_age_grace: Duration,
}

/// `age` jittered by +-10%, as grpc-go's MaxConnectionAge: connections opened together
/// (every Centrifugo node after a deploy) do not all reconnect at the same moment.
fn jittered(age: Duration) -> Duration {
    let mut byte = [0u8; 2];
    // Without randomness, no jitter: the age itself is still right.
    let random = getrandom::fill(&mut byte).map_or(0.5, |()| {
        f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX)
    });
    age.mul_f64(0.9 + 0.2 * random)
}

/// Serves `proxy` on `listener` until `stop` resolves, then stops accepting, sends GOAWAY on
/// every connection and waits for their calls to finish. Dropping the future cuts them.
pub async fn serve(
    listener: TcpListener,
    shards: &Shards<GrpcProxy>,
    mut tls: Option<TlsFiles>,
    limits: GrpcLimits,
    evictions: IntCounter,
    stop: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let table: Table<Peer> = Table::default();
    let mut next_id: u64 = 0;
    let mut refused_warn = LogLimit::new(WARN_EVERY);
    let mut accept_warn = LogLimit::new(WARN_EVERY);
    let max = limits.serve.max_connections;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    match table.make_room(max) {
                        Room::Free => {}
                        room @ (Room::Evicted | Room::Freeing) => {
                            if room == Room::Evicted {
                                evictions.inc();
                            }
                            // As on the HTTP listener: this one waits until the evicted
                            // socket is closed, so descriptors never pass the cap by more
                            // than one.
                            let room = async {
                                while !table.has_room(max) {
                                    table.freed().await;
                                }
                            };
                            tokio::select! {
                                () = &mut stop => break,
                                () = room => {}
                            }
                        }
                        Room::Full => {
                            if let Some(more) = refused_warn.admit(std::time::Instant::now()) {
                                tracing::warn!(
                                    refused_since_last = more,
                                    "gRPC connection refused: HTTP_MAX_CONNECTIONS are open, all with calls in flight"
                                );
                            }
                            continue;
                        }
                    }
                    let _ = socket.set_nodelay(true);
                    // Moved to its shard's reactor: readiness then wakes that thread alone.
                    let Ok(socket) = socket.into_std() else {
                        continue;
                    };
                    next_id += 1;
                    let peer = Arc::new(Peer::new(Instant::now()));
                    table.add(next_id, peer.clone());
                    let open = Open { table: table.clone(), id: next_id, gauge: None };
                    let shard = shards.next();
                    // The files' current certificate: a renewal applies to new connections.
                    let (tls, stop) = (tls.as_mut().map(TlsFiles::acceptor), stop_rx.clone());
                    connections.spawn_on(
                        async move {
                            let _open = open;
                            match TcpStream::from_std(socket) {
                                Ok(socket) => connection(socket, shard.state, &peer, tls, limits, stop).await,
                                Err(e) => tracing::debug!(error = %e, "gRPC connection not registered"),
                            }
                        },
                        &shard.handle,
                    );
                }
                Err(e) => {
                    if let Some(more) = accept_warn.admit(std::time::Instant::now()) {
                        tracing::warn!(error = %e, failed_since_last = more, "gRPC accept failed");
                    }
                    // Out of file descriptors, most likely: give closing connections a moment.
                    sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

async fn connection(
    socket: TcpStream,
    proxy: Arc<GrpcProxy>,
    peer: &Peer,
    tls: Option<TlsAcceptor>,
    limits: GrpcLimits,
    stop: watch::Receiver<bool>,
) {
    match tls {
        None => serve_connection(socket, &proxy, peer, limits, stop).await,
        Some(acceptor) => {
            match timeout(limits.serve.header_read_timeout, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => serve_connection(stream, &proxy, peer, limits, stop).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "gRPC TLS handshake failed"),
                Err(_) => tracing::debug!("gRPC TLS handshake timed out"),
            }
        }
    }
}

/// How long a connection may sit with no call in flight: `HTTP_IDLE_TIMEOUT_MS` once it has
/// made an authenticated call, `HTTP_HEADER_READ_TIMEOUT_MS` before (Centrifugo calls as soon
/// as it connects; a peer that only holds a socket open gets no longer than a slow head).
fn idle_limit(limits: &GrpcLimits, authenticated: bool) -> Duration {
    if authenticated {
        limits.serve.idle_timeout
    } else {
        limits.serve.header_read_timeout
    }
}

async fn serve_connection<T>(
    io: T,
    proxy: &GrpcProxy,
    peer: &Peer,
    limits: GrpcLimits,
    mut stop: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(MAX_STREAMS)
        // h2 itself answers a bare HTTP 431 past this; up to twice the limit the call gets
        // a gRPC status instead (`head`), which Centrifugo's client can report.
        .max_header_list_size(
            u32::try_from(limits.serve.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        )
        // tonic's and hyper's windows: a message of up to 1 MiB needs no WINDOW_UPDATE round
        // trip (at 64 KiB a 65 KB message took 7.4 ms against 1.0 ms for 30 KB). A
        // connection holds at most this much unread request data, and only until its call
        // reads or refuses it.
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        // Resets a client provokes are bounded too (the "rapid reset" attack).
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(Some(1024));
    let mut conn = match timeout(
        limits.serve.header_read_timeout,
        builder.handshake::<_, Bytes>(io),
    )
    .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "gRPC HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("gRPC HTTP/2 handshake timed out");
            return;
        }
    };
    let mut calls = FuturesUnordered::new();
    // Whether any call on this connection has passed authentication: until then the idle
    // limit is the short one.
    let mut authenticated = false;
    // Open: `timer` is the idle deadline (re-armed when the last call ends). Closing (GOAWAY
    // sent): `timer` is the grace after which the connection is dropped, since h2's graceful
    // close waits for the peer's answer to a PING, which a dead or hostile peer never sends.
    let mut closing = false;
    let timer = sleep(idle_limit(&limits, false));
    tokio::pin!(timer);
    // GRPC_PROXY_MAX_CONNECTION_AGE_S: far in the future when off.
    let aged = sleep(limits.max_age.map_or(FAR, jittered));
    tokio::pin!(aged);
    loop {
        if !closing && *stop.borrow() {
            closing = true;
            close_for_shutdown(&mut conn, calls.is_empty(), timer.as_mut(), &limits);
        }
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    if calls.is_empty() {
                        peer.busy();
                    }
                    calls.push(call(proxy, request, respond, limits));
                }
                Some(Err(e)) => {
                    connection_error(proxy, &e);
                    break;
                }
                // The peer closed, or GOAWAY was sent and every stream has finished.
                None => break,
            },
            Some(authed) = calls.next(), if !calls.is_empty() => {
                authenticated |= authed;
                // Finish every call that is ready before h2 next writes: answers that are
                // ready together then leave in one write instead of one write each.
                std::future::poll_fn(|cx| {
                    while let Poll::Ready(Some(authed)) = calls.poll_next_unpin(cx) {
                        authenticated |= authed;
                    }
                    Poll::Ready(())
                })
                .await;
                if calls.is_empty() {
                    let now = Instant::now();
                    peer.idle(now);
                    if !closing {
                        timer.as_mut().reset(now + idle_limit(&limits, authenticated));
                    } else if timer.deadline() > now + CLOSED_GRACE {
                        // Closing and nothing left in flight: a peer that never answers the
                        // GOAWAY's PING holds nothing (shutdown included) past this.
                        timer.as_mut().reset(now + CLOSED_GRACE);
                    }
                }
            }
            () = peer.evicted(), if !closing => {
                // Chosen while idle, to make room under HTTP_MAX_CONNECTIONS: closed at once
                // (GOAWAY without waiting for a PING answer), so the slot frees promptly.
                tracing::debug!("gRPC connection evicted: idle the longest at HTTP_MAX_CONNECTIONS");
                closing = true;
                conn.abrupt_shutdown(Reason::NO_ERROR);
                timer.as_mut().reset(Instant::now() + CLOSED_GRACE);
            }
            () = &mut aged, if !closing => {
                // GRPC_PROXY_MAX_CONNECTION_AGE_S reached: Centrifugo's client opens a new
                // connection (possibly to a new replica) for its next call; the calls in
                // flight get the grace.
                tracing::debug!("gRPC connection closed: GRPC_PROXY_MAX_CONNECTION_AGE_S reached");
                closing = true;
                conn.graceful_shutdown();
                timer.as_mut().reset(Instant::now() + limits.max_age_grace);
            }
            changed = stop.changed(), if !closing => {
                // A closed channel means the listener is gone: stop as for the signal.
                if changed.is_err() {
                    closing = true;
                    close_for_shutdown(&mut conn, calls.is_empty(), timer.as_mut(), &limits);
                }
            }
            () = &mut timer, if closing || calls.is_empty() => {
                if closing {
                    tracing::debug!("gRPC connection dropped: GOAWAY not completed in time");
                    break;
                }
                // Nothing in flight for the idle limit: GOAWAY, with the head timeout as the
                // grace for the peer's answer.
                closing = true;
                conn.graceful_shutdown();
                timer
                    .as_mut()
                    .reset(Instant::now() + limits.serve.header_read_timeout);
            }
        }
    }
}

/// Shutdown: a connection with calls in flight gets a graceful GOAWAY and
/// `SHUTDOWN_TIMEOUT_MS` for them; one with none is closed at once (GOAWAY without waiting
/// for the peer's PING answer), so an idle peer does not hold the exit.
fn close_for_shutdown<T, B>(
    conn: &mut h2::server::Connection<T, B>,
    idle: bool,
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
    limits: &GrpcLimits,
) where
    T: AsyncRead + AsyncWrite + Unpin,
    B: bytes::Buf,
{
    if idle {
        conn.abrupt_shutdown(Reason::NO_ERROR);
        timer.reset(Instant::now() + CLOSED_GRACE);
    } else {
        conn.graceful_shutdown();
        timer.reset(Instant::now() + limits.serve.shutdown_timeout);
    }
}

/// A connection h2 closed on an error: a WARN (rate-limited across the listener) when the
/// peer reset more streams than allowed, a DEBUG line for anything else.
fn connection_error(proxy: &GrpcProxy, e: &h2::Error) {
    if e.reason() == Some(Reason::ENHANCE_YOUR_CALM) {
        if let Some(more) = proxy.warnings.resets() {
            tracing::warn!(
                error = %e,
                closed_since_last = more,
                "gRPC connection closed: too many streams reset"
            );
        }
    } else {
        tracing::debug!(error = %e, "gRPC connection error");
    }
}

/// One call: the method, its deadline, the answer. True when it passed authentication.
async fn call(
    proxy: &GrpcProxy,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    limits: GrpcLimits,
) -> bool {
    let (parts, body) = request.into_parts();
    let method = match head::check(
        &parts.method,
        &parts.uri,
        &parts.headers,
        limits.serve.max_header_bytes,
    ) {
        Ok(method) => method,
        Err(refusal) => {
            let http = if refusal.is_media_type() {
                // Not gRPC at all: the HTTP status the gRPC over HTTP/2 specification asks
                // for, with a grpc-status for a gRPC client that sent the wrong codec.
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            } else {
                StatusCode::OK
            };
            send_status(respond, http, &refusal.status());
            return false;
        }
    };
    let deadline = parts
        .headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(DEFAULT_CALL_TIMEOUT);
    let mut body = Body {
        stream: body,
        encoding: Encoding::of(parts.headers.get(GRPC_ENCODING)),
        limits,
        deadline,
        authenticated: false,
    };
    let work = proxy.dispatch(method, parts.headers, &mut body);
    // A stream the client resets (RST_STREAM: Centrifugo's client gave up, or its deadline
    // passed) drops the call at once: its identity-service call is cancelled too and its
    // in-flight slot freed, instead of running to an answer nobody reads.
    let reset = std::future::poll_fn(|cx| respond.poll_reset(cx));
    let answer = tokio::select! {
        // The call first: no random branch order to draw on every poll of the hot path.
        biased;
        answer = work => answer,
        reason = reset => {
            tracing::debug!(reason = ?reason.ok(), "gRPC call cancelled by the client");
            return body.authenticated;
        }
    };
    send(respond, answer);
    body.authenticated
}

/// A call's request stream, read on demand (after authentication and the in-flight bound).
pub struct Body {
    stream: RecvStream,
    /// `grpc-encoding`: how a message with the compressed flag is to be decoded.
    encoding: Encoding,
    limits: GrpcLimits,
    /// The call's own deadline (`grpc-timeout`).
    deadline: Duration,
    /// Set once the call has passed authentication.
    authenticated: bool,
}

impl Body {
    /// How long the call may take (`grpc-timeout`, 30 s without one).
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The call passed authentication: its connection is Centrifugo's, not a stranger's.
    pub fn authenticated(&mut self) {
        self.authenticated = true;
    }

    /// The one request message, within `HTTP_BODY_READ_TIMEOUT_MS`, buffered and (if
    /// compressed) decompressed only up to `PROXY_MAX_BODY_BYTES`.
    pub async fn message(&mut self) -> Result<Message, Status> {
        let max = self.limits.max_message_bytes;
        match timeout(
            self.limits.message_timeout,
            message::read(&mut self.stream, &self.encoding, max),
        )
        .await
        {
            Ok(read) => read,
            Err(_) => Err(Status::deadline_exceeded(
                "the request message did not arrive within HTTP_BODY_READ_TIMEOUT_MS",
            )),
        }
    }
}

fn grpc_headers() -> Response<()> {
    let mut response = Response::new(());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    // On every answer, trailers-only ones included: a client learns it may compress.
    response.headers_mut().insert(
        GRPC_ACCEPT_ENCODING,
        HeaderValue::from_static(ACCEPTED_ENCODINGS),
    );
    response
}

/// The answer: headers, the message and `grpc-status: 0` trailers; or, for a status, one
/// trailers-only HEADERS frame.
fn send(mut respond: SendResponse<Bytes>, answer: Result<Bytes, Status>) {
    match answer {
        Ok(message) => {
            let Ok(mut stream) = respond.send_response(grpc_headers(), false) else {
                return;
            };
            let mut trailers = HeaderMap::new();
            trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
            // A failure here means the peer reset the stream: nobody is left to answer.
            if stream.send_data(message, false).is_ok() {
                let _ = stream.send_trailers(trailers);
            }
        }
        Err(status) => send_status(respond, StatusCode::OK, &status),
    }
}

/// A trailers-only answer: `status` in the one HEADERS frame, with HTTP status `http`.
fn send_status(mut respond: SendResponse<Bytes>, http: StatusCode, status: &Status) {
    let mut response = grpc_headers();
    *response.status_mut() = http;
    if status.add_header(response.headers_mut()).is_err() {
        response
            .headers_mut()
            .insert(GRPC_STATUS, HeaderValue::from_static("13"));
    }
    let _ = respond.send_response(response, true);
}
