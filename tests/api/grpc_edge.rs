//! The gRPC listener's own bounds: the connection cap it shares with HTTP's setting, idle
//! connections closed with GOAWAY, and requests that are not gRPC.

use std::time::Duration;

use tokio::net::TcpStream;
use tonic::transport::Endpoint;

use crate::grpc_raw::{closed_within, preface_only};
use crate::grpc_support::{signed, Body, Call};
use crate::helpers::{spawn_app_with, TestApp};
use realtime_service::transport::grpc::proto::centrifugo_proxy_client::CentrifugoProxyClient;

/// A client on a connection of its own (tonic shares nothing between `connect` calls).
async fn own_connection(
    app: &TestApp,
) -> Result<CentrifugoProxyClient<tonic::transport::Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{}", app.grpc_port))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2));
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    Ok(CentrifugoProxyClient::new(channel))
}

async fn refresh(
    client: &mut CentrifugoProxyClient<tonic::transport::Channel>,
) -> Result<serde_json::Value, tonic::Status> {
    let response = client
        .refresh(signed(Call::connect("edge").refresh_message()))
        .await?;
    Ok(response.into_inner().body())
}

#[tokio::test]
async fn at_http_max_connections_the_longest_idle_connection_makes_room() {
    let app = spawn_app_with(|c| {
        c.set("HTTP_MAX_CONNECTIONS", "3");
    })
    .await;
    // Three peers that hold a connection open and never call fill the cap.
    let mut oldest = preface_only(&app).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut idle = vec![preface_only(&app).await, preface_only(&app).await];
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Centrifugo still gets in: the connection idle the longest is closed for it.
    let mut client = own_connection(&app).await.expect("a connection");
    refresh(&mut client).await.expect("served at the cap");
    let seen = closed_within(&mut oldest, Duration::from_secs(5)).await;
    assert!(
        seen.is_some_and(|seen| frame_types(&seen).contains(&7)),
        "the oldest idle connection was not closed with GOAWAY"
    );
    for raw in &mut idle {
        assert!(closed_within(raw, Duration::from_millis(100))
            .await
            .is_none());
    }
    assert_eq!(
        app.metric("realtime_http_connections_evicted_total{transport=\"grpc\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn at_http_max_connections_with_every_connection_busy_a_new_one_is_refused() {
    let app = spawn_app_with(|c| {
        c.set("HTTP_MAX_CONNECTIONS", "2")
            .set("IDENTITY_VALIDATE_DEADLINE_MS", "10000");
    })
    .await;
    app.identity.stall(Duration::from_millis(1500));
    let mut busy = tokio::task::JoinSet::new();
    for ticket in ["edge-busy-1", "edge-busy-2"] {
        app.identity
            .add_ticket(ticket, crate::fake_identity::Scripted::success("u-busy"));
        let mut client = own_connection(&app).await.expect("a connection");
        busy.spawn(async move {
            client
                .connect(signed(Call::connect(ticket).connect_message()))
                .await
                .map(|r| r.into_inner().body())
        });
    }
    crate::helpers::eventually("both connects in flight", async || {
        app.identity.seen().len() >= 2
    })
    .await;
    let third = match own_connection(&app).await {
        Ok(mut client) => refresh(&mut client)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    assert!(third.is_err(), "a third connection was served");
    while let Some(answer) = busy.join_next().await {
        let answer = answer.expect("task").expect("status OK");
        assert_eq!(answer["result"]["user"], "u-busy", "{answer}");
    }
    assert_eq!(
        app.metric("realtime_http_connections_evicted_total{transport=\"grpc\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_connection_without_an_authenticated_call_gets_the_short_idle_timeout() {
    let app = spawn_app_with(|c| {
        c.set("HTTP_IDLE_TIMEOUT_MS", "60000")
            .set("HTTP_HEADER_READ_TIMEOUT_MS", "300");
    })
    .await;
    // Nothing after the preface: GOAWAY after the head timeout, not the idle timeout.
    let mut raw = preface_only(&app).await;
    let seen = closed_within(&mut raw, Duration::from_secs(5))
        .await
        .expect("closed long before HTTP_IDLE_TIMEOUT_MS");
    assert!(frame_types(&seen).contains(&7), "no GOAWAY in {seen:?}");

    // Only unauthenticated calls: the same.
    let mut sender = crate::grpc_raw::h2_connection(&app).await;
    let wrong = crate::grpc_raw::grpc_request(
        &app,
        "Refresh",
        &[(realtime_service::transport::grpc::SECRET_METADATA, "wrong")],
    );
    let (response, _) = sender.send_request(wrong, true).expect("sent");
    assert_eq!(response.await.expect("answered").status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still_open = match sender.clone().ready().await {
        Ok(mut ready) => ready
            .send_request(crate::grpc_raw::grpc_request(&app, "Refresh", &[]), true)
            .is_ok(),
        Err(_) => false,
    };
    assert!(!still_open, "the unauthenticated connection is still open");

    // An authenticated call earns the long idle timeout: the same connection serves again.
    let mut sender = crate::grpc_raw::h2_connection(&app).await;
    let message = prost::Message::encode_to_vec(&Call::connect("edge").refresh_message());
    let request = crate::grpc_raw::grpc_request(&app, "Refresh", &[]);
    let (response, mut body) = sender.send_request(request, false).expect("sent");
    body.send_data(crate::grpc_raw::framed(0, &message), true)
        .expect("body");
    assert_eq!(response.await.expect("answered").status().as_u16(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let request = crate::grpc_raw::grpc_request(&app, "Refresh", &[]);
    let mut sender = sender.ready().await.expect("still open");
    let (response, mut body) = sender.send_request(request, false).expect("sent again");
    body.send_data(crate::grpc_raw::framed(0, &message), true)
        .expect("body");
    assert_eq!(response.await.expect("answered").status().as_u16(), 200);
}

#[tokio::test]
async fn an_idle_connection_gets_goaway_and_the_client_reconnects() {
    let app = spawn_app_with(|c| {
        c.set("HTTP_IDLE_TIMEOUT_MS", "200")
            .set("HTTP_HEADER_READ_TIMEOUT_MS", "300");
    })
    .await;
    let mut client = own_connection(&app).await.expect("connection");
    refresh(&mut client).await.expect("served");

    // A raw HTTP/2 connection that sends nothing after the preface (and never answers the
    // PING of a graceful close) gets GOAWAY, then is dropped after the grace.
    let mut raw = preface_only(&app).await;
    let seen = closed_within(&mut raw, Duration::from_secs(5))
        .await
        .expect("the idle connection was not closed");
    // A GOAWAY frame (type 7) came before the close.
    assert!(frame_types(&seen).contains(&7), "no GOAWAY in {seen:?}");

    // tonic's client reconnects after the GOAWAY on its own idle connection.
    tokio::time::sleep(Duration::from_millis(400)).await;
    refresh(&mut client)
        .await
        .expect("served after reconnecting");
}

/// The frame types in a server's byte stream (9-byte headers, then payloads).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

#[tokio::test]
async fn a_request_that_is_not_grpc_gets_415_and_reaches_nothing() {
    let app = spawn_app_with(|_| {}).await;
    // A JSON POST over HTTP/2 with prior knowledge, as `curl --http2-prior-knowledge` sends it.
    let socket = TcpStream::connect(("127.0.0.1", app.grpc_port))
        .await
        .expect("connect");
    let (mut sender, connection) = h2::client::handshake(socket).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = tonic::codegen::http::Request::post(format!(
        "http://127.0.0.1:{}/centrifugal.centrifugo.proxy.CentrifugoProxy/Connect",
        app.grpc_port
    ))
    .header("content-type", "application/json")
    .body(())
    .expect("request");
    let (response, mut body) = sender.send_request(request, false).expect("sent");
    body.send_data(bytes::Bytes::from_static(b"{}"), true)
        .expect("body sent");
    let response = response.await.expect("a response");
    assert_eq!(response.status().as_u16(), 415);
    assert_eq!(app.identity.calls(), 0);
}

/// Log lines written to memory, for a test's own subscriber.
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// Captures what this thread logs until the guard drops. An app started meanwhile logs
    /// here too: its gRPC shards log where the thread that starts them does.
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let lines = Self::default();
        let writer = lines.clone();
        let guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        );
        (lines, guard)
    }

    fn count(&self, text: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(text)
            .count()
    }
}

#[tokio::test]
async fn unauthenticated_calls_are_all_counted_and_logged_at_most_once_per_interval() {
    let (lines, _logs) = Lines::capture();
    let app = spawn_app_with(|_| {}).await;
    let mut client = app.grpc();
    for _ in 0..40 {
        let answer = crate::grpc_support::Call::connect("edge")
            .grpc_via(&mut client, crate::grpc_support::Kind::Refresh, &["wrong"])
            .await
            .expect("status OK");
        assert_eq!(answer["disconnect"]["code"], 4401, "{answer}");
    }
    assert_eq!(
        app.metric("realtime_proxy_signature_rejections_total")
            .await,
        40.0
    );
    assert_eq!(lines.count("request authentication failed"), 1);
}

#[tokio::test]
async fn connections_closed_for_rapid_resets_are_logged_at_most_once_per_interval() {
    let (lines, _logs) = Lines::capture();
    let app = spawn_app_with(|_| {}).await;
    for _ in 0..3 {
        let sender = crate::grpc_raw::h2_connection(&app).await;
        // Streams opened and reset at once, faster than they are accepted.
        for _ in 0..200 {
            let Ok(mut ready) = sender.clone().ready().await else {
                break;
            };
            let request = crate::grpc_raw::grpc_request(&app, "Refresh", &[]);
            let Ok((_, mut stream)) = ready.send_request(request, false) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
        }
        crate::helpers::eventually("the connection is closed", async || {
            sender.clone().ready().await.is_err()
        })
        .await;
    }
    assert_eq!(
        lines.count("gRPC connection closed: too many streams reset"),
        1
    );
}
