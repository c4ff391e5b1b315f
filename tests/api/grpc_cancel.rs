//! A call whose client resets its stream (RST_STREAM CANCEL, as grpc-go sends when
//! Centrifugo's client goes away or its deadline passes) stops: its identity-service call is
//! cancelled and its in-flight slot freed, while a pool take already under way still
//! completes and is recorded.

use std::io::{Read, Write};
use std::time::Duration;

use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, SendStream};
use prost::Message as _;
use serde_json::json;
use tonic::Code;

use crate::fake_identity::Scripted;
use crate::grpc_raw::{framed, grpc_request, h2_connection};
use crate::grpc_support::{connect_outcome, Call, Kind};
use crate::helpers::{eventually, spawn_app_with, TestApp, WINDOW_MS};
use crate::process::{key_prefix, Redis};

/// A connect for `ticket` sent whole on `sender`, left waiting for its answer.
fn start_connect(
    app: &TestApp,
    sender: &mut SendRequest<bytes::Bytes>,
    ticket: &str,
) -> (ResponseFuture, SendStream<bytes::Bytes>) {
    let message = Call::connect(ticket).connect_message().encode_to_vec();
    let (response, mut stream) = sender
        .send_request(grpc_request(app, "Connect", &[]), false)
        .expect("sent");
    // Sent whole (END_STREAM), as grpc-go sends a unary request; the stream can still be
    // reset while the answer is awaited.
    stream
        .send_data(framed(0, &message), true)
        .expect("body sent");
    (response, stream)
}

#[tokio::test]
async fn a_reset_call_cancels_its_validate_call_and_frees_its_inflight_slot() {
    let app = spawn_app_with(|c| {
        c.set("PROXY_MAX_INFLIGHT", "2")
            .set("IDENTITY_VALIDATE_DEADLINE_MS", "20000")
            .set("IDENTITY_PROBE_INTERVAL_MS", "600000");
    })
    .await;
    app.identity.stall(Duration::from_secs(20));
    let mut sender = h2_connection(&app).await;
    let mut held = Vec::new();
    for ticket in ["cancel-1", "cancel-2"] {
        app.identity
            .add_ticket(ticket, Scripted::success("u-cancel"));
        held.push(start_connect(&app, &mut sender, ticket));
    }
    eventually("both connects reach identity-service", async || {
        app.identity.seen().len() >= 2
    })
    .await;
    for (_, stream) in &mut held {
        stream.send_reset(Reason::CANCEL);
    }
    // identity-service sees both calls cancelled, long before its stall ends.
    eventually("identity-service sees the cancellations", async || {
        app.identity.cancelled() == 2
    })
    .await;

    // Both slots are free again: a new connect is served, not answered 111.
    app.identity.answer_normally();
    app.identity
        .add_ticket("cancel-3", Scripted::success("u-cancel"));
    let answer = Call::connect("cancel-3").grpc(&app, Kind::Connect).await;
    assert_eq!(answer["result"]["user"], json!("u-cancel"), "{answer}");
}

/// Sends one inline command to `redis` and returns its first reply line.
fn redis_command(redis: &Redis, command: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", redis.port)).expect("redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .expect("sent");
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).expect("reply");
    String::from_utf8_lossy(&buf[..n]).trim().to_owned()
}

#[tokio::test]
async fn a_pool_take_under_way_when_the_call_is_reset_completes_and_is_recorded() {
    let redis = Redis::start();
    let (url, prefix) = (redis.url(), key_prefix("grpc-cancel"));
    let app = spawn_app_with(|c| {
        c.pool(&["cancel-pool"])
            .set("FALLBACK_LEDGER", "redis")
            .set("REDIS_URL", url.as_str())
            .set("REDIS_KEY_PREFIX", prefix.as_str())
            .set("REDIS_TIMEOUT_MS", "5000");
    })
    .await;
    app.identity.fail_with(Code::Unavailable);
    let opener = Call::connect("cancel-opener")
        .grpc(&app, Kind::Connect)
        .await;
    assert!(opener.get("result").is_none(), "{opener}");
    app.clock.advance(Duration::from_millis(WINDOW_MS + 1));

    // Redis holds every write for a second: the claim is sent and waits there.
    assert_eq!(redis_command(&redis, "CLIENT PAUSE 1000 WRITE"), "+OK");
    let mut sender = h2_connection(&app).await;
    let (_response, mut stream) = start_connect(&app, &mut sender, "cancel-pool");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.send_reset(Reason::CANCEL);

    // The claim Redis makes once it resumes is the connect's: counted and logged as
    // consumed, not a ticket used up by nobody.
    eventually("the consumed ticket is recorded", async || {
        connect_outcome(&app, "fallback_pool_consumed", "grpc").await == 1.0
    })
    .await;
    let again = Call::connect("cancel-pool").grpc(&app, Kind::Connect).await;
    assert!(again.get("result").is_none(), "{again}");
    assert_eq!(
        connect_outcome(&app, "fallback_pool_reused", "grpc").await,
        1.0
    );
}
