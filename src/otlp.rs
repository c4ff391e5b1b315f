//! The OTLP span exporter, over HTTP/protobuf (the TLS-capable blocking HTTP client of `tls`)
//! or over gRPC (tonic), and wrapped so that a failed export is never silent. The SDK drops
//! a batch it cannot deliver and, built without its internal logs, says nothing; here each
//! failure counts in `realtime_otel_export_failures_total` and logs a WARN, at most one per
//! `WARN_INTERVAL` with the number held back, so a collector outage cannot flood the log.
//!
//! The gRPC exporter's channel lives on a small runtime of its own (one worker thread,
//! `otlp-grpc`): the SDK's batch processor exports from a plain thread, and tonic needs a
//! runtime for its connection and timers. Each export is polled inside that runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::config::{OtlpProtocol, OutgoingTls, TracesEndpoint};
use crate::log_limit::LogLimit;

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use crate::metrics::OTEL_EXPORT_FAILURES;

/// At most one export-failure WARN per this interval.
pub const WARN_INTERVAL: Duration = Duration::from_secs(30);

/// The exporter `endpoint` describes, counting its failures.
pub fn span_exporter(
    endpoint: &TracesEndpoint,
) -> Result<CountingExporter<opentelemetry_otlp::SpanExporter>, String> {
    match endpoint.protocol {
        OtlpProtocol::HttpProtobuf => {
            let client = crate::tls::blocking_http_client(endpoint.timeout, &endpoint.tls)?;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_endpoint(endpoint.url.clone())
                .with_timeout(endpoint.timeout)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(CountingExporter::new(exporter))
        }
        OtlpProtocol::Grpc => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("otlp-grpc")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the exporter's runtime: {e}"))?;
            let exporter = {
                // tonic spawns its connection task where the channel is built.
                let _inside = runtime.enter();
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.url.clone())
                    .with_timeout(endpoint.timeout);
                if endpoint.url.starts_with("https://") {
                    builder = builder.with_tls_config(grpc_tls(&endpoint.tls));
                }
                builder.build().map_err(|e| e.to_string())?
            };
            let mut counting = CountingExporter::new(exporter);
            counting.runtime = Some(runtime);
            Ok(counting)
        }
    }
}

/// tonic's TLS for the collector: as `crate::tls::client_config_with` for HTTP, a CA
/// replaces the public roots.
fn grpc_tls(tls: &OutgoingTls) -> tonic::transport::ClientTlsConfig {
    use secrecy::ExposeSecret;
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut config = match &tls.ca_pem {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
        None => ClientTlsConfig::new().with_webpki_roots(),
    };
    if let Some(client) = &tls.client {
        config = config.identity(Identity::from_pem(
            &client.cert_pem,
            client.key_pem.expose_secret(),
        ));
    }
    config
}

/// A future polled inside a runtime's context (its reactor and timers), from any thread.
struct InRuntime<'a, T> {
    handle: tokio::runtime::Handle,
    future: Pin<Box<dyn Future<Output = T> + Send + 'a>>,
}

impl<T> Future for InRuntime<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        let _inside = this.handle.enter();
        this.future.as_mut().poll(cx)
    }
}

/// A `SpanExporter` that counts and reports the failures of the one it wraps.
#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
    warnings: Mutex<LogLimit>,
    /// The gRPC exporter's runtime; shut down after the exporter, when this is dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl<E> CountingExporter<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            warnings: Mutex::new(LogLimit::new(WARN_INTERVAL)),
            runtime: None,
        }
    }

    fn failed(&self, error: &dyn std::fmt::Display) {
        OTEL_EXPORT_FAILURES.inc();
        let due = self
            .warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(Instant::now());
        if let Some(suppressed) = due {
            // The error is the exporter's (collector URL, HTTP status, TLS failure): no span
            // content, nothing secret.
            tracing::warn!(
                error = %error,
                suppressed,
                "OTLP span export failed; the batch is dropped (at most one such warning every 30 s, suppressed counts the ones held back)"
            );
        }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let export = self.inner.export(batch);
        let result = match &self.runtime {
            Some(runtime) => {
                InRuntime {
                    handle: runtime.handle().clone(),
                    future: Box::pin(export),
                }
                .await
            }
            None => export.await,
        };
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use opentelemetry::trace::{Tracer, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// Ends one span through a synchronous exporter to `url`; returns how many export
    /// failures were counted meanwhile (other tests in this binary export nothing).
    fn export_one_span(url: String) -> u64 {
        let before = OTEL_EXPORT_FAILURES.get();
        let endpoint = TracesEndpoint {
            url,
            var: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            protocol: OtlpProtocol::HttpProtobuf,
            timeout: Duration::from_secs(2),
            tls: OutgoingTls::default(),
        };
        let exporter = span_exporter(&endpoint).expect("exporter builds");
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .build();
        provider.tracer("test").in_span("export-me", |_| {});
        let _ = provider.shutdown();
        OTEL_EXPORT_FAILURES.get() - before
    }

    fn free_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }

    #[test]
    fn a_refused_connection_is_counted() {
        let url = format!("http://127.0.0.1:{}/v1/traces", free_port());
        assert!(export_one_span(url) >= 1);
    }

    /// A listener that answers the first connection with `reply` and records what arrived.
    fn answer_once(reply: &'static [u8]) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().expect("accept");
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut first = vec![0u8; 512];
            let n = socket.read(&mut first).unwrap_or(0);
            first.truncate(n);
            let _ = socket.write_all(reply);
            first
        });
        (port, handle)
    }

    #[test]
    fn a_garbled_answer_is_counted() {
        let (port, seen) = answer_once(b"this is not HTTP\r\n\r\n");
        assert!(export_one_span(format!("http://127.0.0.1:{port}/v1/traces")) >= 1);
        let request = seen.join().expect("listener");
        assert!(request.starts_with(b"POST /v1/traces"), "{request:?}");
    }

    #[test]
    fn https_collectors_are_spoken_to_in_tls() {
        // Not a TLS server: the client's first bytes must be a TLS handshake record, and the
        // failed handshake must be counted.
        let (port, seen) = answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(export_one_span(format!("https://127.0.0.1:{port}/v1/traces")) >= 1);
        let hello = seen.join().expect("listener");
        assert_eq!(
            hello.first(),
            Some(&0x16),
            "a TLS handshake record: {hello:?}"
        );
    }
}
