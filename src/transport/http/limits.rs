//! Bounds on what unauthenticated clients can make the process hold: a request body read
//! limited in size and in time, a cap on proxy requests in flight, and enough file descriptors
//! for the connection cap.
//!
//! The memory bound: a proxy body is read only while holding an in-flight permit (the
//! edge takes the permit before the extractor reads the body), and permits are
//! never queued for, so buffered bodies never exceed `PROXY_MAX_INFLIGHT x PROXY_MAX_BODY_BYTES`
//! (256 x 64 KiB = 16 MiB by default) whatever clients do.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus::{IntCounter, Registry};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::reply_response;
use crate::proxy::Reply;

/// `HTTP_BODY_READ_TIMEOUT_MS` default: the whole body must arrive within this.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_millis(10_000);
/// `PROXY_MAX_INFLIGHT` default: proxy requests being read or processed at once.
pub const DEFAULT_MAX_INFLIGHT: usize = 256;
/// File descriptors kept free beside the connections and in-flight requests: listeners,
/// the identity-service channel, Redis, the OTLP exporter, standard streams, files.
pub const FD_HEADROOM: u64 = 64;

/// Why a body could not be had; each has its own answer (413, 408, 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyReadError {
    #[error("body larger than PROXY_MAX_BODY_BYTES")]
    TooLarge,
    #[error("body not complete within HTTP_BODY_READ_TIMEOUT_MS")]
    TimedOut,
    #[error("body could not be read")]
    Unreadable,
}

/// Reads a whole body, stopping as soon as it passes `max_bytes` (whatever Content-Length
/// said) or when `timeout` has passed since the read began. The timeout covers the whole
/// body, not the gap between chunks, so trickling bytes does not extend it.
pub async fn read_body<B>(
    body: B,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Bytes, BodyReadError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tokio::time::timeout(timeout, Limited::new(body, max_bytes).collect()).await {
        Err(_) => Err(BodyReadError::TimedOut),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BodyReadError::TooLarge)
        }
        Ok(Err(_)) => Err(BodyReadError::Unreadable),
    }
}

/// The answer to a body not complete in time: 408 with Centrifugo's "bad request", and
/// `Connection: close`, since the rest of the body may still be on its way.
pub fn body_timeout_response() -> Response {
    let mut response = reply_response(StatusCode::REQUEST_TIMEOUT, &Reply::<()>::bad_request());
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Centrifugo's "too many requests": temporary, so SDKs retry later.
pub fn overloaded_response() -> Response {
    reply_response(
        StatusCode::TOO_MANY_REQUESTS,
        &Reply::<()>::too_many_requests(),
    )
}

/// The bound on proxy requests in flight (`PROXY_MAX_INFLIGHT`). Past it a request is
/// answered at once: waiting in a queue would hold its connection and, soon, its body.
#[derive(Clone)]
pub struct InflightLimit {
    permits: Arc<Semaphore>,
    rejections: IntCounter,
}

impl InflightLimit {
    /// `max` is clamped to at least 1 (a bound of 0 would refuse every call).
    pub fn new(max: usize, registry: &Registry) -> Self {
        let rejections = IntCounter::new(
            "realtime_proxy_overload_rejections_total",
            "Proxy calls answered 429 because PROXY_MAX_INFLIGHT were in flight.",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(rejections.clone()))
            .expect("each metric is registered once");
        Self {
            permits: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            rejections,
        }
    }

    /// A slot, held until the permit is dropped; `None` (and counted) when all are taken.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.rejections.inc();
        }
        permit
    }
}

/// The soft open-file limit before and after [`raise_open_file_limit`]; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    pub before: Option<u64>,
    pub after: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: 1024, a common soft default, is far
/// below what `HTTP_MAX_CONNECTIONS` asks for, and running out stops every new connection,
/// health checks included.
pub fn raise_open_file_limit() -> io::Result<OpenFileLimit> {
    let current = getrlimit(Resource::Nofile);
    if let Some(raised) = raised(&current) {
        setrlimit(Resource::Nofile, raised).map_err(io::Error::from)?;
    }
    Ok(OpenFileLimit {
        before: current.current,
        after: getrlimit(Resource::Nofile).current,
    })
}

/// The limit to set, if the soft one is below the hard one.
fn raised(limit: &Rlimit) -> Option<Rlimit> {
    let below_hard = match (limit.current, limit.maximum) {
        (Some(soft), Some(hard)) => soft < hard,
        (Some(_), None) => true,
        (None, _) => false,
    };
    below_hard.then_some(Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    })
}

/// The most connections (summed over every listener) that fit under `open_files` next to
/// `max_inflight` requests, each of which may hold an outgoing connection (an rpc backend),
/// and [`FD_HEADROOM`]. `None` when there is no limit.
pub fn max_connections_within(open_files: Option<u64>, max_inflight: usize) -> Option<usize> {
    let limit = open_files?;
    let reserved = (max_inflight as u64).saturating_add(FD_HEADROOM);
    Some(usize::try_from(limit.saturating_sub(reserved)).unwrap_or(usize::MAX))
}

/// Whether `connections` (summed over every listener) fit under `open_files`.
pub fn connections_fit(connections: usize, max_inflight: usize, open_files: Option<u64>) -> bool {
    max_connections_within(open_files, max_inflight).is_none_or(|most| connections <= most)
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::extract::Request;
    use axum::routing::post;
    use axum::Router;
    use http_body::Frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    use super::super::serve::{serve, ServeLimits, ServeMetrics};
    use super::*;

    const HANG_GUARD: Duration = Duration::from_secs(20);

    /// A body fed by the test, chunk by chunk; it ends when the sender is dropped.
    struct Fed(mpsc::UnboundedReceiver<Result<Bytes, io::Error>>);

    impl http_body::Body for Fed {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| c.map(Frame::data)))
        }
    }

    fn fed() -> (mpsc::UnboundedSender<Result<Bytes, io::Error>>, Fed) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Fed(rx))
    }

    async fn body_of(response: Response) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn a_body_is_read_whole_within_its_limits() {
        let (tx, body) = fed();
        tx.send(Ok(Bytes::from_static(b"{\"a\":"))).expect("send");
        tx.send(Ok(Bytes::from_static(b"1}"))).expect("send");
        drop(tx);
        let bytes = read_body(body, 7, HANG_GUARD).await;
        assert_eq!(bytes.as_deref(), Ok(&b"{\"a\":1}"[..]));
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_too_large() {
        let (tx, body) = fed();
        tx.send(Ok(Bytes::from_static(b"12345678"))).expect("send");
        // The sender stays open: the limit, not the end of the body, stops the read.
        let result = read_body(body, 7, HANG_GUARD).await;
        assert_eq!(result, Err(BodyReadError::TooLarge));
        drop(tx);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let (tx, body) = fed();
        tx.send(Ok(Bytes::from_static(b"{\"a\""))).expect("send");
        let result = read_body(body, 1024, Duration::from_millis(100)).await;
        assert_eq!(result, Err(BodyReadError::TimedOut));
        drop(tx);
    }

    #[tokio::test]
    async fn a_failing_body_is_unreadable() {
        let (tx, body) = fed();
        tx.send(Err(io::Error::other("reset"))).expect("send");
        let result = read_body(body, 1024, HANG_GUARD).await;
        assert_eq!(result, Err(BodyReadError::Unreadable));
    }

    #[tokio::test]
    async fn the_timeout_answer_is_a_408_bad_request_that_closes_the_connection() {
        let response = body_timeout_response();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert_eq!(
            body_of(response).await,
            r#"{"error":{"code":107,"message":"bad request"}}"#
        );
    }

    #[tokio::test]
    async fn the_overload_answer_is_a_temporary_429() {
        let response = overloaded_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            body_of(response).await,
            r#"{"error":{"code":111,"message":"too many requests","temporary":true}}"#
        );
    }

    /// Over a real connection: a stalled body gets the 408, then the connection closes.
    #[tokio::test]
    async fn a_stalled_body_is_answered_408_and_its_connection_closed() {
        let router = Router::new().route(
            "/",
            post(|request: Request| async move {
                match read_body(request.into_body(), 1024, Duration::from_millis(200)).await {
                    Err(BodyReadError::TimedOut) => body_timeout_response(),
                    other => panic!("expected a timeout, got {other:?}"),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            router,
            ServeLimits::default(),
            ServeMetrics::new(&Registry::new()),
            async {
                let _ = stopped.await;
            },
        ));
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"a\":")
            .await
            .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(HANG_GUARD, stream.read_to_end(&mut answer))
            .await
            .expect("the connection was closed")
            .expect("read");
        let answer = String::from_utf8(answer).expect("utf-8");
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"));
        assert!(answer.ends_with(r#"{"error":{"code":107,"message":"bad request"}}"#));
        let _ = stop.send(());
        let _ = server.await;
    }

    #[test]
    fn a_permit_is_released_when_dropped() {
        let limit = InflightLimit::new(2, &Registry::new());
        let a = limit.try_acquire();
        let b = limit.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(limit.try_acquire().is_none());
        drop(a);
        assert!(limit.try_acquire().is_some());
        assert_eq!(limit.rejections.get(), 1);
    }

    #[test]
    fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
        let soft_below = Rlimit {
            current: Some(1024),
            maximum: Some(524_288),
        };
        let raised_to = raised(&soft_below).expect("raised");
        assert_eq!(raised_to.current, Some(524_288));
        assert_eq!(raised_to.maximum, Some(524_288));
        let at_hard = Rlimit {
            current: Some(4096),
            maximum: Some(4096),
        };
        assert!(raised(&at_hard).is_none());
        let unlimited = Rlimit {
            current: None,
            maximum: None,
        };
        assert!(raised(&unlimited).is_none());

        // And for real: raising only ever goes up to the hard limit, so it is safe here.
        let limit = raise_open_file_limit().expect("raise");
        assert_eq!(limit.after, getrlimit(Resource::Nofile).maximum);
        assert!(limit.after >= limit.before || limit.after.is_none());
    }

    #[test]
    fn connections_must_fit_beside_inflight_requests_and_headroom() {
        assert_eq!(
            max_connections_within(Some(1024), 256),
            Some(1024 - 256 - 64)
        );
        assert!(!connections_fit(4096, 256, Some(1024)));
        assert!(connections_fit(4096, 256, Some(4096 + 256 + 64)));
        assert!(!connections_fit(4096, 256, Some(4096 + 256 + 63)));
        assert!(connections_fit(usize::MAX, 256, None));
        assert_eq!(max_connections_within(Some(10), 256), Some(0));
    }
}
