//! The edge under abuse (issue 9 §1), in process: slow heads and bodies closed by their
//! timeouts, ambiguous JSON refused on every route and both transports, identity-service
//! dropping a call mid-way answered the temporary 503, and `PROXY_MAX_INFLIGHT` answering 111 at once.
//!
//! The abuse that needs a process of its own (memory, open files, SIGTERM) is in
//! `abuse_process.rs`.

use std::time::Duration;

use realtime_service::transport::http::auth::{sign, SIGNATURE_HEADER};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fake_identity::Scripted;
use crate::grpc_support::{Call, Kind};
use crate::helpers::{connect_body, eventually, spawn_app_with, TestApp, SECRET};
use crate::proxies_edge::assert_bad_request_on_every_route;
use crate::proxies_support::publish_raw;
use crate::replies::{bad_request, default_meta, unavailable};

/// Liveness bound for anything that waits on the server: far above every timeout set here.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

/// A probe interval long enough that only requests move the outage detector.
const NO_PROBE: &str = "600000";

pub fn overloaded() -> Value {
    json!({"error":{"code":111,"message":"too many requests","temporary":true}})
}

pub async fn guard<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no progress within {HANG_GUARD:?}"))
}

/// Everything the server sends until it closes the connection (a reset counts as closed).
pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    guard("the server closes the connection", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    received
}

/// An HTTP/1.1 response read off the wire: status, lower-cased headers, body.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn parse(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {head:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// A signed connect for `ticket`, from a spawned task (a `TestApp` cannot be moved there).
async fn connect_from(http: &reqwest::Client, address: &str, ticket: &str) -> (u16, Value) {
    let body = connect_body(ticket);
    let signature = sign(SECRET.as_bytes(), body.as_bytes());
    let response = http
        .post(format!("{address}/centrifugo/connect"))
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, json)
}

async fn open(app: &TestApp) -> TcpStream {
    TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect")
}

/// The head of a signed connect for `body`, announcing all of it.
fn signed_head(body: &str) -> String {
    let signature = sign(SECRET.as_bytes(), body.as_bytes());
    format!(
        "POST /centrifugo/connect HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         {SIGNATURE_HEADER}: {signature}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
}

#[tokio::test]
async fn a_head_that_never_ends_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|c| {
        c.set("HTTP_HEADER_READ_TIMEOUT_MS", "200");
    })
    .await;
    let mut stream = open(&app).await;
    stream
        .write_all(b"POST /centrifugo/connect HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
        .await
        .expect("write");
    // Closed without an answer: nothing of a request arrived to answer.
    assert_eq!(read_until_closed(&mut stream).await, b"");
    app.health().await;
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_the_connection_closed() {
    let app = spawn_app_with(|c| {
        c.set("HTTP_BODY_READ_TIMEOUT_MS", "200");
    })
    .await;
    let body = connect_body("abuse-stalled-body");
    let mut stream = open(&app).await;
    let half = &body.as_bytes()[..body.len() / 2];
    stream
        .write_all(signed_head(&body).as_bytes())
        .await
        .expect("write head");
    stream.write_all(half).await.expect("write half the body");
    let response = RawResponse::parse(&read_until_closed(&mut stream).await);
    assert_eq!(response.status, 408, "{}", response.body);
    assert_eq!(response.json(), bad_request());
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        app.identity.seen().is_empty(),
        "an incomplete body reached identity-service"
    );
}

#[tokio::test]
async fn a_chunked_body_trickled_below_the_limit_is_cut_by_the_body_timeout() {
    let app = spawn_app_with(|c| {
        c.set("HTTP_BODY_READ_TIMEOUT_MS", "300");
    })
    .await;
    let mut stream = open(&app).await;
    let head = format!(
        "POST /centrifugo/connect HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         {SIGNATURE_HEADER}: {}\r\ntransfer-encoding: chunked\r\n\r\n",
        "0".repeat(64)
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    // One byte every 20 ms, far below PROXY_MAX_BODY_BYTES: only the timeout can end it.
    let trickle = async {
        for _ in 0..1000 {
            if stream.write_all(b"1\r\n \r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Stop once the server has answered; the answer stays in the socket buffer.
            let mut probe = [0u8; 1];
            if stream.peek(&mut probe).await.is_ok_and(|n| n > 0) {
                break;
            }
        }
    };
    guard("the trickled body is answered", trickle).await;
    let response = RawResponse::parse(&read_until_closed(&mut stream).await);
    assert_eq!(response.status, 408, "{}", response.body);
    assert_eq!(response.json(), bad_request());
    assert_eq!(response.header("connection"), Some("close"));
}

#[tokio::test]
async fn duplicate_token_keys_are_refused_over_http_and_grpc() {
    let app = spawn_app_with(|_| {}).await;
    for ticket in ["abuse-dup-first", "abuse-dup-second"] {
        app.identity.add_ticket(ticket, Scripted::success("u-dup"));
    }
    let data = r#"{"token":"abuse-dup-first","token":"abuse-dup-second"}"#;
    let body = format!(
        r#"{{"client":"c","transport":"websocket","protocol":"json","encoding":"json","data":{data}}}"#
    );
    app.post_signed("connect", &body)
        .await
        .assert(400, bad_request());
    // The same key written with an escape is the same key.
    let escaped = body.replace(
        r#""token":"abuse-dup-second""#,
        r#""t\u006fken":"abuse-dup-second""#,
    );
    app.post_signed("connect", &escaped)
        .await
        .assert(400, bad_request());
    // gRPC carries `data` as bytes, checked by the connect data parser.
    let grpc = Call::default().json(data).grpc(&app, Kind::Connect).await;
    assert_eq!(grpc, bad_request());
    let binary = Call::default()
        .binary(data.as_bytes())
        .grpc(&app, Kind::Connect)
        .await;
    assert_eq!(binary, bad_request());
    assert!(
        app.identity.seen().is_empty(),
        "an ambiguous ticket reached identity-service"
    );
    // The tickets are still unused: one unambiguous connect is accepted.
    assert_eq!(app.connect("abuse-dup-first").await.status, 200);
}

#[tokio::test]
async fn an_overflowing_number_is_refused_alike_on_connect_and_publish() {
    let app = spawn_app_with(|_| {}).await;
    let meta = default_meta("u-big");
    let connect = r#"{"client":"c","transport":"websocket","protocol":"json","encoding":"json","data":{"token":"abuse-big","n":1e999999}}"#.to_owned();
    let publish = publish_raw("u-big", &meta, "chat:room", r#"{"n":1e999999}"#);
    for (proxy, body) in [("connect", connect), ("publish", publish)] {
        let answer = app.post_signed(proxy, &body).await;
        assert_eq!(
            (answer.status, answer.json()),
            (400, bad_request()),
            "{proxy}: {}",
            answer.text
        );
    }
    // And anywhere in any body, on every route.
    assert_bad_request_on_every_route(
        &app,
        &[
            r#"{"client":"c","user":"u-big","x":1e999999}"#,
            r#"{"client":"c","user":"u-big","user":"u-other"}"#,
        ],
    )
    .await;
    // Duplicate keys anywhere in a publish body too: the rule is the same on every route.
    let duplicate = publish_raw("u-big", &meta, "chat:room", r#"{"a":1,"a":2}"#);
    app.post_signed("publish", &duplicate)
        .await
        .assert(400, bad_request());
}

#[tokio::test]
async fn identity_stopping_mid_call_answers_a_temporary_503_and_counts_as_a_failure() {
    let app = spawn_app_with(|c| {
        // Longer than the stall is allowed to last: only the drop ends the call.
        c.set("IDENTITY_VALIDATE_DEADLINE_MS", "10000")
            .set("IDENTITY_PROBE_INTERVAL_MS", NO_PROBE);
    })
    .await;
    let failures = "realtime_identity_consecutive_failures";
    assert_eq!(app.metric(failures).await, 0.0);
    app.identity
        .add_ticket("abuse-cancel", Scripted::success("u-cancel"));
    app.identity.stall(Duration::from_secs(30));
    let address = app.address.clone();
    let call = tokio::spawn(async move {
        connect_from(&crate::helpers::http_client(), &address, "abuse-cancel").await
    });
    eventually("identity-service holds the call", async || {
        app.identity
            .seen()
            .iter()
            .any(|c| c.ticket == "abuse-cancel")
    })
    .await;
    // A restart in the middle of the call.
    app.identity.stop();
    let (status, body) = guard("the connect is answered", call).await.expect("task");
    assert_eq!((status, body), (503, unavailable()));
    assert_eq!(app.metric(failures).await, 1.0);
    // tonic reports the dropped call as a transport failure or CANCELLED, by how it dropped.
    let dropped = |code: &str| {
        format!("realtime_identity_validate_duration_seconds_count{{code=\"{code}\",source=\"request\"}}")
    };
    assert_eq!(
        app.metric(&dropped("transport")).await + app.metric(&dropped("cancelled")).await,
        1.0
    );
    assert_eq!(
        app.metric("realtime_centrifugo_connect_total{outcome=\"internal_error\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn cancelled_from_identity_is_a_temporary_503_and_counted_never_500() {
    let app = spawn_app_with(|c| {
        c.set("IDENTITY_PROBE_INTERVAL_MS", NO_PROBE);
    })
    .await;
    app.identity.fail_with(tonic::Code::Cancelled);
    for (n, ticket) in ["abuse-cancelled-1", "abuse-cancelled-2"]
        .iter()
        .enumerate()
    {
        app.connect(ticket).await.assert(503, unavailable());
        assert_eq!(
            app.metric("realtime_identity_consecutive_failures").await,
            (n + 1) as f64
        );
    }
    assert_eq!(
        app.metric("realtime_identity_validate_duration_seconds_count{code=\"cancelled\",source=\"request\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_flapping_identity_never_yields_a_500() {
    let app = spawn_app_with(|_| {}).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..4 {
        let (address, stop) = (app.address.clone(), stop.clone());
        let identity_tickets: Vec<String> = (0..800)
            .map(|n| format!("abuse-flap-{client}-{n}"))
            .collect();
        for ticket in &identity_tickets {
            app.identity.add_ticket(ticket, Scripted::success("u-flap"));
        }
        clients.spawn(async move {
            let http = crate::helpers::http_client();
            let mut answers = Vec::new();
            for ticket in identity_tickets {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                // Paced so the tickets outlast the flap.
                tokio::time::sleep(Duration::from_millis(5)).await;
                answers.push(connect_from(&http, &address, &ticket).await);
            }
            answers
        });
    }
    // 300 ms up, 300 ms down, four times over.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.identity.stop();
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.identity.restart().await.expect("identity back");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut answers = Vec::new();
    while let Some(done) = guard("the clients finish", clients.join_next()).await {
        answers.extend(done.expect("client task"));
    }
    let (mut accepted, mut unreachable) = (0, 0);
    for (status, body) in &answers {
        match status {
            200 => accepted += 1,
            503 if *body == unavailable() => unreachable += 1,
            _ => panic!("{status} {body} during the flap"),
        }
    }
    assert!(
        accepted > 0 && unreachable > 0,
        "{accepted} / {unreachable}"
    );
}

/// Starts two connects that identity-service holds, and returns once both hold a slot.
async fn fill_two_slots(app: &TestApp) -> tokio::task::JoinSet<u16> {
    app.identity.stall(Duration::from_secs(3));
    let mut held = tokio::task::JoinSet::new();
    for ticket in ["abuse-slot-1", "abuse-slot-2"] {
        app.identity.add_ticket(ticket, Scripted::success("u-slot"));
        let address = app.address.clone();
        held.spawn(async move {
            connect_from(&crate::helpers::http_client(), &address, ticket)
                .await
                .0
        });
    }
    eventually("both connects are in flight", async || {
        app.identity.seen().len() >= 2
    })
    .await;
    held
}

#[tokio::test]
async fn past_proxy_max_inflight_a_call_is_answered_111_at_once_on_both_transports() {
    let app = spawn_app_with(|c| {
        c.set("PROXY_MAX_INFLIGHT", "2")
            .set("IDENTITY_VALIDATE_DEADLINE_MS", "10000")
            .set("IDENTITY_PROBE_INTERVAL_MS", NO_PROBE);
    })
    .await;
    let rejections = "realtime_proxy_overload_rejections_total";
    assert_eq!(app.metric(rejections).await, 0.0);
    let mut held = fill_two_slots(&app).await;

    app.connect("abuse-slot-3").await.assert(429, overloaded());
    let grpc = Call::connect("abuse-slot-4")
        .grpc(&app, Kind::Connect)
        .await;
    assert_eq!(grpc, overloaded());
    // Answered while both slots are still held: nothing waited for one.
    assert!(
        held.try_join_next().is_none(),
        "a held connect finished first"
    );
    assert_eq!(app.metric(rejections).await, 2.0);
    // Health and metrics stay outside the bound.
    app.health().await;
    // Neither rejected ticket reached identity-service, and the held ones complete.
    assert_eq!(app.identity.seen().len(), 2);
    while let Some(status) = guard("held connects finish", held.join_next()).await {
        assert_eq!(status.expect("task"), 200);
    }
    app.identity.answer_normally();
    app.identity
        .add_ticket("abuse-slot-5", Scripted::success("u-slot"));
    assert_eq!(app.connect("abuse-slot-5").await.status, 200);
}

#[tokio::test]
async fn past_proxy_max_inflight_always_200_keeps_the_body() {
    let app = spawn_app_with(|c| {
        c.set("PROXY_MAX_INFLIGHT", "2")
            .set("PROXY_HTTP_STATUS_MODE", "always_200")
            .set("IDENTITY_VALIDATE_DEADLINE_MS", "10000")
            .set("IDENTITY_PROBE_INTERVAL_MS", NO_PROBE);
    })
    .await;
    let mut held = fill_two_slots(&app).await;
    app.connect("abuse-slot-200")
        .await
        .assert(200, overloaded());
    assert_eq!(
        app.metric("realtime_proxy_overload_rejections_total").await,
        1.0
    );
    while let Some(status) = guard("held connects finish", held.join_next()).await {
        assert_eq!(status.expect("task"), 200);
    }
}
