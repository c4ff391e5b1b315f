//! `POST /centrifugo/rpc` against a real local HTTP backend (axum on a random port) that
//! answers, refuses, fails, stalls, and a route to a closed port.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp, TestConfig};
use crate::proxies_support::{
    degraded_session, meta, method_not_found, permission_denied, request, rpc_internal, with, Who,
    CLIENT,
};

/// What the backend received: (path, raw body).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// The app with a backend behind `RPC_ROUTES` (also used by the gRPC tests).
pub struct Rpc {
    pub app: TestApp,
    seen: Seen,
}

impl Rpc {
    pub fn calls(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }

    async fn call(&self, body: &str) -> Value {
        let response = self.app.post_signed("rpc", body).await;
        assert_eq!(response.status, 200, "{}", response.text);
        response.json()
    }
}

/// The backend: one handler that answers by path.
async fn backend(seen: Seen, uri: Uri, body: Bytes) -> axum::response::Response {
    let path = uri.path().to_owned();
    seen.lock()
        .unwrap()
        .push((path.clone(), String::from_utf8_lossy(&body).into_owned()));
    let json = |status: StatusCode, body: &'static str| {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    match path.as_str() {
        "/ok" => json(StatusCode::OK, r#"{"members":["u-a","u-b"],"count":2}"#),
        "/refuse" => json(
            StatusCode::NOT_FOUND,
            r#"{"message":"no such family","detail":"x"}"#,
        ),
        "/plain" => (StatusCode::FORBIDDEN, "nope").into_response(),
        "/nomsg" => json(StatusCode::UNPROCESSABLE_ENTITY, r#"{"error":"bad input"}"#),
        "/boom" => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"message":"db down"}"#,
        ),
        "/unavail" => (StatusCode::SERVICE_UNAVAILABLE, "").into_response(),
        "/notjson" => (StatusCode::OK, "hello").into_response(),
        "/stall" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json(StatusCode::OK, r#"{"late":true}"#)
        }
        _ => (StatusCode::NOT_FOUND, "no route").into_response(),
    }
}

/// Starts the backend, a closed port, and the app with RPC_ROUTES pointing at them.
pub async fn spawn_rpc() -> Rpc {
    spawn_rpc_with(|_| {}).await
}

/// `spawn_rpc`, with more configuration.
pub async fn spawn_rpc_with(configure: impl FnOnce(&mut TestConfig)) -> Rpc {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = axum::Router::new().fallback({
        let seen = seen.clone();
        move |uri: Uri, body: Bytes| backend(seen.clone(), uri, body)
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let routes = [
        "ok", "refuse", "plain", "nomsg", "boom", "unavail", "notjson", "stall",
    ]
    .iter()
    .map(|name| format!("{name}={base}/{name}"))
    .chain([format!("down=http://127.0.0.1:{closed}/rpc")])
    .collect::<Vec<_>>()
    .join(",");
    let app = spawn_app_with(|c| {
        c.set("RPC_ROUTES", routes).set("RPC_DEADLINE_MS", "200");
        configure(c);
    })
    .await;
    Rpc { app, seen }
}

fn rpc_body(user: &str, meta: Option<&Value>, method: &str, data: Value) -> String {
    request(user, meta, json!({"method": method, "data": data}))
}

#[tokio::test]
async fn backend_gets_method_user_data_and_context_and_its_json_is_returned() {
    let rpc = spawn_rpc().await;
    let m = Who::new("u-rpc1", "fam-rpc1")
        .connect(&rpc.app, "rpc-ok-1")
        .await;
    let data = json!({"family":"fam-rpc1","page":[1,2]});
    assert_eq!(
        rpc.call(&rpc_body(
            "u-rpc1",
            Some(&m),
            "ok.get_members",
            data.clone()
        ))
        .await,
        json!({"result":{"data":{"members":["u-a","u-b"],"count":2}}})
    );
    let calls = rpc.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, "/ok");
    let received: Value = serde_json::from_str(&calls[0].1).unwrap();
    assert_eq!(
        received,
        json!({"method":"ok.get_members","user":"u-rpc1","data":data,"context":m})
    );
}

#[tokio::test]
async fn context_is_the_meta_exactly_as_sent() {
    let rpc = spawn_rpc().await;
    // Unusual key order and spacing, plus a field this service does not know.
    let meta_text =
        r#"{"degraded":false,  "user":"u-rpc2","extra":{"k":[1, 2]},"family_id":"fam-rpc2"}"#;
    let body = format!(
        r#"{{"client":"{CLIENT}","transport":"websocket","protocol":"json","encoding":"json","user":"u-rpc2","method":"ok.list","meta":{meta_text}}}"#
    );
    assert_eq!(
        rpc.call(&body).await,
        json!({"result":{"data":{"members":["u-a","u-b"],"count":2}}})
    );
    let calls = rpc.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].1.contains(&format!(r#""context":{meta_text}"#)),
        "{}",
        calls[0].1
    );
    // No data from the client: `data` is null.
    let received: Value = serde_json::from_str(&calls[0].1).unwrap();
    assert_eq!(received["data"], Value::Null, "{received}");
    assert_eq!(received["method"], json!("ok.list"));
    assert_eq!(received["user"], json!("u-rpc2"));
}

#[tokio::test]
async fn prefix_alone_routes_and_binary_data_is_passed_as_base64() {
    let rpc = spawn_rpc().await;
    let m = meta("u-rpc3", "fam-rpc3", "free");
    let body = request(
        "u-rpc3",
        Some(&m),
        json!({"method":"ok","encoding":"binary","b64data":"AAEC/w=="}),
    );
    assert_eq!(
        rpc.call(&body).await,
        json!({"result":{"data":{"members":["u-a","u-b"],"count":2}}})
    );
    let calls = rpc.calls();
    let received: Value = serde_json::from_str(&calls[0].1).unwrap();
    assert_eq!(received["method"], json!("ok"));
    assert_eq!(received["data"], json!("AAEC/w=="));
}

#[tokio::test]
async fn backend_4xx_is_passed_on_with_its_message_or_the_reason_phrase() {
    let rpc = spawn_rpc().await;
    let m = meta("u-rpc4", "fam-rpc4", "free");
    for (method, want) in [
        (
            "refuse.get",
            json!({"error":{"code":404,"message":"no such family"}}),
        ),
        (
            "plain.get",
            json!({"error":{"code":403,"message":"Forbidden"}}),
        ),
        (
            "nomsg.get",
            json!({"error":{"code":422,"message":"Unprocessable Entity"}}),
        ),
    ] {
        assert_eq!(
            rpc.call(&rpc_body("u-rpc4", Some(&m), method, json!({})))
                .await,
            want,
            "{method}"
        );
    }
    assert_eq!(rpc.calls().len(), 3);
}

#[tokio::test]
async fn backend_failures_are_temporary_internal_errors() {
    let rpc = spawn_rpc().await;
    let m = meta("u-rpc5", "fam-rpc5", "free");
    for method in ["boom.x", "unavail.x", "notjson.x", "down.x"] {
        assert_eq!(
            rpc.call(&rpc_body("u-rpc5", Some(&m), method, json!({})))
                .await,
            rpc_internal(),
            "{method}"
        );
    }
    // A stalled backend is cut off at RPC_DEADLINE_MS (200 ms), not waited for.
    let started = Instant::now();
    assert_eq!(
        rpc.call(&rpc_body("u-rpc5", Some(&m), "stall.x", json!({})))
            .await,
        rpc_internal()
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn unknown_method_prefix_is_method_not_found() {
    let rpc = spawn_rpc().await;
    let m = meta("u-rpc6", "fam-rpc6", "free");
    for method in ["chat.send", "okx.get", "Ok.get", "", ".ok", "ok_get"] {
        assert_eq!(
            rpc.call(&rpc_body("u-rpc6", Some(&m), method, json!({})))
                .await,
            method_not_found(),
            "{method:?}"
        );
    }
    // No method field at all (Centrifugo omits an empty one).
    assert_eq!(
        rpc.call(&request("u-rpc6", Some(&m), json!({"data":{}})))
            .await,
        method_not_found()
    );
    assert!(rpc.calls().is_empty(), "{:?}", rpc.calls());
}

#[tokio::test]
async fn degraded_connections_are_disconnected_without_calling_the_backend() {
    let rpc = spawn_rpc().await;
    let by_hand = with(
        &meta("u-rpc7", "fam-rpc7", "family"),
        "degraded",
        json!(true),
    );
    assert_eq!(
        rpc.call(&rpc_body("u-rpc7", Some(&by_hand), "ok.get", json!({})))
            .await,
        degraded_session()
    );
    let real = Who::new("u-rpc8", "fam-rpc8")
        .degraded()
        .connect(&rpc.app, "rpc-degraded-1")
        .await;
    assert_eq!(real["degraded"], json!(true));
    assert_eq!(
        rpc.call(&rpc_body("u-rpc8", Some(&real), "ok.get", json!({})))
            .await,
        degraded_session()
    );
    // Refused before routing: an unknown method gets the same answer.
    assert_eq!(
        rpc.call(&rpc_body("u-rpc8", Some(&real), "chat.send", json!({})))
            .await,
        degraded_session()
    );
    assert!(rpc.calls().is_empty(), "{:?}", rpc.calls());
}

#[tokio::test]
async fn untrusted_identity_context_is_denied_without_calling_the_backend() {
    let rpc = spawn_rpc().await;
    let m = meta("u-rpc9", "fam-rpc9", "free");
    for (case, body) in [
        (
            "missing meta",
            rpc_body("u-rpc9", None, "ok.get", json!({})),
        ),
        (
            "user mismatch",
            rpc_body("u-other", Some(&m), "ok.get", json!({})),
        ),
        (
            "unparseable meta",
            rpc_body("u-rpc9", Some(&json!([1])), "ok.get", json!({})),
        ),
    ] {
        assert_eq!(rpc.call(&body).await, permission_denied(), "{case}");
    }
    assert!(rpc.calls().is_empty(), "{:?}", rpc.calls());
}
