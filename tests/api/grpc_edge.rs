//! The gRPC listener's own bounds: the connection cap it shares with HTTP's setting, idle
//! connections closed with GOAWAY, and requests that are not gRPC.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::Endpoint;

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
async fn connections_past_http_max_connections_are_refused_and_the_open_ones_served() {
    let app = spawn_app_with(|c| {
        c.set("HTTP_MAX_CONNECTIONS", "2");
    })
    .await;
    let mut first = own_connection(&app).await.expect("first connection");
    let mut second = own_connection(&app).await.expect("second connection");
    refresh(&mut first).await.expect("first served");
    refresh(&mut second).await.expect("second served");

    // The third is closed at once: its handshake or its first call fails.
    let third = match own_connection(&app).await {
        Ok(mut client) => refresh(&mut client)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    assert!(third.is_err(), "a third connection was served");

    // The open ones are unaffected; once one closes, there is room again.
    refresh(&mut first).await.expect("first still served");
    drop(second);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(mut client) = own_connection(&app).await {
            if refresh(&mut client).await.is_ok() {
                again = Some(client);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "no room after a connection closed");
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
    let mut raw = TcpStream::connect(("127.0.0.1", app.grpc_port))
        .await
        .expect("connect");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was not closed");
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
