//! TLS on the way out: identity-service over TLS with a private CA (cert-manager style) and
//! mutual TLS, against a real tonic TLS server with certificates made in the test; and the
//! HTTP clients (rpc backends) speaking TLS to `https://` URLs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::helpers::{spawn_app_with, TempDir, TestApp};
use crate::proxies_support::request;
use crate::replies::{meta, rpc_internal, unavailable};
use realtime_service::demo::identity::success;
use realtime_service::identity::proto::connect_proxy_service_server::{
    ConnectProxyService, ConnectProxyServiceServer,
};
use realtime_service::identity::proto::{SubscriptionTier, ValidateRequest, ValidateResponse};

/// The name on identity-service's certificate; the test reaches it as 127.0.0.1.
const SERVER_NAME: &str = "identity.test";

/// A private CA and what it signed, written as PEM files: `ca.pem`, `server.crt` and
/// `server.key` for the server's name, `client.crt` and `client.key`.
pub(crate) struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Self {
        Self::for_server(SERVER_NAME)
    }

    pub(crate) fn for_server(server_name: &str) -> Self {
        let dir = TempDir::new();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let signed = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = signed(server_name);
        let (client_cert, client_key) = signed("realtime-service.test");
        for (name, pem) in [
            ("ca.pem", ca_cert.pem()),
            ("server.crt", server_cert),
            ("server.key", server_key),
            ("client.crt", client_cert),
            ("client.key", client_key),
        ] {
            std::fs::write(dir.0.join(name), pem).unwrap();
        }
        Self { dir }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.0.join(name).display().to_string()
    }

    pub(crate) fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.0.join(name)).unwrap()
    }
}

/// identity-service over TLS: accepts every ticket, counts the calls that reached it.
struct TlsIdentity {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    server: JoinHandle<()>,
}

impl Drop for TlsIdentity {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Accepts(Arc<AtomicUsize>);

#[tonic::async_trait]
impl ConnectProxyService for Accepts {
    async fn validate(
        &self,
        _request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(success(
            "u-tls",
            "fam-tls",
            SubscriptionTier::Free,
            false,
        )))
    }
}

impl TlsIdentity {
    /// `require_client_cert`: only clients with a certificate from the CA get through.
    async fn start(pki: &Pki, require_client_cert: bool) -> Self {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
            pki.read("server.crt"),
            pki.read("server.key"),
        ));
        if require_client_cert {
            tls = tls.client_ca_root(Certificate::from_pem(pki.read("ca.pem")));
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let service = ConnectProxyServiceServer::new(Accepts(calls.clone()));
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        Self {
            addr,
            calls,
            server,
        }
    }
}

/// The app reaching `identity` over TLS, checking its certificate against `ca` (or the public
/// roots) and presenting the client certificate when `client_cert` is set.
async fn app_for(identity: &TlsIdentity, pki: &Pki, ca: bool, client_cert: bool) -> TestApp {
    spawn_app_with(|c| {
        c.set("IDENTITY_VALIDATE_GRPC_ADDRESS", identity.addr.to_string())
            .set("IDENTITY_VALIDATE_NEGOTIATION_TYPE", "tls")
            .set("IDENTITY_VALIDATE_TLS_SERVER_NAME", SERVER_NAME)
            // The handshake with a fresh key must not race the test's short default.
            .set("IDENTITY_VALIDATE_DEADLINE_MS", "3000")
            .set("FALLBACK_DEGRADED_WINDOW_MS", "5000");
        if ca {
            c.set("IDENTITY_VALIDATE_TLS_CA_PATH", pki.path("ca.pem"));
        }
        if client_cert {
            c.set("IDENTITY_VALIDATE_TLS_CERT_PATH", pki.path("client.crt"))
                .set("IDENTITY_VALIDATE_TLS_KEY_PATH", pki.path("client.key"));
        }
    })
    .await
}

fn accepted_user(app: &TestApp, response: &crate::helpers::TestResponse) {
    let _ = app;
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(response.json()["result"]["user"], json!("u-tls"));
}

#[tokio::test]
async fn a_private_ca_is_trusted_when_configured_and_only_then() {
    let pki = Pki::new();
    let identity = TlsIdentity::start(&pki, false).await;

    let app = app_for(&identity, &pki, true, false).await;
    accepted_user(&app, &app.connect("tls-ca-1").await);
    assert_eq!(identity.calls.load(Ordering::SeqCst), 1);

    // The public roots do not know the private CA: the handshake fails, which is identity
    // being unreachable, not a rejected ticket.
    let untrusting = app_for(&identity, &pki, false, false).await;
    untrusting
        .connect("tls-ca-2")
        .await
        .assert(503, unavailable());
    assert_eq!(identity.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn mutual_tls_works_with_the_client_certificate_and_fails_without() {
    let pki = Pki::new();
    let identity = TlsIdentity::start(&pki, true).await;

    let app = app_for(&identity, &pki, true, true).await;
    accepted_user(&app, &app.connect("tls-mtls-1").await);
    accepted_user(&app, &app.connect("tls-mtls-2").await);
    assert_eq!(identity.calls.load(Ordering::SeqCst), 2);

    let anonymous = app_for(&identity, &pki, true, false).await;
    anonymous
        .connect("tls-mtls-3")
        .await
        .assert(503, unavailable());
    assert_eq!(identity.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_client_key_that_is_not_a_key_fails_startup_naming_the_variable() {
    let pki = Pki::new();
    let settings = realtime_service::config::Settings::from_pairs([
        ("CENTRIFUGO_PROXY_SECRET", crate::helpers::SECRET.to_owned()),
        ("LISTEN_HOST", "127.0.0.1".to_owned()),
        ("LISTEN_PORT", "0".to_owned()),
        ("IDENTITY_VALIDATE_NEGOTIATION_TYPE", "tls".to_owned()),
        ("IDENTITY_VALIDATE_TLS_CERT_PATH", pki.path("client.crt")),
        ("IDENTITY_VALIDATE_TLS_KEY_PATH", pki.path("client.crt")),
    ])
    .unwrap();
    match realtime_service::app::Application::build(&settings).await {
        Err(e) => assert!(
            e.to_string().contains("IDENTITY_VALIDATE_TLS_KEY_PATH"),
            "{e}"
        ),
        Ok(_) => panic!("a certificate is not a key"),
    }
}

#[tokio::test]
async fn https_rpc_backends_are_called_over_tls() {
    // Not a TLS server: what arrives must be a TLS handshake, and a backend whose
    // certificate cannot be checked is a backend failure, never a plaintext retry.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let first_bytes = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 3];
        socket.read_exact(&mut buf).await.map(|_| buf).ok()
    });
    let app = spawn_app_with(|c| {
        c.set("RPC_ROUTES", format!("secure=https://127.0.0.1:{port}/rpc"))
            .set("RPC_DEADLINE_MS", "2000");
    })
    .await;
    let m = meta("u-rpc-tls", "fam-rpc-tls", "free");
    let body = request(
        "u-rpc-tls",
        Some(&m),
        json!({"method": "secure.call", "data": {}}),
    );
    let response = app.post_signed("rpc", &body).await;
    assert_eq!(response.status, 200, "{}", response.text);
    assert_eq!(response.json(), rpc_internal());
    let hello = first_bytes.await.unwrap().expect("the client sent bytes");
    // A TLS handshake record (0x16), protocol major version 3.
    assert_eq!(&hello[..2], &[0x16, 0x03], "{hello:?}");
}

/// The gRPC listener with `GRPC_PROXY_TLS_*`, reached as `SERVER_NAME` at 127.0.0.1.
async fn grpc_tls_app(pki: &Pki, require_client_cert: bool) -> TestApp {
    spawn_app_with(|c| {
        c.set("GRPC_PROXY_TLS_CERT_PATH", pki.path("server.crt"))
            .set("GRPC_PROXY_TLS_KEY_PATH", pki.path("server.key"));
        if require_client_cert {
            c.set("GRPC_PROXY_TLS_CLIENT_CA_PATH", pki.path("ca.pem"));
        }
    })
    .await
}

/// A connect over the app's gRPC listener through TLS that trusts the test CA, presenting the
/// client certificate when `client_cert` is set: the answer, or the status of a failed call.
async fn grpc_tls_connect(
    app: &TestApp,
    pki: &Pki,
    client_cert: bool,
    ticket: &str,
) -> Result<serde_json::Value, Status> {
    use crate::grpc_support::{signed, Body, Call};
    use realtime_service::transport::grpc::proto::centrifugo_proxy_client::CentrifugoProxyClient;
    use tonic::transport::{ClientTlsConfig, Endpoint};

    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .domain_name(SERVER_NAME);
    if client_cert {
        tls = tls.identity(Identity::from_pem(
            pki.read("client.crt"),
            pki.read("client.key"),
        ));
    }
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", app.grpc_port))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let response = CentrifugoProxyClient::new(channel)
        .connect(signed(Call::connect(ticket).connect_message()))
        .await?;
    Ok(response.into_inner().body())
}

#[tokio::test]
async fn the_grpc_listener_serves_over_tls_and_refuses_plaintext() {
    let pki = Pki::new();
    let app = grpc_tls_app(&pki, false).await;
    app.identity.add_ticket(
        "tls-grpc-1",
        crate::fake_identity::Scripted::success("u-tls-grpc"),
    );
    let body = grpc_tls_connect(&app, &pki, false, "tls-grpc-1")
        .await
        .expect("served over TLS");
    assert_eq!(body["result"]["user"], json!("u-tls-grpc"), "{body}");

    // The same call in plaintext never reaches identity-service.
    let calls = app.identity.calls();
    let plaintext = app
        .grpc()
        .connect(crate::grpc_support::signed(
            crate::grpc_support::Call::connect("tls-grpc-2").connect_message(),
        ))
        .await;
    assert!(plaintext.is_err(), "{plaintext:?}");
    assert_eq!(app.identity.calls(), calls);
}

#[tokio::test]
async fn the_grpc_listener_requires_a_client_certificate_from_its_ca_when_configured() {
    let pki = Pki::new();
    let app = grpc_tls_app(&pki, true).await;
    app.identity.add_ticket(
        "tls-grpc-mtls",
        crate::fake_identity::Scripted::success("u-tls-mtls"),
    );
    let anonymous = grpc_tls_connect(&app, &pki, false, "tls-grpc-mtls").await;
    assert!(anonymous.is_err(), "{anonymous:?}");
    assert_eq!(app.identity.calls(), 0);
    let body = grpc_tls_connect(&app, &pki, true, "tls-grpc-mtls")
        .await
        .expect("served with the client certificate");
    assert_eq!(body["result"]["user"], json!("u-tls-mtls"), "{body}");
}

#[tokio::test]
async fn a_renewed_grpc_certificate_is_served_to_new_connections_without_a_restart() {
    let (old, new) = (Pki::new(), Pki::new());
    let app = grpc_tls_app(&old, false).await;
    for ticket in ["tls-renew-1", "tls-renew-2"] {
        app.identity
            .add_ticket(ticket, crate::fake_identity::Scripted::success("u-renew"));
    }
    let body = grpc_tls_connect(&app, &old, false, "tls-renew-1")
        .await
        .expect("served with the first certificate");
    assert_eq!(body["result"]["user"], json!("u-renew"), "{body}");

    // cert-manager renews: the files at the same paths now hold another CA's certificate.
    for name in ["server.crt", "server.key"] {
        std::fs::write(old.path(name), new.read(name)).unwrap();
    }
    let mut renewed = None;
    for _ in 0..40 {
        if let Ok(body) = grpc_tls_connect(&app, &new, false, "tls-renew-2").await {
            renewed = Some(body);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let body = renewed.expect("the renewed certificate was never served");
    assert_eq!(body["result"]["user"], json!("u-renew"), "{body}");
    // A client that trusts only the old CA no longer gets in.
    assert!(grpc_tls_connect(&app, &old, false, "tls-renew-3")
        .await
        .is_err());
}
