//! `POST /centrifugo/connect`: extract the ticket, validate it (or skip while another request
//! probes a dead identity-service), decide, and consult the fallback pool when the decision
//! says so. The decisions themselves live in `crate::connect`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::error::json_response;
use super::extract::Verified;
use crate::centrifugo::ProxyRequest;
use crate::connect::{self, Decision, Next, Outcome};
use crate::fallback::TicketDigest;
use crate::identity::TicketCall;
use crate::state::AppState;

pub async fn connect(
    State(state): State<AppState>,
    Verified(request): Verified<ProxyRequest>,
) -> Response {
    let decision = decide(&state, &request).await;
    state
        .metrics
        .connect_outcomes
        .with_label_values(&[decision.outcome.as_str()])
        .inc();
    log(&decision, &request);
    let status = StatusCode::from_u16(decision.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &decision.reply)
}

async fn decide(state: &AppState, request: &ProxyRequest) -> Decision {
    let ticket = match connect::extract_ticket(request) {
        Ok(ticket) => ticket,
        Err(problem) => return connect::ticket_problem(problem),
    };
    let attempt = state
        .identity
        .validate(TicketCall {
            ticket: &ticket,
            client_id: &request.client,
            transport: &request.transport,
        })
        .await;
    let degraded = state.identity.detector().is_degraded();
    match connect::decide(
        &attempt,
        degraded,
        &state.connect,
        state.clock.unix_seconds(),
    ) {
        Next::Done(decision) => decision,
        Next::ConsultPool => {
            let digest = TicketDigest::of(ticket.as_bytes());
            let take = state.pool.take(&digest).await;
            connect::from_pool(take, &digest, &state.connect, state.clock.unix_seconds())
        }
    }
}

/// One line per decision, at a level that matches how much an operator should care: the
/// outage itself is a WARN (logged once, by the detector); each pool admission is an INFO
/// audit line, so a reconnect storm during an outage does not flood the warning channel.
/// The ticket is never logged; a pool connection is named by its digest-derived user.
fn log(decision: &Decision, request: &ProxyRequest) {
    let outcome = decision.outcome.as_str();
    let client = request.client.as_str();
    match decision.outcome {
        Outcome::Accepted | Outcome::AcceptedDegraded => {
            tracing::debug!(outcome, client, "connect accepted");
        }
        Outcome::FallbackPoolConsumed => {
            let user = match &decision.reply {
                crate::centrifugo::Reply::Result(r) => r.user.as_str(),
                _ => "",
            };
            tracing::info!(
                outcome,
                client,
                user,
                "connect accepted from the fallback pool (degraded)"
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
    }
}
