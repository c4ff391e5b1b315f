//! The tonic client for `realtime.v1.ConnectProxyService/Validate`.
//!
//! Validate consumes the ticket, so it is never retried: tonic has no retry policy and none
//! is added. The deadline travels as `grpc-timeout` (so identity-service can give up when we
//! do) and is also enforced locally. The channel connects lazily, so the service starts and
//! serves while identity-service is down.

use std::time::{Duration, Instant};

use opentelemetry::propagation::Injector;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::outcome::{code_label, Validation};
use super::proto::connect_proxy_service_client::ConnectProxyServiceClient;
use super::proto::ValidateRequest;
use super::TicketCall;
use crate::config;
use crate::metrics::Metrics;

/// Who made a call; a metric label, so probes do not blur request latency.
#[derive(Debug, Clone, Copy)]
pub enum CallSource {
    Request,
    Probe,
}

impl CallSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Probe => "probe",
        }
    }
}

#[derive(Clone)]
pub struct IdentityClient {
    client: ConnectProxyServiceClient<Channel>,
    deadline: Duration,
    metrics: Metrics,
}

impl IdentityClient {
    /// Builds the lazily connecting client. Fails only on TLS configuration errors (files
    /// that parse as PEM but that rustls cannot use).
    pub fn new(
        config: &config::Identity,
        metrics: Metrics,
    ) -> Result<Self, tonic::transport::Error> {
        let deadline = config.deadline;
        let mut endpoint = Endpoint::from(config.uri.clone())
            // A dial that cannot finish within the deadline is as good as failed.
            .connect_timeout(deadline)
            .tcp_nodelay(true)
            // Notice a silently dead connection between calls instead of on the next ticket.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(tls) = &config.tls {
            endpoint = endpoint.tls_config(tls_config(tls))?;
        }
        Ok(Self {
            client: ConnectProxyServiceClient::new(endpoint.connect_lazy()),
            deadline,
            metrics,
        })
    }

    /// One Validate call, classified. Never retried.
    pub async fn validate(&self, call: TicketCall<'_>, source: CallSource) -> Validation {
        let span = tracing::info_span!(
            "identity.validate",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = "realtime.v1.ConnectProxyService",
            rpc.method = "Validate",
            rpc.grpc.status_code = tracing::field::Empty,
            source = source.as_str(),
        );
        async {
            let mut request = tonic::Request::new(ValidateRequest {
                ticket: call.ticket.to_owned(),
                client_id: call.client_id.to_owned(),
                transport: call.transport.to_owned(),
            });
            request.set_timeout(self.deadline);
            inject_trace_context(request.metadata_mut());

            let started = Instant::now();
            let mut client = self.client.clone();
            let result = match tokio::time::timeout(self.deadline, client.validate(request)).await {
                // tonic also enforces the `grpc-timeout` it sends, and reports its own expiry as
                // CANCELLED; whichever timer fires first, that CANCELLED is our deadline. Any
                // other status stands, so an answer arriving at the deadline stays an answer.
                Err(_) => Err(deadline_exceeded()),
                Ok(Err(status))
                    if status.code() == tonic::Code::Cancelled
                        && started.elapsed() >= self.deadline =>
                {
                    Err(deadline_exceeded())
                }
                Ok(result) => result.map(tonic::Response::into_inner),
            };
            let code = code_label(&result);
            self.metrics
                .observe_identity(code, source.as_str(), started.elapsed().as_secs_f64());
            tracing::Span::current().record("rpc.grpc.status_code", code);

            let validation = Validation::from_response(result);
            if let Validation::Unreachable(why) = &validation {
                // Transport details are safe to log; the ticket never is.
                tracing::debug!(reason = ?why, "identity-service unreachable");
            }
            validation
        }
        .instrument(span)
        .await
    }
}

/// A custom CA replaces the public roots (an internal CA should not be trusted alongside
/// every public one for this connection); a client certificate is presented when the server
/// asks for one (mTLS).
fn tls_config(tls: &config::IdentityTls) -> ClientTlsConfig {
    use secrecy::ExposeSecret;
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca_pem {
        Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
        None => config.with_webpki_roots(),
    };
    if let Some(client) = &tls.client {
        config = config.identity(Identity::from_pem(
            &client.cert_pem,
            client.key_pem.expose_secret(),
        ));
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    config
}

fn deadline_exceeded() -> tonic::Status {
    tonic::Status::deadline_exceeded("identity-service did not answer within the deadline")
}

/// Writes the current span's W3C trace context into gRPC metadata.
fn inject_trace_context(metadata: &mut MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}
