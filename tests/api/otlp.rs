//! OTLP export as operators configure it, through the real binary and real collectors: a
//! tonic OTLP trace service (gRPC, port 4317's protocol) and an HTTP one (`/v1/traces`,
//! protobuf), each decoding what arrives; the gRPC one also behind TLS with a CA the test
//! makes, requiring a client certificate. The resource carries `service.version`, the
//! attributes of `OTEL_RESOURCE_ATTRIBUTES`, and their `service.name` unless
//! `OTEL_SERVICE_NAME` is set. And `https://` rpc backends behind a private CA
//! (`RPC_TLS_CA_PATH`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::helpers::spawn_app_with;
use crate::proxies_support::request;
use crate::replies::{meta, rpc_internal};
use crate::telemetry::{serve, stop, unsigned_connect};
use crate::tls::Pki;

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// A collector that keeps every export request it decodes.
struct Collector {
    addr: SocketAddr,
    received: Received,
    server: JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Keep(Received);

#[tonic::async_trait]
impl TraceService for Keep {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// OTLP/gRPC, in plaintext or with `tls`.
    async fn grpc(tls: Option<ServerTlsConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Received::default();
        let service = TraceServiceServer::new(Keep(received.clone()));
        let server = tokio::spawn(async move {
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                builder = builder.tls_config(tls).unwrap();
            }
            let _ = builder
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        Self {
            addr,
            received,
            server,
        }
    }

    /// OTLP/HTTP with protobuf bodies at `/v1/traces`.
    async fn http() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Received::default();
        let keep = received.clone();
        let router = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let keep = keep.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).unwrap();
                    keep.lock().unwrap().push(request);
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            received,
            server,
        }
    }

    fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.received.lock().unwrap().clone()
    }
}

/// The resource attributes and span names of everything a collector received.
fn exported(requests: &[ExportTraceServiceRequest]) -> (Vec<(String, String)>, Vec<String>) {
    let mut attributes = Vec::new();
    let mut spans = Vec::new();
    for resource_spans in requests.iter().flat_map(|r| &r.resource_spans) {
        for kv in resource_spans.resource.iter().flat_map(|r| &r.attributes) {
            if let Some(AnyValue::StringValue(v)) = kv.value.as_ref().and_then(|v| v.value.as_ref())
            {
                attributes.push((kv.key.clone(), v.clone()));
            }
        }
        for scope in &resource_spans.scope_spans {
            spans.extend(scope.spans.iter().map(|s| s.name.clone()));
        }
    }
    (attributes, spans)
}

fn has(attributes: &[(String, String)], key: &str, value: &str) -> bool {
    attributes.iter().any(|(k, v)| k == key && v == value)
}

/// Serves with `env` and every root sampled, makes one request (a span), stops (the batch is
/// flushed on shutdown).
async fn one_request_exported(env: &[(&str, &str)]) {
    let mut all = vec![("OTEL_TRACES_SAMPLER", "always_on")];
    all.extend_from_slice(env);
    let service = serve(&all).await;
    unsigned_connect(service.port, None).await;
    stop(service).await;
}

#[tokio::test]
async fn spans_reach_a_grpc_collector_with_the_configured_resource() {
    let collector = Collector::grpc(None).await;
    let endpoint = format!("http://{}", collector.addr);
    one_request_exported(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from-attributes,deployment.environment=staging%20eu",
        ),
    ])
    .await;
    let (attributes, spans) = exported(&collector.requests());
    assert!(!spans.is_empty(), "no span arrived over gRPC");
    assert!(
        spans.iter().any(|s| s.contains("/centrifugo/connect")),
        "{spans:?}"
    );
    assert!(
        has(&attributes, "service.name", "from-attributes"),
        "OTEL_RESOURCE_ATTRIBUTES' service.name, not the default: {attributes:?}"
    );
    assert!(
        has(&attributes, "deployment.environment", "staging eu"),
        "{attributes:?}"
    );
    assert!(
        has(&attributes, "service.version", env!("CARGO_PKG_VERSION")),
        "{attributes:?}"
    );
}

#[tokio::test]
async fn spans_reach_an_http_protobuf_collector_and_the_service_name_variable_wins() {
    let collector = Collector::http().await;
    let endpoint = format!("http://{}", collector.addr);
    one_request_exported(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "3000"),
        ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes"),
        ("OTEL_SERVICE_NAME", "from-variable"),
    ])
    .await;
    let (attributes, spans) = exported(&collector.requests());
    assert!(!spans.is_empty(), "no span arrived over HTTP");
    assert!(
        has(&attributes, "service.name", "from-variable"),
        "{attributes:?}"
    );
    assert!(
        has(&attributes, "service.version", env!("CARGO_PKG_VERSION")),
        "{attributes:?}"
    );
}

#[tokio::test]
async fn a_grpc_collector_behind_a_private_ca_is_trusted_only_with_its_certificate() {
    let pki = Pki::for_server("localhost");
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            pki.read("server.crt"),
            pki.read("server.key"),
        ))
        // mTLS: the collector takes only clients with a certificate from the CA.
        .client_ca_root(Certificate::from_pem(pki.read("ca.pem")));
    let collector = Collector::grpc(Some(tls)).await;
    let endpoint = format!("https://localhost:{}", collector.addr.port());
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.crt"),
        pki.path("client.key"),
    );
    let base = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
    ];

    // The public roots do not know the CA: nothing is delivered.
    one_request_exported(&base).await;
    assert!(collector.requests().is_empty(), "exported without the CA");

    let mut trusted = base.to_vec();
    trusted.extend([
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.as_str()),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.as_str()),
    ]);
    one_request_exported(&trusted).await;
    let (_, spans) = exported(&collector.requests());
    assert!(!spans.is_empty(), "nothing arrived over TLS with the CA");
}

/// An HTTPS rpc backend whose certificate a private CA signed: answers every call with
/// `{"ok":true}` (HTTP/1.1, one request per connection).
async fn https_backend(pki: &Pki) -> (u16, JoinHandle<()>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(&pki.read("server.crt"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&pki.read("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                // The request head and its body; the answer does not depend on them.
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break;
                        }
                    }
                }
                let answer = r#"{"ok":true}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, server)
}

#[tokio::test]
async fn https_rpc_backends_behind_a_private_ca_are_trusted_with_rpc_tls_ca_path() {
    let pki = Pki::for_server("localhost");
    let (port, backend) = https_backend(&pki).await;
    let routes = format!("secure=https://localhost:{port}/rpc");
    let ca = pki.path("ca.pem");
    let m = meta("u-rpc-ca", "fam-rpc-ca", "free");
    let body = request(
        "u-rpc-ca",
        Some(&m),
        json!({"method": "secure.call", "data": {}}),
    );
    for (with_ca, expected) in [
        (true, json!({"result": {"data": {"ok": true}}})),
        // The public roots do not know the CA: a backend failure, never a plaintext retry.
        (false, rpc_internal()),
    ] {
        let app = spawn_app_with(|c| {
            c.set("RPC_ROUTES", routes.clone())
                .set("RPC_DEADLINE_MS", "2000");
            if with_ca {
                c.set("RPC_TLS_CA_PATH", ca.clone());
            }
        })
        .await;
        let response = app.post_signed("rpc", &body).await;
        assert_eq!(response.status, 200, "{}", response.text);
        assert_eq!(response.json(), expected, "RPC_TLS_CA_PATH set: {with_ca}");
    }
    backend.abort();
}
