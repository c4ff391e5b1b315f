//! The tonic client for `realtime.v1.ConnectProxyService/Validate`.
//!
//! Validate consumes the ticket, so it is never retried: tonic has no retry policy and none
//! is added. The deadline travels as `grpc-timeout` (so identity-service can give up when we
//! do) and is also enforced locally. The channel connects lazily, so the service starts and
//! serves while identity-service is down.

use std::time::{Duration, Instant};

use opentelemetry::propagation::Injector;
use tonic::metadata::{Ascii, MetadataKey, MetadataMap, MetadataValue};
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
    /// `grpc-timeout` for `deadline`, written once (tonic would format it on every call).
    grpc_timeout: MetadataValue<Ascii>,
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
            grpc_timeout: grpc_timeout(deadline),
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
        // Boxed: tonic's call is the largest future on the request path (over 2 KB), and
        // every future that awaits it would otherwise carry it inline and be moved, bytes and
        // all, at each level on the way up (HTTP handler, gRPC call set).
        Box::pin(
            async {
                let mut request = tonic::Request::new(ValidateRequest {
                    ticket: call.ticket.to_owned(),
                    client_id: call.client_id.to_owned(),
                    transport: call.transport.to_owned(),
                });
                request
                    .metadata_mut()
                    .insert(GRPC_TIMEOUT, self.grpc_timeout.clone());
                inject_trace_context(request.metadata_mut());

                let started = Instant::now();
                let mut client = self.client.clone();
                let result =
                    match tokio::time::timeout(self.deadline, client.validate(request)).await {
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
                self.metrics.observe_identity(
                    code,
                    source.as_str(),
                    started.elapsed().as_secs_f64(),
                );
                tracing::Span::current().record("rpc.grpc.status_code", code);

                let validation = Validation::from_response(result);
                if let Validation::Unreachable(why) = &validation {
                    // Transport details are safe to log; the ticket never is.
                    tracing::debug!(reason = ?why, "identity-service unreachable");
                }
                validation
            }
            .instrument(span),
        )
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
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// A `grpc-timeout` value as tonic's `Request::set_timeout` writes it: the finest unit whose
/// count fits the protocol's eight digits.
fn grpc_timeout(deadline: Duration) -> MetadataValue<Ascii> {
    const MAX: u128 = 99_999_999;
    let secs = u128::from(deadline.as_secs());
    let (count, unit) = [
        (deadline.as_nanos(), 'n'),
        (deadline.as_micros(), 'u'),
        (deadline.as_millis(), 'm'),
        (secs, 'S'),
        (secs / 60, 'M'),
    ]
    .into_iter()
    .find(|(count, _)| *count <= MAX)
    .unwrap_or((secs / 3600, 'H'));
    let text = format!("{}{unit}", count.min(MAX));
    // Digits and a letter are always a valid ASCII value.
    MetadataValue::try_from(text.as_str()).unwrap_or_else(|_| MetadataValue::from_static("1H"))
}

fn inject_trace_context(metadata: &mut MetadataMap) {
    let span = tracing::Span::current();
    // No subscriber records this span: there is no trace to pass on.
    if span.is_disabled() {
        return;
    }
    let context = span.context();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::grpc::parse_grpc_timeout;

    #[test]
    fn grpc_timeout_is_the_finest_unit_that_fits_eight_digits() {
        for (deadline, text) in [
            (Duration::from_millis(2500), "2500000u"),
            (Duration::from_millis(50), "50000000n"),
            (Duration::from_millis(99), "99000000n"),
            (Duration::from_millis(100), "100000u"),
            (Duration::from_secs(200), "200000m"),
            (Duration::from_secs(100_000_000), "1666666M"),
        ] {
            let value = grpc_timeout(deadline);
            assert_eq!(value.to_str().expect("ascii"), text, "{deadline:?}");
        }
        for ms in [1, 7, 999, 2500, 60_000, 3_600_000] {
            let deadline = Duration::from_millis(ms);
            let value = grpc_timeout(deadline);
            let parsed = parse_grpc_timeout(value.to_str().expect("ascii"));
            assert_eq!(parsed, Some(deadline), "{value:?}");
        }
    }
}
