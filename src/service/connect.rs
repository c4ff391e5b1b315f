//! connect: extract the ticket, validate it (or skip while another request probes a dead
//! identity-service), decide, and consult the fallback pool when the decision says so.

use super::ProxyService;
use crate::decide::connect::{self, Decision, Next};
use crate::fallback::TicketDigest;
use crate::identity::TicketCall;
use crate::proxy::{ConnectOutcome as Outcome, ConnectRequest, Reply, Transport};

impl ProxyService {
    pub async fn connect(&self, via: Transport, request: &ConnectRequest<'_>) -> Decision {
        let decision = self.decide_connect(request).await;
        self.0.metrics.count_connect(decision.outcome, via);
        log(&decision, request);
        decision
    }

    async fn decide_connect(&self, request: &ConnectRequest<'_>) -> Decision {
        let parts = &self.0;
        let ticket = match connect::extract_ticket(&request.data) {
            Ok(ticket) => ticket,
            Err(problem) => return connect::ticket_problem(problem),
        };
        let attempt = parts
            .identity
            .validate(TicketCall {
                ticket: &ticket,
                client_id: request.client,
                transport: request.transport,
            })
            .await;
        let degraded = parts.identity.detector().is_degraded();
        match connect::decide(
            &attempt,
            degraded,
            &parts.connect,
            parts.clock.unix_seconds(),
        ) {
            Next::Done(decision) => decision,
            Next::ConsultPool => {
                let digest = TicketDigest::of(ticket.as_bytes());
                let take = parts.pool.take(&digest).await;
                connect::from_pool(take, &digest, &parts.connect, parts.clock.unix_seconds())
            }
        }
    }
}

/// One line per decision, at a level that matches how much an operator should care: the
/// outage itself is a WARN (logged once, by the detector); each pool admission is an INFO
/// audit line, so a reconnect storm during an outage does not flood the warning channel.
/// The ticket is never logged; a pool connection is named by its digest-derived user.
fn log(decision: &Decision, request: &ConnectRequest<'_>) {
    let outcome = decision.outcome.as_str();
    let client = request.client;
    match decision.outcome {
        Outcome::Accepted | Outcome::AcceptedDegraded => {
            tracing::debug!(outcome, client, "connect accepted");
        }
        Outcome::FallbackPoolConsumed => {
            let user = match &decision.reply {
                Reply::Result(r) => r.user.as_str(),
                _ => "",
            };
            tracing::info!(
                outcome,
                client,
                user,
                "connect accepted from the fallback pool (degraded)"
            );
        }
        Outcome::FallbackPoolReused => {
            tracing::info!(
                outcome,
                client,
                "connect refused: the fallback pool ticket was already used"
            );
        }
        Outcome::Disconnected | Outcome::InvalidTicket | Outcome::BadRequest => {
            tracing::info!(outcome, client, "connect refused");
        }
        Outcome::IdentityError
        | Outcome::Unavailable
        | Outcome::FallbackPoolMiss
        | Outcome::InternalError => {
            tracing::warn!(outcome, client, "connect could not be validated");
        }
        // Redis's outage itself is logged once per streak by its client; this is one
        // connect among possibly thousands a second.
        Outcome::FallbackLedgerUnavailable => {
            tracing::info!(
                outcome,
                client,
                "connect refused: the fallback ledger could not record the ticket"
            );
        }
    }
}
