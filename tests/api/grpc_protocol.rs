//! The protocol points grpc-go holds a server to: flow-control windows, a header list over
//! the limit, content types, and an unknown service.

use std::time::Duration;

use prost::Message as _;

use crate::grpc_raw::{framed, grpc_request, h2_connection, raw_call};
use crate::grpc_support::Call;
use crate::helpers::spawn_app;

#[tokio::test]
async fn a_stream_may_send_far_past_64_kib_without_waiting_for_a_window_update() {
    // h2's client buffers at most 400 KiB per stream, so 256 KiB is asked for: four times
    // the 64 KiB a default window allows.
    const WANT: usize = 256 * 1024;
    let app = spawn_app().await;
    let mut sender = h2_connection(&app).await;
    let (_response, mut stream) = sender
        .send_request(grpc_request(&app, "Connect", &[]), false)
        .expect("sent");
    stream.reserve_capacity(WANT);
    // The connection's window arrives in a WINDOW_UPDATE right after the handshake.
    let granted = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(_)) if stream.capacity() >= WANT => return stream.capacity(),
                Some(Ok(_)) => {}
                other => panic!("no capacity: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(
        granted.ok(),
        Some(WANT),
        "h2's 64 KiB default windows are in force"
    );
}

#[tokio::test]
async fn a_header_list_over_http_max_header_bytes_gets_a_grpc_status() {
    let app = spawn_app().await;
    let message = Call::connect("proto-headers")
        .connect_message()
        .encode_to_vec();
    let pad = "p".repeat(20_000);
    let answer = raw_call(
        &app,
        grpc_request(&app, "Connect", &[("x-pad", pad.as_str())]),
        framed(0, &message),
    )
    .await;
    assert_eq!(answer.status.as_u16(), 200, "{answer:?}");
    assert_eq!(answer.grpc_status(), "8", "{answer:?}");
    assert!(
        answer.get("grpc-message").contains("HTTP_MAX_HEADER_BYTES"),
        "{answer:?}"
    );
    assert_eq!(app.identity.calls(), 0);
}

#[tokio::test]
async fn a_wrong_content_type_gets_415_with_a_grpc_status_and_json_grpc_is_refused() {
    let app = spawn_app().await;
    let message = Call::connect("proto-ct").connect_message().encode_to_vec();
    for content_type in ["application/json", "application/grpc+json", "text/plain"] {
        let answer = raw_call(
            &app,
            grpc_request(&app, "Connect", &[("content-type", content_type)]),
            framed(0, &message),
        )
        .await;
        assert_eq!(answer.status.as_u16(), 415, "{content_type}: {answer:?}");
        assert_eq!(answer.grpc_status(), "3", "{content_type}: {answer:?}");
        assert!(
            answer.get("grpc-message").contains("content-type"),
            "{answer:?}"
        );
    }
    assert_eq!(app.identity.calls(), 0);
    // With a codec suffix or parameters protobuf is still served.
    for content_type in ["application/grpc+proto", "application/grpc; charset=utf-8"] {
        let answer = raw_call(
            &app,
            grpc_request(&app, "Refresh", &[("content-type", content_type)]),
            framed(0, &Call::connect("x").refresh_message().encode_to_vec()),
        )
        .await;
        assert_eq!(answer.grpc_status(), "0", "{content_type}: {answer:?}");
    }
}

#[tokio::test]
async fn an_unknown_service_or_method_is_unimplemented_naming_what_was_called() {
    let app = spawn_app().await;
    let mut request = grpc_request(&app, "Connect", &[]);
    *request.uri_mut() = format!("http://127.0.0.1:{}/other.Service/Connect", app.grpc_port)
        .parse()
        .expect("uri");
    let answer = raw_call(&app, request, framed(0, b"")).await;
    assert_eq!(answer.grpc_status(), "12", "{answer:?}");
    assert!(
        answer
            .get("grpc-message")
            .contains("/other.Service/Connect"),
        "{answer:?}"
    );
    let answer = raw_call(&app, grpc_request(&app, "MapPublish", &[]), framed(0, b"")).await;
    assert_eq!(answer.grpc_status(), "12", "{answer:?}");
    assert!(
        answer.get("grpc-message").contains("MapPublish"),
        "{answer:?}"
    );
}
