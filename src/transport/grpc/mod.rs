//! The gRPC transport: Centrifugo's gRPC proxy protocol (`grpc://host:port` endpoints,
//! service `centrifugal.centrifugo.proxy.CentrifugoProxy`), beside HTTP and answering with
//! the same use cases.
//!
//! Every decision is answered with status OK and the decision in the response message: a
//! non-OK status makes Centrifugo answer its client with internal error 100. Only the methods
//! this service does not serve answer UNIMPLEMENTED.
//!
//! Authentication is the shared secret in `x-centrifugo-proxy-secret` metadata (Centrifugo's
//! `grpc.static_metadata`), in every mode but `none`: nobody signs a protobuf body.

pub mod proto;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry::propagation::Extractor;
use prost::Message;
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::http::auth::ProxyAuth;
use super::http::limits::InflightLimit;
use crate::config::{ConfigError, GrpcTls};
use crate::metrics::Metrics;
use crate::proxy::{ProxyKind, Reply, Transport::Grpc};
use crate::service::ProxyService;
use proto::centrifugo_proxy_server::{CentrifugoProxy, CentrifugoProxyServer};
use wire::Envelope;

/// The metadata key Centrifugo's `grpc.static_metadata` carries the secret in.
pub const SECRET_METADATA: &str = "x-centrifugo-proxy-secret";

/// The `CentrifugoProxy` service.
pub struct GrpcProxy {
    service: ProxyService,
    /// The same check (and secrets) as the HTTP edge.
    auth: ProxyAuth,
    max_message_bytes: usize,
    metrics: Metrics,
    /// `PROXY_MAX_INFLIGHT`, shared with HTTP: the same bound on work in progress.
    inflight: InflightLimit,
}

impl GrpcProxy {
    /// `auth` is the HTTP edge's check, cloned: both share one set of secrets.
    pub fn new(
        service: ProxyService,
        auth: ProxyAuth,
        max_message_bytes: usize,
        inflight: InflightLimit,
    ) -> Self {
        let metrics = service.metrics().clone();
        Self {
            service,
            auth,
            max_message_bytes,
            metrics,
            inflight,
        }
    }

    /// What every method does around its use case: a span that continues the caller's
    /// trace, authentication before anything else, the size limit, and the duration metric.
    async fn call<Req: Message, Resp: Envelope>(
        &self,
        kind: ProxyKind,
        request: Request<Req>,
        run: impl AsyncFnOnce(Req) -> Resp,
    ) -> Result<Response<Resp>, Status> {
        let span = tracing::info_span!(
            "proxy",
            otel.name = %format_args!("centrifugal.centrifugo.proxy.CentrifugoProxy/{}", method_name(kind)),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "centrifugal.centrifugo.proxy.CentrifugoProxy",
            rpc.method = method_name(kind),
            proxy = kind.as_str(),
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&MetadataExtractor(request.metadata()))
        });
        // Only fails when no OpenTelemetry layer is installed, which is a valid configuration.
        let _ = span.set_parent(parent);
        let started = Instant::now();
        let response = async {
            if let Err(reason) = self.authenticate(request.metadata()) {
                self.metrics
                    .auth_rejections
                    .with_label_values(&[reason.as_str()])
                    .inc();
                tracing::warn!(
                    reason = reason.as_str(),
                    "proxy call refused: request authentication failed: {reason}"
                );
                return wire::encode(Reply::<Resp::Result>::unauthorized(), |r| r);
            }
            let Some(_permit) = self.inflight.try_acquire() else {
                return wire::encode(Reply::<Resp::Result>::too_many_requests(), |r| r);
            };
            let message = request.into_inner();
            if message.encoded_len() > self.max_message_bytes {
                tracing::warn!("proxy call refused: message larger than PROXY_MAX_BODY_BYTES");
                return wire::encode(Reply::<Resp::Result>::bad_request(), |r| r);
            }
            run(message).await
        }
        .instrument(span)
        .await;
        self.metrics
            .proxy_duration
            .with_label_values(&[kind.as_str(), Grpc.as_str()])
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(response))
    }

    fn authenticate(&self, metadata: &MetadataMap) -> Result<(), crate::proxy::AuthFailure> {
        self.auth.check_metadata(
            metadata
                .get_all(SECRET_METADATA)
                .iter()
                .map(|v| v.as_bytes()),
        )
    }
}

fn method_name(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Connect => "Connect",
        ProxyKind::Refresh => "Refresh",
        ProxyKind::Subscribe => "Subscribe",
        ProxyKind::Publish => "Publish",
        ProxyKind::SubRefresh => "SubRefresh",
        ProxyKind::Rpc => "RPC",
    }
}

fn not_served(method: &str) -> Status {
    Status::unimplemented(format!("{method} is not served by realtime-service"))
}

#[tonic::async_trait]
impl CentrifugoProxy for GrpcProxy {
    async fn connect(
        &self,
        request: Request<proto::ConnectRequest>,
    ) -> Result<Response<proto::ConnectResponse>, Status> {
        self.call(ProxyKind::Connect, request, async |m| {
            let decision = self.service.connect(Grpc, &wire::connect(&m)).await;
            wire::encode(decision.reply, wire::connect_result)
        })
        .await
    }

    async fn refresh(
        &self,
        request: Request<proto::RefreshRequest>,
    ) -> Result<Response<proto::RefreshResponse>, Status> {
        self.call(ProxyKind::Refresh, request, async |m| {
            let decision = self.service.refresh(Grpc, &wire::refresh(&m));
            wire::encode(decision.reply, wire::refresh_result)
        })
        .await
    }

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<proto::SubscribeResponse>, Status> {
        self.call(ProxyKind::Subscribe, request, async |m| {
            let decision = self.service.subscribe(Grpc, &wire::subscribe(&m));
            wire::encode(decision.reply, wire::subscribe_result)
        })
        .await
    }

    async fn publish(
        &self,
        request: Request<proto::PublishRequest>,
    ) -> Result<Response<proto::PublishResponse>, Status> {
        self.call(ProxyKind::Publish, request, async |m| {
            let decision = self.service.publish(Grpc, &wire::publish(&m)).await;
            wire::encode(decision.reply, wire::publish_result)
        })
        .await
    }

    async fn rpc(
        &self,
        request: Request<proto::RpcRequest>,
    ) -> Result<Response<proto::RpcResponse>, Status> {
        self.call(ProxyKind::Rpc, request, async |m| {
            let decision = self.service.rpc(Grpc, &wire::rpc(&m)).await;
            wire::encode(decision.reply, wire::rpc_result)
        })
        .await
    }

    async fn sub_refresh(
        &self,
        request: Request<proto::SubRefreshRequest>,
    ) -> Result<Response<proto::SubRefreshResponse>, Status> {
        self.call(ProxyKind::SubRefresh, request, async |m| {
            let decision = self.service.sub_refresh(Grpc, &wire::sub_refresh(&m));
            wire::encode(decision.reply, wire::sub_refresh_result)
        })
        .await
    }

    type SubscribeUnidirectionalStream = tonic::codegen::BoxStream<proto::StreamSubscribeResponse>;

    async fn subscribe_unidirectional(
        &self,
        _: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeUnidirectionalStream>, Status> {
        Err(not_served("SubscribeUnidirectional"))
    }

    type SubscribeBidirectionalStream = tonic::codegen::BoxStream<proto::StreamSubscribeResponse>;

    async fn subscribe_bidirectional(
        &self,
        _: Request<tonic::Streaming<proto::StreamSubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeBidirectionalStream>, Status> {
        Err(not_served("SubscribeBidirectional"))
    }

    async fn notify_cache_empty(
        &self,
        _: Request<proto::NotifyCacheEmptyRequest>,
    ) -> Result<Response<proto::NotifyCacheEmptyResponse>, Status> {
        Err(not_served("NotifyCacheEmpty"))
    }

    async fn notify_channel_state(
        &self,
        _: Request<proto::NotifyChannelStateRequest>,
    ) -> Result<Response<proto::NotifyChannelStateResponse>, Status> {
        Err(not_served("NotifyChannelState"))
    }

    async fn map_publish(
        &self,
        _: Request<proto::MapPublishRequest>,
    ) -> Result<Response<proto::MapPublishResponse>, Status> {
        Err(not_served("MapPublish"))
    }

    async fn map_remove(
        &self,
        _: Request<proto::MapRemoveRequest>,
    ) -> Result<Response<proto::MapRemoveResponse>, Status> {
        Err(not_served("MapRemove"))
    }

    async fn shared_poll_refresh(
        &self,
        _: Request<proto::SharedPollRefreshRequest>,
    ) -> Result<Response<proto::SharedPollRefreshResponse>, Status> {
        Err(not_served("SharedPollRefresh"))
    }
}

/// The listener's TLS, from the configured PEM files; errors name the variable.
pub fn tls_config(tls: &GrpcTls) -> Result<ServerTlsConfig, ConfigError> {
    let read = |var: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| ConfigError::new(var, format!("cannot read {}: {e}", path.display())))
    };
    let cert = read("GRPC_PROXY_TLS_CERT_PATH", &tls.cert)?;
    let key = read("GRPC_PROXY_TLS_KEY_PATH", &tls.key)?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &tls.client_ca {
        let ca = read("GRPC_PROXY_TLS_CLIENT_CA_PATH", ca)?;
        config = config.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(config)
}

/// A bound gRPC listener with its service, ready to run.
pub struct GrpcServer {
    listener: TcpListener,
    proxy: GrpcProxy,
    tls: Option<ServerTlsConfig>,
    max_message_bytes: usize,
}

impl GrpcServer {
    pub fn new(
        listener: TcpListener,
        proxy: GrpcProxy,
        tls: Option<ServerTlsConfig>,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            listener,
            proxy,
            tls,
            max_message_bytes,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` resolves, then stops accepting and finishes in-flight calls.
    pub async fn run(self, stop: impl Future<Output = ()>) -> Result<(), tonic::transport::Error> {
        let mut builder = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            // Bounds what one connection can hold open, whatever the client does.
            .max_concurrent_streams(Some(256))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .timeout(Duration::from_secs(30));
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        // Messages a little over the limit reach the handler, which answers 107 like HTTP;
        // anything far larger is refused by tonic before it is buffered.
        let limit = self.max_message_bytes.saturating_mul(2).max(1024);
        let service = CentrifugoProxyServer::new(self.proxy)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit.max(4 * 1024 * 1024));
        builder
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                stop,
            )
            .await
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}
