//! The gRPC transport end to end: a real tonic client, generated from the same proto, against
//! the real service's gRPC listener.

use crate::fake_identity::Scripted;
use realtime_service::transport::grpc::proto::ConnectRequest;
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;

use crate::helpers::{spawn_app, SECRET};

fn connect_request(ticket: &str) -> tonic::Request<ConnectRequest> {
    let mut request = tonic::Request::new(ConnectRequest {
        client: "grpc-client-1".into(),
        transport: "websocket".into(),
        protocol: "json".into(),
        encoding: "json".into(),
        data: json!({"token": ticket}).to_string().into_bytes(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "x-centrifugo-proxy-secret",
        MetadataValue::try_from(SECRET).expect("ascii"),
    );
    request
}

#[tokio::test]
async fn connect_over_grpc_gives_the_same_meta_as_http() {
    let app = spawn_app().await;
    app.identity
        .add_ticket("grpc-smoke-1", Scripted::success("u-grpc-1"));
    let response = app
        .grpc()
        .connect(connect_request("grpc-smoke-1"))
        .await
        .expect("status OK")
        .into_inner();
    let result = response.result.expect("a result");
    assert_eq!(result.user, "u-grpc-1");
    let meta: Value = serde_json::from_slice(&result.meta).expect("meta is JSON");
    assert_eq!(meta["user"], "u-grpc-1");
    assert_eq!(meta["degraded"], false);
    assert!(result.expire_at > 0);
    assert_eq!(
        app.metric(r#"realtime_centrifugo_connect_total{outcome="accepted",transport="grpc"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_wrong_secret_is_a_4401_disconnect_with_status_ok() {
    let app = spawn_app().await;
    let mut request = connect_request("grpc-smoke-2");
    request.metadata_mut().insert(
        "x-centrifugo-proxy-secret",
        MetadataValue::try_from("not-the-secret").expect("ascii"),
    );
    let response = app
        .grpc()
        .connect(request)
        .await
        .expect("status OK")
        .into_inner();
    let disconnect = response.disconnect.expect("a disconnect");
    assert_eq!(
        (disconnect.code, disconnect.reason.as_str()),
        (4401, "unauthorized")
    );
    assert!(
        app.identity.seen().is_empty(),
        "nothing downstream was called"
    );
}
