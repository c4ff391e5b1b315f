//! The OTLP/HTTP span exporter: built on the TLS-capable HTTP client (`tls`), and wrapped so
//! that a failed export is never silent. The SDK drops a batch it cannot deliver and, built
//! without its internal logs, says nothing; here each failure counts in
//! `realtime_otel_export_failures_total` and logs a WARN, at most one per
//! `WARN_INTERVAL` with the number held back, so a collector outage cannot flood the log.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::log_limit::LogLimit;

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use crate::metrics::OTEL_EXPORT_FAILURES;

/// At most one export-failure WARN per this interval.
pub const WARN_INTERVAL: Duration = Duration::from_secs(30);

/// The OTLP/HTTP exporter for `url` (the full `/v1/traces` URL), counting its failures.
pub fn span_exporter(
    url: String,
    timeout: Duration,
) -> Result<CountingExporter<opentelemetry_otlp::SpanExporter>, String> {
    let client = crate::tls::blocking_http_client(timeout)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(url)
        .with_timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(CountingExporter::new(exporter))
}

/// A `SpanExporter` that counts and reports the failures of the one it wraps.
#[derive(Debug)]
pub struct CountingExporter<E> {
    inner: E,
    warnings: Mutex<LogLimit>,
}

impl<E> CountingExporter<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            warnings: Mutex::new(LogLimit::new(WARN_INTERVAL)),
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
        let result = self.inner.export(batch).await;
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
        let exporter = span_exporter(url, Duration::from_secs(2)).expect("exporter builds");
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
