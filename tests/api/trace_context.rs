//! W3C trace context: a `traceparent` from the caller continues through the service into the
//! gRPC metadata of the Validate call.

use crate::fake_identity::Scripted;
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;

use crate::helpers::{connect_body, spawn_app, SECRET};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn traceparent_reaches_identity_service() {
    // Tokio's test runtime runs every task on this thread, so a thread-local subscriber with
    // an OpenTelemetry layer (no exporter needed) sees the service's spans.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    realtime_service::telemetry::install_propagator();

    let app = spawn_app().await;
    app.identity
        .add_ticket("trace-ticket-1", Scripted::success("u-trace"));
    let body = connect_body("trace-ticket-1");
    let signature =
        realtime_service::transport::http::auth::sign(SECRET.as_bytes(), body.as_bytes());
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
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
        !forwarded.contains("00f067aa0ba902b7"),
        "the service's own span is the parent"
    );
}
