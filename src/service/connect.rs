//! connect: extract the ticket, validate it (or skip while another request probes a dead
//! identity-service), decide, and consult the fallback pool when the decision says so.

use super::ProxyService;
use crate::decide::connect::{self, Decision, Next};
use crate::fallback::TicketDigest;
use crate::identity::TicketCall;
use crate::proxy::{ConnectOutcome as Outcome, ConnectRequest, Reply, Transport};

impl ProxyService {
    /// The decision, counted and logged. A caller that goes away (a reset gRPC stream, a
    /// closed HTTP connection) cancels this; only a pool take, once begun, runs to the end.
    pub async fn connect(&self, via: Transport, request: &ConnectRequest<'_>) -> Decision {
        let decision = match self.validate_connect(request).await {
            Step::Done(decision) => decision,
            Step::ConsultPool(digest) => {
                // A claim in a shared ledger is a round trip: cancelled half-way, the ticket
                // would be used up with no connection and no audit line. So the take and its
                // record run as a task of their own, which finishes even if this call is
                // dropped; the caller only waits for it.
                let service = self.clone();
                let client = request.client.to_owned();
                let take = tokio::spawn(async move {
                    let decision = service.take_from_pool(&digest).await;
                    service.record(&decision, via, &client);
                    decision
                });
                // A task only fails if it panicked or its runtime is stopping.
                return take.await.unwrap_or_else(|_| {
                    Decision::new(Outcome::InternalError, Reply::internal_error())
                });
            }
        };
        self.record(&decision, via, request.client);
        decision
    }

    fn record(&self, decision: &Decision, via: Transport, client: &str) {
        self.0.metrics.count_connect(decision.outcome, via);
        log(decision, client);
    }

    async fn take_from_pool(&self, digest: &TicketDigest) -> Decision {
        let parts = &self.0;
        let take = parts.pool.take(digest).await;
        connect::from_pool(take, digest, &parts.connect, parts.clock.unix_seconds())
    }

    /// Validation and the decision it leads to, or the ticket to look up in the pool.
    async fn validate_connect(&self, request: &ConnectRequest<'_>) -> Step {
        let parts = &self.0;
        let ticket = match connect::extract_ticket(&request.data) {
            Ok(ticket) => ticket,
            Err(problem) => return Step::Done(connect::ticket_problem(problem)),
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
            Next::Done(decision) => Step::Done(decision),
            Next::ConsultPool => Step::ConsultPool(TicketDigest::of(ticket.as_bytes())),
        }
    }
}

/// Where validation leaves a connect.
enum Step {
    Done(Decision),
    ConsultPool(TicketDigest),
}

/// One line per decision, at a level that matches how much an operator should care: the
/// outage itself is a WARN (logged once, by the detector); each pool admission is an INFO
/// audit line, so a reconnect storm during an outage does not flood the warning channel.
/// The ticket is never logged; a pool connection is named by its digest-derived user.
fn log(decision: &Decision, client: &str) {
    let outcome = decision.outcome.as_str();
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
