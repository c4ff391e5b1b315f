//! `realtime-service standin`: a stand-in identity-service as its own process, for running
//! the service next to a real Centrifugo (the quick start, the end-to-end suite, the `dev`
//! Kubernetes overlay) before the real identity-service is at hand.
//!
//! It answers `realtime.v1.ConnectProxyService/Validate` as identity-service does, for
//! tickets it minted itself: each is **single use**, like the real ones, so a client that
//! sends a ticket twice is caught (`/stats` counts it). A small HTTP side on loopback is the
//! app backend's part and the operator's lever:
//!
//! | route | what it does |
//! |---|---|
//! | `POST /tickets` | mints a ticket; body (optional) `{"user","family","tier","admin"}`; answers `{"ticket":…}` |
//! | `PUT /mode` | `up`, `down` (port closed, connections dropped), `stall` (calls never answered), `fail` (UNAVAILABLE) |
//! | `GET /stats` | Validate calls, accepted, unknown, reused tickets, calls in flight and their peak |
//! | `POST /stats/reset` | zeroes the counters |
//! | `POST /rpc` | the demo rpc backend: `demo.echo` answers its data back |
//!
//! The reusable ticket `demo-ticket-ok` is always accepted, for trying things by hand.
//!
//! A development tool, not a hardened server: it listens on loopback by default, and its HTTP
//! side has no authentication and no read timeouts. Its memory is bounded (`MAX_TICKETS`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use tonic::{Request, Status};

use super::identity::{self, Answers, IdentityServer};
use crate::identity::proto::{self, ValidateRequest, ValidateResponse};

/// The ticket that is always accepted (never consumed), for curl and SDK snippets.
pub const REUSABLE_TICKET: &str = "demo-ticket-ok";
/// How many tickets (unused, and used within their TTL) are kept: minting past it answers
/// 503, so an HTTP client cannot grow the process without bound (about 300 bytes each).
const MAX_TICKETS: usize = 200_000;
/// How long a minted ticket stays valid (identity-service's tickets are short-lived too).
const TICKET_TTL: Duration = Duration::from_secs(300);
/// The largest control request body.
const MAX_CONTROL_BODY: usize = 4096;

/// What the stand-in does with a Validate call right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers.
    Up,
    /// Not listening: the relay is stopped, open connections dropped.
    Down,
    /// Accepts calls and never answers them (the caller's deadline ends them).
    Stall,
    /// Answers every call UNAVAILABLE at once.
    Fail,
}

impl Mode {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "up" => Some(Self::Up),
            "down" => Some(Self::Down),
            "stall" => Some(Self::Stall),
            "fail" => Some(Self::Fail),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Stall => "stall",
            Self::Fail => "fail",
        }
    }
}

/// Counters behind `GET /stats`.
#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    accepted: AtomicU64,
    unknown: AtomicU64,
    reused: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

impl Stats {
    fn reset(&self) {
        for counter in [
            &self.calls,
            &self.accepted,
            &self.unknown,
            &self.reused,
            &self.peak_in_flight,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    fn to_json(&self, mode: Mode, minted: usize) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "mode": mode.as_str(),
            "validate_calls": get(&self.calls),
            "accepted": get(&self.accepted),
            "unknown": get(&self.unknown),
            "reused": get(&self.reused),
            "in_flight": get(&self.in_flight),
            "peak_in_flight": get(&self.peak_in_flight),
            "tickets_unused": minted,
        })
    }
}

/// Counts a call in flight for as long as it lives, cancellation included.
struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn enter(stats: &'a Stats) -> Self {
        let now = stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Who a minted ticket names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    #[serde(default = "default_user")]
    user: String,
    #[serde(default = "default_family")]
    family: String,
    #[serde(default)]
    tier: Tier,
    #[serde(default)]
    admin: bool,
}

fn default_user() -> String {
    "demo-user".into()
}

fn default_family() -> String {
    "demo-family".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Tier {
    Free,
    #[default]
    Pro,
    Family,
}

impl From<Tier> for proto::SubscriptionTier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Free => Self::Free,
            Tier::Pro => Self::Pro,
            Tier::Family => Self::Family,
        }
    }
}

/// Minted tickets: single use, expiring, bounded.
#[derive(Default)]
struct Tickets {
    unused: HashMap<String, (Instant, ValidateResponse)>,
    /// Used tickets, kept (ticket only) so a second use is told from an unknown ticket.
    used: HashMap<String, Instant>,
}

impl Tickets {
    /// Drops what has expired; called when the table is full, so the cost is paid rarely.
    fn expire(&mut self, now: Instant) {
        self.unused
            .retain(|_, (minted, _)| now.duration_since(*minted) < TICKET_TTL);
        self.used
            .retain(|_, used| now.duration_since(*used) < TICKET_TTL);
    }
}

/// The stand-in's state, shared by the gRPC and HTTP sides.
pub struct Standin {
    tickets: Mutex<Tickets>,
    stats: Stats,
    mode: watch::Sender<Mode>,
    reusable: ValidateResponse,
}

/// What a Validate call found.
enum Lookup {
    Accepted(ValidateResponse),
    Reused,
    Unknown,
}

impl Standin {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            tickets: Mutex::default(),
            stats: Stats::default(),
            mode: watch::channel(Mode::Up).0,
            reusable: identity::success(
                "demo-user",
                "demo-family",
                proto::SubscriptionTier::Pro,
                false,
            ),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tickets> {
        self.tickets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh random ticket for `request`, or `None` when the table is full of live ones.
    fn mint(&self, request: MintRequest) -> Result<Option<String>, getrandom::Error> {
        let mut raw = [0u8; 18];
        getrandom::fill(&mut raw)?;
        let ticket = format!("st-{}", hex::encode(raw));
        let mut answer =
            identity::success(&request.user, &request.family, request.tier.into(), false);
        if let Some(proto::validate_response::Result::Success(success)) = answer.result.as_mut() {
            if let Some(context) = success.context.as_mut() {
                context.is_admin = request.admin;
            }
        }
        let now = Instant::now();
        let mut tickets = self.lock();
        if tickets.unused.len() + tickets.used.len() >= MAX_TICKETS {
            tickets.expire(now);
            if tickets.unused.len() + tickets.used.len() >= MAX_TICKETS {
                return Ok(None);
            }
        }
        tickets.unused.insert(ticket.clone(), (now, answer));
        Ok(Some(ticket))
    }

    fn take(&self, ticket: &str) -> Lookup {
        if ticket == REUSABLE_TICKET {
            return Lookup::Accepted(self.reusable.clone());
        }
        let now = Instant::now();
        let mut tickets = self.lock();
        match tickets.unused.remove(ticket) {
            Some((minted, answer)) if now.duration_since(minted) < TICKET_TTL => {
                tickets.used.insert(ticket.to_owned(), now);
                Lookup::Accepted(answer)
            }
            Some(_) => Lookup::Unknown,
            None if tickets.used.contains_key(ticket) => Lookup::Reused,
            None => Lookup::Unknown,
        }
    }

    fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

#[tonic::async_trait]
impl Answers for Standin {
    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<tonic::Response<ValidateResponse>, Status> {
        // The service's background probe sends an empty ticket: answered, never counted.
        let ticket = identity::ticket_of(request)?;
        let stats = &self.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight::enter(stats);
        let mut mode = self.mode.subscribe();
        loop {
            let now = *mode.borrow_and_update();
            match now {
                Mode::Fail => return Err(Status::unavailable("stand-in set to fail")),
                // A stalled call waits for the mode to change; the caller's deadline (or its
                // cancellation, which drops this future) normally ends it first.
                Mode::Stall => {
                    if mode.changed().await.is_err() {
                        return Err(Status::unavailable("stand-in stopping"));
                    }
                }
                Mode::Up | Mode::Down => break,
            }
        }
        match self.take(&ticket) {
            Lookup::Accepted(answer) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(tonic::Response::new(answer))
            }
            Lookup::Reused => {
                stats.reused.fetch_add(1, Ordering::Relaxed);
                Err(Status::not_found("ticket already used"))
            }
            Lookup::Unknown => {
                stats.unknown.fetch_add(1, Ordering::Relaxed);
                Err(Status::not_found("unknown ticket"))
            }
        }
    }
}

/// Where the two sides listen.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Addresses {
    /// `STANDIN_GRPC_LISTEN` (default `127.0.0.1:50051`) and `STANDIN_HTTP_LISTEN` (default
    /// `127.0.0.1:50052`); port 0 picks a free one.
    pub fn from_env() -> Result<Self, String> {
        let read = |var: &str, default: &str| {
            let value = std::env::var(var).unwrap_or_else(|_| default.into());
            value
                .parse::<SocketAddr>()
                .map_err(|e| format!("{var}={value:?} is not host:port ({e})"))
        };
        Ok(Self {
            grpc: read("STANDIN_GRPC_LISTEN", "127.0.0.1:50051")?,
            http: read("STANDIN_HTTP_LISTEN", "127.0.0.1:50052")?,
        })
    }
}

type Shared = (Arc<Standin>, Arc<IdentityServer>);

/// Runs until `stop` resolves. Prints one line with both addresses once both listen.
pub async fn run(
    addresses: Addresses,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let standin = Standin::new();
    let server = Arc::new(IdentityServer::start_on(addresses.grpc, standin.clone()).await?);
    let listener = tokio::net::TcpListener::bind(addresses.http).await?;
    let http = listener.local_addr()?;
    let router = axum::Router::new()
        .route("/tickets", axum::routing::post(mint))
        .route("/mode", axum::routing::put(set_mode))
        .route("/stats", axum::routing::get(stats))
        .route("/stats/reset", axum::routing::post(reset))
        .route("/rpc", axum::routing::post(super::echo))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_CONTROL_BODY))
        .with_state((standin, server.clone()));
    println!(
        "standin: identity-service (gRPC) on {}, tickets/mode/stats/rpc (HTTP) on http://{http}",
        server.address()
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn mint(State((standin, _)): State<Shared>, body: Bytes) -> Response {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_str("{}")
    } else {
        serde_json::from_slice::<MintRequest>(&body)
    };
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            return json_response(StatusCode::BAD_REQUEST, json!({ "message": e.to_string() }))
        }
    };
    match standin.mint(request) {
        Ok(Some(ticket)) => json_response(StatusCode::OK, json!({ "ticket": ticket })),
        Ok(None) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "message": "too many unused tickets" }),
        ),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "message": format!("no randomness: {e}") }),
        ),
    }
}

async fn set_mode(State((standin, server)): State<Shared>, body: Bytes) -> Response {
    let Some(mode) = std::str::from_utf8(&body).ok().and_then(Mode::parse) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "message": "mode is one of up, down, stall, fail" }),
        );
    };
    let was = standin.mode();
    if mode == Mode::Down {
        server.stop();
    } else if was == Mode::Down {
        if let Err(e) = server.restart().await {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "message": format!("cannot listen again: {e}") }),
            );
        }
    }
    standin.mode.send_replace(mode);
    println!("standin: identity-service is {}", mode.as_str());
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State((standin, _)): State<Shared>) -> Response {
    let unused = standin.lock().unused.len();
    json_response(
        StatusCode::OK,
        standin.stats.to_json(standin.mode(), unused),
    )
}

async fn reset(State((standin, _)): State<Shared>) -> Response {
    standin.stats.reset();
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> MintRequest {
        serde_json::from_str("{}").expect("defaults")
    }

    #[test]
    fn a_minted_ticket_is_accepted_once_then_reported_reused() {
        let standin = Standin::new();
        let ticket = standin.mint(request()).expect("random").expect("room");
        assert!(matches!(standin.take(&ticket), Lookup::Accepted(_)));
        assert!(matches!(standin.take(&ticket), Lookup::Reused));
        assert!(matches!(standin.take("st-never-minted"), Lookup::Unknown));
    }

    #[test]
    fn the_reusable_ticket_is_never_consumed() {
        let standin = Standin::new();
        for _ in 0..3 {
            assert!(matches!(standin.take(REUSABLE_TICKET), Lookup::Accepted(_)));
        }
    }

    #[test]
    fn a_mint_request_names_who_the_ticket_is_for() {
        let request: MintRequest =
            serde_json::from_str(r#"{"user":"alice","family":"f1","tier":"family","admin":true}"#)
                .expect("parses");
        let standin = Standin::new();
        let ticket = standin.mint(request).expect("random").expect("room");
        let Lookup::Accepted(answer) = standin.take(&ticket) else {
            panic!("minted ticket refused");
        };
        let Some(proto::validate_response::Result::Success(success)) = answer.result else {
            panic!("not a success");
        };
        assert_eq!(success.user_id, "alice");
        let context = success.context.expect("context");
        assert_eq!(context.family_id, "f1");
        assert!(context.is_admin);
        assert_eq!(
            context.subscription_tier,
            proto::SubscriptionTier::Family as i32
        );
    }

    #[test]
    fn unknown_fields_and_modes_are_refused() {
        assert!(serde_json::from_str::<MintRequest>(r#"{"usr":"x"}"#).is_err());
        assert_eq!(Mode::parse("stall\n"), Some(Mode::Stall));
        assert_eq!(Mode::parse("sideways"), None);
    }
}
