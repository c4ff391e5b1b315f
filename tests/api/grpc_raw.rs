//! Hand-made gRPC calls over a raw HTTP/2 connection (the `h2` client), for what tonic's
//! client will not send: a chosen compressed flag and `grpc-encoding`, a wrong content type,
//! a reset stream.

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codegen::http::{HeaderMap, Request, StatusCode};

use crate::helpers::{TestApp, SECRET};
use realtime_service::transport::grpc::SECRET_METADATA;

/// What came back: the HTTP status, the headers and trailers in one map, the DATA bytes.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub data: Bytes,
}

impl RawAnswer {
    /// A header or trailer as text ("" when absent).
    pub fn get(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// `grpc-status`, from the trailers or a trailers-only answer.
    pub fn grpc_status(&self) -> &str {
        self.get("grpc-status")
    }
}

/// An HTTP/2 connection to the app's gRPC listener.
pub async fn h2_connection(app: &TestApp) -> SendRequest<Bytes> {
    let socket = TcpStream::connect(("127.0.0.1", app.grpc_port))
        .await
        .expect("connect");
    let (sender, connection) = h2::client::handshake(socket).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

/// A request for `method` of the proxy service with the secret, `application/grpc` and
/// `extra` headers (which replace those of the same name).
pub fn grpc_request(app: &TestApp, method: &str, extra: &[(&str, &str)]) -> Request<()> {
    let mut request = Request::post(format!(
        "http://127.0.0.1:{}/centrifugal.centrifugo.proxy.CentrifugoProxy/{method}",
        app.grpc_port
    ))
    .body(())
    .expect("request");
    let headers = request.headers_mut();
    for (name, value) in [
        ("content-type", "application/grpc"),
        (SECRET_METADATA, SECRET),
    ]
    .iter()
    .chain(extra)
    {
        headers.insert(
            tonic::codegen::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    request
}

/// `payload` behind the 5-byte prefix with the compressed `flag`.
pub fn framed(flag: u8, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(flag);
    buf.put_u32(u32::try_from(payload.len()).expect("small"));
    buf.put_slice(payload);
    buf.freeze()
}

/// Sends `request` with `body` on a connection of its own and reads the whole answer.
pub async fn raw_call(app: &TestApp, request: Request<()>, body: Bytes) -> RawAnswer {
    let mut sender = h2_connection(app).await;
    let (response, mut stream) = sender.send_request(request, false).expect("sent");
    stream.send_data(body, true).expect("body sent");
    let response = response.await.expect("a response");
    let (parts, mut recv) = response.into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let mut headers = parts.headers;
    if let Some(trailers) = recv.trailers().await.expect("trailers") {
        headers.extend(trailers);
    }
    RawAnswer {
        status: parts.status,
        headers,
        data: data.freeze(),
    }
}

/// A raw connection that sends the HTTP/2 preface and an empty SETTINGS frame, then nothing.
pub async fn preface_only(app: &TestApp) -> TcpStream {
    let mut raw = TcpStream::connect(("127.0.0.1", app.grpc_port))
        .await
        .expect("connect");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    raw
}

/// Everything `raw` receives until the server closes it, or `None` if it is still open
/// after `within`.
pub async fn closed_within(raw: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| seen)
}
