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

    pub fn client(&self) -> &IdentityClient {
        &self.client
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
