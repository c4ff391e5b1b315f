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

mod head;
mod message;
mod peer;
pub mod proto;
mod serve;
pub mod shard;
mod tls;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use opentelemetry::propagation::Extractor;
use prometheus::IntCounter;
use prost::Message;
use tokio::net::TcpListener;
use tokio::time::timeout;
use tonic::codegen::http::{HeaderMap, StatusCode};
use tonic::metadata::MetadataMap;
use tonic::Status;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::http::auth::ProxyAuth;
use super::http::error::connect_status;
use super::http::limits::InflightLimit;
use crate::metrics::Metrics;
use crate::proxy::{ProxyKind, Reply, Transport::Grpc};
use crate::service::ProxyService;
pub use head::parse_grpc_timeout;
use message::frame;
pub use peer::Warnings;
use serve::Body;
pub use serve::GrpcLimits;
pub use shard::Shards;
pub use tls::TlsFiles;
use wire::Envelope;

/// The metadata key Centrifugo's `grpc.static_metadata` carries the secret in.
pub const SECRET_METADATA: &str = "x-centrifugo-proxy-secret";

/// The `CentrifugoProxy` service.
pub struct GrpcProxy {
    service: ProxyService,
    /// The same check (and secrets) as the HTTP edge.
    auth: ProxyAuth,
    metrics: Metrics,
    /// `PROXY_MAX_INFLIGHT`, shared with HTTP: the same bound on work in progress.
    inflight: InflightLimit,
    /// Shared by every shard: one listener, one rate for its WARNs.
    warnings: Arc<Warnings>,
}

impl GrpcProxy {
    /// `auth` is the HTTP edge's check, cloned: both share one set of secrets. `warnings`
    /// is shared by the listener's shards.
    pub fn new(
        service: ProxyService,
        auth: ProxyAuth,
        inflight: InflightLimit,
        warnings: Arc<Warnings>,
    ) -> Self {
        let metrics = service.metrics().clone();
        Self {
            service,
            auth,
            metrics,
            inflight,
            warnings,
        }
    }

    /// One call of `method` (the path's last segment): the encoded response message, or the
    /// status of a method this service does not serve (or of a call that broke the protocol).
    async fn dispatch(
        &self,
        method: &str,
        headers: HeaderMap,
        body: &mut Body,
    ) -> Result<Bytes, Status> {
        let metadata = MetadataMap::from_headers(headers);
        let m = &metadata;
        match method {
            "Connect" => {
                self.call(
                    ProxyKind::Connect,
                    m,
                    body,
                    async |r: proto::ConnectRequest| -> (proto::ConnectResponse, StatusCode) {
                        let decision = self.service.connect(Grpc, &wire::connect(&r)).await;
                        let status = connect_status(decision.outcome);
                        (wire::encode(decision.reply, wire::connect_result), status)
                    },
                )
                .await
            }
            "Refresh" => {
                self.call(
                    ProxyKind::Refresh,
                    m,
                    body,
                    async |r: proto::RefreshRequest| -> (proto::RefreshResponse, StatusCode) {
                        let decision = self.service.refresh(Grpc, &wire::refresh(&r));
                        (
                            wire::encode(decision.reply, wire::refresh_result),
                            StatusCode::OK,
                        )
                    },
                )
                .await
            }
            "Subscribe" => {
                self.call(
                    ProxyKind::Subscribe,
                    m,
                    body,
                    async |r: proto::SubscribeRequest| -> (proto::SubscribeResponse, StatusCode) {
                        let decision = self.service.subscribe(Grpc, &wire::subscribe(&r));
                        (
                            wire::encode(decision.reply, wire::subscribe_result),
                            StatusCode::OK,
                        )
                    },
                )
                .await
            }
            "Publish" => {
                self.call(
                    ProxyKind::Publish,
                    m,
                    body,
                    async |r: proto::PublishRequest| -> (proto::PublishResponse, StatusCode) {
                        let decision = self.service.publish(Grpc, &wire::publish(&r)).await;
                        (
                            wire::encode(decision.reply, wire::publish_result),
                            StatusCode::OK,
                        )
                    },
                )
                .await
            }
            "RPC" => {
                self.call(
                    ProxyKind::Rpc,
                    m,
                    body,
                    async |r: proto::RpcRequest| -> (proto::RpcResponse, StatusCode) {
                        let decision = self.service.rpc(Grpc, &wire::rpc(&r)).await;
                        (
                            wire::encode(decision.reply, wire::rpc_result),
                            StatusCode::OK,
                        )
                    },
                )
                .await
            }
            "SubRefresh" => {
                self.call(
                    ProxyKind::SubRefresh,
                    m,
                    body,
                    async |r: proto::SubRefreshRequest| -> (proto::SubRefreshResponse, StatusCode) {
                        let decision = self.service.sub_refresh(Grpc, &wire::sub_refresh(&r));
                        (
                            wire::encode(decision.reply, wire::sub_refresh_result),
                            StatusCode::OK,
                        )
                    },
                )
                .await
            }
            // SubscribeUnidirectional, SubscribeBidirectional, NotifyCacheEmpty,
            // NotifyChannelState, MapPublish, MapRemove, SharedPollRefresh, and anything else.
            other => Err(Status::unimplemented(format!(
                "unknown method {other} for service {}: not served by realtime-service",
                proto::centrifugo_proxy_server::SERVICE_NAME
            ))),
        }
    }

    /// What every method does around its use case: a span that continues the caller's
    /// trace, the call's deadline, authentication before anything is read, the in-flight
    /// bound, the size limit, and the request and duration metrics.
    async fn call<Req: Message + Default, Resp: Envelope + Message>(
        &self,
        kind: ProxyKind,
        metadata: &MetadataMap,
        body: &mut Body,
        run: impl AsyncFnOnce(Req) -> (Resp, StatusCode),
    ) -> Result<Bytes, Status> {
        let span = tracing::info_span!(
            "proxy",
            otel.name = %format_args!("centrifugal.centrifugo.proxy.CentrifugoProxy/{}", method_name(kind)),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "centrifugal.centrifugo.proxy.CentrifugoProxy",
            rpc.method = method_name(kind),
            proxy = kind.as_str(),
        );
        if metadata.contains_key(crate::telemetry::TRACEPARENT) {
            let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
                propagator.extract(&MetadataExtractor(metadata))
            });
            // Only fails when no OpenTelemetry layer is installed, which is a valid configuration.
            let _ = span.set_parent(parent);
        }
        let started = Instant::now();
        // Counted however the call ends: dropped before an answer, it was reset by the client.
        let mut counted = Counted {
            metrics: &self.metrics,
            kind,
            status: None,
        };
        let deadline = body.deadline();
        let (response, status) = timeout(deadline, self.answer(metadata, body, run))
            .instrument(span)
            .await
            .unwrap_or_else(|_| {
                (
                    Err(Status::deadline_exceeded("the call's deadline expired")),
                    StatusCode::GATEWAY_TIMEOUT,
                )
            });
        counted.status = Some(status);
        self.metrics
            .observe_proxy_duration(kind, Grpc, started.elapsed().as_secs_f64());
        response.map(|r| frame(&r))
    }

    /// The answer, with the HTTP status the same answer has over HTTP (for the metric).
    async fn answer<Req: Message + Default, Resp: Envelope + Message>(
        &self,
        metadata: &MetadataMap,
        body: &mut Body,
        run: impl AsyncFnOnce(Req) -> (Resp, StatusCode),
    ) -> (Result<Resp, Status>, StatusCode) {
        let refused = |reply: Reply<Resp::Result>, status| (Ok(wire::encode(reply, |r| r)), status);
        if let Err(reason) = self.authenticate(metadata) {
            self.metrics
                .auth_rejections
                .with_label_values(&[reason.as_str()])
                .inc();
            // Every one is counted; the log line is rate-limited, since a peer can send
            // thousands a second on one connection.
            if let Some(more) = self.warnings.unauthenticated() {
                tracing::warn!(
                    reason = reason.as_str(),
                    refused_since_last = more,
                    "proxy call refused: request authentication failed: {reason}"
                );
            }
            return refused(Reply::unauthorized(), StatusCode::UNAUTHORIZED);
        }
        body.authenticated();
        let Some(_permit) = self.inflight.try_acquire() else {
            return refused(Reply::too_many_requests(), StatusCode::TOO_MANY_REQUESTS);
        };
        let message = match body.message().await {
            Ok(message::Message::Bytes(bytes)) => bytes,
            Ok(message::Message::TooLarge) => {
                tracing::warn!("proxy call refused: message larger than PROXY_MAX_BODY_BYTES (as sent or decompressed)");
                return refused(Reply::bad_request(), StatusCode::PAYLOAD_TOO_LARGE);
            }
            Err(status) => {
                let http = match status.code() {
                    tonic::Code::DeadlineExceeded => StatusCode::REQUEST_TIMEOUT,
                    _ => StatusCode::BAD_REQUEST,
                };
                return (Err(status), http);
            }
        };
        match Req::decode(message) {
            Ok(request) => {
                let (response, status) = run(request).await;
                (Ok(response), status)
            }
            Err(e) => (
                Err(Status::internal(format!(
                    "failed to decode the request message: {e}"
                ))),
                StatusCode::BAD_REQUEST,
            ),
        }
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

/// A bound gRPC listener with its service, ready to run.
pub struct GrpcServer {
    listener: TcpListener,
    shards: Shards<GrpcProxy>,
    tls: Option<TlsFiles>,
    limits: GrpcLimits,
    /// `realtime_http_connections_evicted_total{transport="grpc"}`.
    evictions: IntCounter,
}

impl GrpcServer {
    pub fn new(
        listener: TcpListener,
        shards: Shards<GrpcProxy>,
        tls: Option<TlsFiles>,
        limits: GrpcLimits,
        evictions: IntCounter,
    ) -> Self {
        Self {
            listener,
            shards,
            tls,
            limits,
            evictions,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The threads connections are served on.
    pub fn shards(&self) -> usize {
        self.shards.count()
    }

    /// Serves until `stop` resolves, then stops accepting and finishes in-flight calls.
    /// Dropping the future cuts the calls still running and stops the shards.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        serve::serve(
            self.listener,
            &self.shards,
            self.tls,
            self.limits,
            self.evictions,
            stop,
        )
        .await;
    }
}

/// Counts a call in `realtime_proxy_requests_total` when it ends, however it ends.
struct Counted<'a> {
    metrics: &'a Metrics,
    kind: ProxyKind,
    /// The status its answer has over HTTP; `None` if it was dropped before answering.
    status: Option<StatusCode>,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        // 499, nginx's "client closed request": the only way a call ends unanswered is a
        // reset stream (or the listener cutting it at shutdown).
        let status = match &self.status {
            Some(status) => status.as_str(),
            None => "499",
        };
        self.metrics.count_proxy_request(self.kind, status, Grpc);
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
