//! identity-service: the gRPC client that validates tickets, the classification of its
//! answers, the outage detector fed by that classification, and the background probe.
//!
//! `Gateway` is what the connect proxy talks to: it decides whether a call may go out at all
//! (while degraded only one request at a time probes a dead service), makes the call,
//! classifies it, and feeds the result to the detector, so no caller can forget a step.

pub mod client;
pub mod outage;
pub mod outcome;
pub mod probe;

pub use client::{CallSource, IdentityClient};
pub use outage::{OutageDetector, OutageSnapshot};
pub use outcome::{Identity, Validation};

/// Code generated from `proto/realtime/v1/connect_proxy.proto`.
pub mod proto {
    // Generated code: lints that fire on it are not ours to fix.
    #![allow(clippy::all, clippy::pedantic, clippy::unwrap_used)]
    tonic::include_proto!("realtime.v1");
}

/// A connect's ticket as identity-service will see it.
#[derive(Clone, Copy)]
pub struct TicketCall<'a> {
    pub ticket: &'a str,
    pub client_id: &'a str,
    pub transport: &'a str,
}

/// What happened to a connect's Validate.
#[derive(Debug)]
pub enum Attempt {
    /// The call went out and this is its classified result.
    Called(Validation),
    /// Degraded, and another request already holds the one probing slot: no call was made.
    Skipped,
}

#[derive(Clone)]
pub struct Gateway {
    client: IdentityClient,
    detector: OutageDetector,
}

impl Gateway {
    pub fn new(client: IdentityClient, detector: OutageDetector) -> Self {
        Self { client, detector }
    }

    pub fn detector(&self) -> &OutageDetector {
        &self.detector
    }

    /// Validates a connect ticket, respecting the degraded-mode single slot.
    pub async fn validate(&self, call: TicketCall<'_>) -> Attempt {
        let Some(_slot) = self.detector.admit() else {
            return Attempt::Skipped;
        };
        let validation = self.client.validate(call, CallSource::Request).await;
        self.detector.record(validation.reached_identity());
        Attempt::Called(validation)
        // `_slot` drops here, after the outcome is recorded: the next request sees the new state.
    }

    /// One background probe: an empty ticket, which identity-service answers without
    /// consuming anything. Does not take the request slot.
    pub async fn probe(&self) {
        let call = TicketCall {
            ticket: "",
            client_id: "",
            transport: "",
        };
        let validation = self.client.validate(call, CallSource::Probe).await;
        self.detector.record(validation.reached_identity());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::config::Config;
    use crate::metrics::Metrics;

    /// A listener that accepts connections, counts them, and never answers: a call through
    /// it stays in flight until its deadline.
    async fn silent_listener() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        (addr, accepted, task)
    }

    #[tokio::test]
    async fn the_background_probe_does_not_take_the_request_slot() {
        let (addr, accepted, listener) = silent_listener().await;
        let config = Config::from_pairs([
            ("CENTRIFUGO_PROXY_AUTH", "none"),
            ("IDENTITY_VALIDATE_GRPC_ADDRESS", addr.as_str()),
            ("IDENTITY_VALIDATE_DEADLINE_MS", "5000"),
        ])
        .expect("config");
        let clock = Clock::manual();
        let detector = OutageDetector::new(Duration::from_secs(5), clock.clone());
        let gateway = Gateway::new(
            IdentityClient::new(&config.identity, Metrics::new()).expect("client"),
            detector.clone(),
        );
        detector.record(false);
        clock.advance(Duration::from_secs(6));
        assert!(detector.is_degraded());

        let probe = tokio::spawn({
            let gateway = gateway.clone();
            async move { gateway.probe().await }
        });
        // The probe is in flight once its connection is accepted (and then hangs).
        for _ in 0..500 {
            if accepted.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            accepted.load(Ordering::SeqCst) > 0,
            "the probe never connected"
        );
        assert!(
            !probe.is_finished(),
            "the probe is still waiting for an answer"
        );

        // A request still gets the one degraded-mode slot; a second one is sent to the pool.
        let slot = detector.admit();
        assert!(slot.is_some(), "the probe must not hold the request slot");
        assert!(detector.admit().is_none());

        probe.abort();
        listener.abort();
    }
}
