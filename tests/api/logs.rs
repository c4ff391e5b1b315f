//! No ticket, secret or signature ever appears in logs, `/health` or `/metrics`.

use crate::fake_identity::Scripted;
use realtime_service::transport::http::auth::{sign, SECRET_HEADER, SIGNATURE_HEADER};
use tonic::Code;

use crate::helpers::{captured_logs, connect_body, spawn_app_with, SECRET};

const ACCEPTED: &str = "logs-tkt-accepted-5b1e9c";
const DISCONNECTED: &str = "logs-tkt-disconnected-0a7d4f";
const UNKNOWN: &str = "logs-tkt-unknown-93c2aa";
const ERRORED: &str = "logs-tkt-errored-6e01b8";
const INTERNAL: &str = "logs-tkt-internal-c4d2e7";
const POOL: &str = "logs-tkt-pool-2f8b31";
const POOL_MISS: &str = "logs-tkt-poolmiss-7c9e05";
const OPENER: &str = "logs-tkt-opener-d3a6f2";
const BAD_SIGNATURE: &str = "logs-tkt-badsig-1e4f7a";
const BAD_JSON: &str = "logs-tkt-badjson-8b2c6d";
const BAD_TYPE: &str = "logs-tkt-badtype-5d9a13";
const OVERSIZED: &str = "logs-tkt-oversized-44e0b2";
const PREVIOUS: &str = "logs-previous-secret-e81f";

#[tokio::test]
async fn tickets_secrets_and_signatures_stay_out_of_logs_health_and_metrics() {
    let app = spawn_app_with(|c| {
        c.pool(&[POOL, "logs-tkt-pool-unused-90ab"])
            .set("CENTRIFUGO_PROXY_SECRET_PREVIOUS", PREVIOUS)
            .set("PROXY_MAX_BODY_BYTES", "2048");
    })
    .await;
    app.identity
        .add_ticket(ACCEPTED, Scripted::success("u-logs"));
    app.identity
        .add_ticket(DISCONNECTED, Scripted::disconnect(4403, "banned"));
    app.identity
        .add_ticket(ERRORED, Scripted::error(3, "cannot decide"));
    app.identity
        .add_ticket(INTERNAL, Scripted::Status(Code::Internal));
    let mut signatures = vec![];

    let mut signed = async |body: &str| {
        signatures.push(sign(SECRET.as_bytes(), body.as_bytes()));
        app.post_signed("connect", body).await
    };
    assert_eq!(signed(&connect_body(ACCEPTED)).await.status, 200);
    assert_eq!(signed(&connect_body(DISCONNECTED)).await.status, 401);
    assert_eq!(signed(&connect_body(UNKNOWN)).await.status, 401);
    assert_eq!(signed(&connect_body(ERRORED)).await.status, 503);
    assert_eq!(signed(&connect_body(INTERNAL)).await.status, 500);
    assert_eq!(
        signed(&format!(r#"{{"data":{{"token":"{BAD_JSON}""#))
            .await
            .status,
        400
    );
    assert_eq!(
        signed(&format!(r#"{{"data":{{"token":["{BAD_TYPE}"]}}}}"#))
            .await
            .status,
        400
    );
    let oversized = format!(
        r#"{{"data":{{"token":"{OVERSIZED}"}},"pad":"{}"}}"#,
        "x".repeat(4096)
    );
    assert_eq!(signed(&oversized).await.status, 413);

    // Bad signatures: wrong secret, the previous secret on a body it does not match, a
    // static header in HMAC mode.
    let body = connect_body(BAD_SIGNATURE);
    let wrong = sign(b"logs-wrong-secret", body.as_bytes());
    let previous_other_body = sign(PREVIOUS.as_bytes(), b"another body");
    for headers in [
        vec![(SIGNATURE_HEADER, wrong.as_str())],
        vec![(SIGNATURE_HEADER, previous_other_body.as_str())],
        vec![(SECRET_HEADER, SECRET)],
    ] {
        assert_eq!(
            app.post_with_headers("connect", body.as_bytes(), &headers)
                .await
                .status,
            401
        );
    }
    signatures.push(wrong);
    signatures.push(previous_other_body);
    let previous_good = sign(PREVIOUS.as_bytes(), connect_body(UNKNOWN).as_bytes());
    assert_eq!(
        app.post_with_headers(
            "connect",
            connect_body(UNKNOWN).as_bytes(),
            &[(SIGNATURE_HEADER, &previous_good)]
        )
        .await
        .status,
        401
    );
    signatures.push(previous_good);

    // The pool path: identity-service down, past the window.
    app.identity.fail_with(Code::Unavailable);
    assert_eq!(app.connect(OPENER).await.status, 503);
    app.pass_window();
    let response = app.connect(POOL).await;
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(app.connect(POOL_MISS).await.status, 503);
    for body in [
        connect_body(OPENER),
        connect_body(POOL),
        connect_body(POOL_MISS),
    ] {
        signatures.push(sign(SECRET.as_bytes(), body.as_bytes()));
    }

    let health = app.get("/health").await.text;
    let metrics = app.get("/metrics").await.text;
    let logs = captured_logs();
    // The capture works: the pool connection was logged (by its digest-derived user).
    assert!(logs.contains("fallback pool"), "nothing captured?\n{logs}");

    let tickets = [
        ACCEPTED,
        DISCONNECTED,
        UNKNOWN,
        ERRORED,
        INTERNAL,
        POOL,
        POOL_MISS,
        OPENER,
        BAD_SIGNATURE,
        BAD_JSON,
        BAD_TYPE,
        OVERSIZED,
        "logs-tkt-pool-unused-90ab",
    ];
    for ticket in tickets {
        assert!(!logs.contains(ticket), "ticket {ticket} logged");
        assert!(!health.contains(ticket), "ticket {ticket} in /health");
        assert!(!metrics.contains(ticket), "ticket {ticket} in /metrics");
    }
    for secret in [SECRET, PREVIOUS] {
        assert!(!logs.contains(secret), "secret {secret} logged");
        assert!(!health.contains(secret) && !metrics.contains(secret));
    }
    for signature in &signatures {
        assert!(
            !logs.contains(signature.as_str()),
            "signature {signature} logged"
        );
        assert!(!logs.contains(&signature.to_uppercase()));
    }
}
