//! gzip-compressed request messages, as Centrifugo sends every one with `grpc.compression:
//! true` (grpc-go compresses however small the message), and the statuses for what cannot
//! be decoded.

use std::io::Write;

use flate2::write::GzEncoder;
use prost::Message as _;
use serde_json::json;
use tonic::codec::CompressionEncoding;

use crate::fake_identity::Scripted;
use crate::grpc_raw::{framed, grpc_request, raw_call};
use crate::grpc_support::{connect_message_of_len, one_of_each, signed, Body, Call, Kind};
use crate::helpers::{spawn_app, spawn_app_with, SECRET};
use crate::replies::bad_request;
use realtime_service::transport::grpc::proto;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("in memory");
    encoder.finish().expect("in memory")
}

#[tokio::test]
async fn every_call_gzipped_as_grpc_go_sends_it_is_answered_as_over_http() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("gzip-grpc", Scripted::success("u-gzip"));
    app.identity
        .add_ticket("gzip-http", Scripted::success("u-gzip"));
    let mut compressing = app.grpc().send_compressed(CompressionEncoding::Gzip);
    let over_http = one_of_each("gzip-http", "u-gzip");
    for ((kind, call), (_, http_call)) in one_of_each("gzip-grpc", "u-gzip")
        .into_iter()
        .zip(over_http)
    {
        let answer = call
            .grpc_via(&mut compressing, kind, &[SECRET])
            .await
            .unwrap_or_else(|status| panic!("{kind:?}: status {status:?}"));
        let http = http_call.http(&app, kind).await;
        assert_eq!(answer, http.json(), "{kind:?}");
        // Decisions, not a refused message (no RPC_ROUTES here: the rpc finds no method).
        let want = if kind == Kind::Rpc { "error" } else { "result" };
        assert!(answer.get(want).is_some(), "{kind:?}: {answer}");
    }
    assert_eq!(app.identity.calls(), 2);
}

#[tokio::test]
async fn a_3_kb_gzipped_connect_is_served_and_answers_advertise_gzip() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("gzip-3kb", Scripted::success("u-gzip3"));
    let message = connect_message_of_len("gzip-3kb", 3 * 1024);
    let response = app
        .grpc()
        .send_compressed(CompressionEncoding::Gzip)
        .connect(signed(message))
        .await
        .expect("status OK");
    let accepted = response
        .metadata()
        .get("grpc-accept-encoding")
        .map(|v| v.to_str().expect("ascii").to_owned());
    assert_eq!(accepted.as_deref(), Some("gzip"));
    // Answered uncompressed: no grpc-encoding on the answer.
    assert!(response.metadata().get("grpc-encoding").is_none());
    assert_eq!(
        response.into_inner().body()["result"]["user"],
        json!("u-gzip3")
    );
}

#[tokio::test]
async fn a_gzip_bomb_is_a_bad_request_like_an_oversized_message() {
    let app = spawn_app_with(|c| {
        c.set("PROXY_MAX_BODY_BYTES", "1024");
    })
    .await;
    // 256 KiB once decompressed, a few hundred bytes on the wire: under the limit as sent.
    let bomb = connect_message_of_len("gzip-bomb", 256 * 1024);
    assert!(gzip(&bomb.encode_to_vec()).len() < 1024);
    let response = app
        .grpc()
        .send_compressed(CompressionEncoding::Gzip)
        .connect(signed(bomb))
        .await
        .expect("status OK");
    assert_eq!(response.into_inner().body(), bad_request());
    assert_eq!(app.identity.calls(), 0);

    // Exactly the limit once decompressed is served.
    app.identity
        .add_ticket("gzip-at", Scripted::success("u-gzipat"));
    let at = connect_message_of_len("gzip-at", 1024);
    let response = app
        .grpc()
        .send_compressed(CompressionEncoding::Gzip)
        .connect(signed(at))
        .await
        .expect("status OK");
    assert_eq!(
        response.into_inner().body()["result"]["user"],
        json!("u-gzipat")
    );
}

#[tokio::test]
async fn a_compressed_message_the_call_cannot_decode_gets_the_protocols_status() {
    let app = spawn_app().await;
    let message = Call::connect("gzip-never")
        .connect_message()
        .encode_to_vec();
    let gzipped = gzip(&message);

    // Another encoding with the flag set: UNIMPLEMENTED, naming what is accepted.
    let answer = raw_call(
        &app,
        grpc_request(&app, "Connect", &[("grpc-encoding", "br")]),
        framed(1, &gzipped),
    )
    .await;
    assert_eq!(answer.status.as_u16(), 200);
    assert_eq!(answer.grpc_status(), "12", "{answer:?}");
    assert_eq!(answer.get("grpc-accept-encoding"), "gzip");

    // The flag without grpc-encoding, or bytes that are not gzip: INTERNAL.
    for (encoding, payload) in [(None, &gzipped), (Some("gzip"), &message)] {
        let extra: Vec<(&str, &str)> = encoding.map(|e| ("grpc-encoding", e)).into_iter().collect();
        let answer = raw_call(
            &app,
            grpc_request(&app, "Connect", &extra),
            framed(1, payload),
        )
        .await;
        assert_eq!(answer.grpc_status(), "13", "{encoding:?}: {answer:?}");
    }
    assert_eq!(app.identity.calls(), 0);

    // grpc-encoding: gzip with the flag clear is a plain message, served.
    app.identity
        .add_ticket("gzip-plain", Scripted::success("u-gzplain"));
    let plain = Call::connect("gzip-plain")
        .connect_message()
        .encode_to_vec();
    let answer = raw_call(
        &app,
        grpc_request(&app, "Connect", &[("grpc-encoding", "gzip")]),
        framed(0, &plain),
    )
    .await;
    assert_eq!(answer.grpc_status(), "0", "{answer:?}");
    let response = proto::ConnectResponse::decode(&answer.data[5..]).expect("a response message");
    assert_eq!(response.body()["result"]["user"], json!("u-gzplain"));
}
