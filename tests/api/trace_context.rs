//! W3C trace context: a `traceparent` from the caller continues through the service into the
//! gRPC metadata of the Validate call.

use crate::fake_identity::Scripted;
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;

use crate::helpers::{connect_body, spawn_app, SECRET};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Makes the service's spans real OpenTelemetry spans on this thread, with the W3C
/// propagator installed. Tokio's test runtime runs every task on the test's thread, so a
/// thread-local subscriber (no exporter needed) sees them; keep the guard for the test.
pub fn capture_spans() -> tracing::subscriber::DefaultGuard {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let guard = tracing::subscriber::set_default(subscriber);
    realtime_service::telemetry::install_propagator();
    guard
}

/// The caller's trace, continued: the traceparent identity-service received last is in trace
/// `TRACE_ID` with the service's own span as parent, not the caller's `parent_span`.
pub fn assert_trace_continued(app: &crate::helpers::TestApp, parent_span: &str) {
    let seen = app.identity.seen();
    let forwarded = seen
        .last()
        .and_then(|call| call.traceparent.clone())
        .expect("Validate carried a traceparent");
    assert!(
        forwarded.starts_with(&format!("00-{TRACE_ID}-")),
        "same trace, new parent span: {forwarded}"
    );
    assert!(
        !forwarded.contains(parent_span),
        "the service's own span is the parent"
    );
}

/// A W3C traceparent in trace `TRACE_ID` with parent span `span`.
pub fn traceparent(span: &str) -> String {
    format!("00-{TRACE_ID}-{span}-01")
}

#[tokio::test]
async fn traceparent_reaches_identity_service() {
    let _guard = capture_spans();

    let app = spawn_app().await;
    app.identity
        .add_ticket("trace-ticket-1", Scripted::success("u-trace"));
    let body = connect_body("trace-ticket-1");
    let signature =
        realtime_service::transport::http::auth::sign(SECRET.as_bytes(), body.as_bytes());
    let traceparent = traceparent("00f067aa0ba902b7");
    let response = app
        .post_with_headers(
            "connect",
            body.as_bytes(),
            &[
                (
                    realtime_service::transport::http::auth::SIGNATURE_HEADER,
                    &signature,
                ),
                ("traceparent", &traceparent),
            ],
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text);
    assert_trace_continued(&app, "00f067aa0ba902b7");
}
