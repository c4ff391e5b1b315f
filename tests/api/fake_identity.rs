//! A scriptable stand-in for identity-service, for the integration tests: the product's own
//! stand-in server (`realtime_service::demo::identity`, a real tonic server behind a relay)
//! with answers the tests script.
//!
//! It behaves like the real one where it matters (tickets are single use; an empty ticket
//! is answered INVALID_ARGUMENT without consuming anything), and can be told to misbehave:
//! fail every call with a gRPC code, stall (after consuming the ticket, like a server that
//! hangs mid-request), stop (connections dropped, port closed), black-hole (connections
//! accepted, nothing ever answered) and come back on the same port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use realtime_service::demo::identity::{bind_again, Answers, IdentityServer};
use realtime_service::identity::proto::{
    self, validate_response::Result as Branch, ValidateRequest, ValidateResponse,
};
use tokio::task::JoinHandle;
use tonic::{Code, Request, Response, Status};

/// A scripted answer for one ticket.
#[derive(Debug, Clone)]
pub enum Scripted {
    Answer(ValidateResponse),
    Status(Code),
}

impl Scripted {
    /// Success for `user` in family `family-of-<user>`, free tier, no locks.
    pub fn success(user: &str) -> Self {
        Self::success_with(user, |_| {})
    }

    /// Success with a customised `Success` message.
    pub fn success_with(user: &str, customise: impl FnOnce(&mut proto::Success)) -> Self {
        let mut success = proto::Success {
            user_id: user.to_owned(),
            context: Some(proto::ConnectionContext {
                family_id: format!("family-of-{user}"),
                subscription_tier: proto::SubscriptionTier::Free as i32,
                is_admin: false,
                parental_state: Some(proto::ParentalState::default()),
            }),
            expire_at: 0,
            degraded: false,
        };
        customise(&mut success);
        Self::Answer(ValidateResponse {
            result: Some(Branch::Success(success)),
        })
    }

    pub fn disconnect(code: u32, reason: &str) -> Self {
        Self::Answer(ValidateResponse {
            result: Some(Branch::Disconnect(proto::Disconnect {
                code,
                reason: reason.to_owned(),
            })),
        })
    }

    pub fn error(code: u32, message: &str) -> Self {
        Self::Answer(ValidateResponse {
            result: Some(Branch::Error(proto::Error {
                code,
                message: message.to_owned(),
            })),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    FailWith(Code),
    Stall(Duration),
}

/// How many recent calls `seen()` keeps.
const SEEN_CAPACITY: usize = 10_000;

/// What the fake saw of one call (for tests: forwarded fields and metadata).
#[derive(Debug, Clone)]
pub struct SeenCall {
    pub ticket: String,
    pub client_id: String,
    pub transport: String,
    pub traceparent: Option<String>,
    pub grpc_timeout: Option<String>,
}

#[derive(Default)]
struct Shared {
    /// Scripted answers, each consumed by its first use.
    tickets: Mutex<HashMap<String, Scripted>>,
    mode: Mutex<Option<Mode>>,
    calls: AtomicUsize,
    /// Stalled calls dropped before their answer: the caller reset the stream.
    cancelled: AtomicUsize,
    seen: Mutex<Vec<SeenCall>>,
}

/// Counts a stalled call as cancelled unless it is disarmed after the stall.
struct UnlessAnswered<'a> {
    cancelled: &'a AtomicUsize,
    armed: bool,
}

impl Drop for UnlessAnswered<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Handle to a running fake. Dropping it stops everything.
pub struct FakeIdentity {
    server: IdentityServer,
    shared: Arc<Shared>,
    /// While black-holed: the listener task that holds connections and never answers.
    hole: Mutex<Option<JoinHandle<()>>>,
}

impl FakeIdentity {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let server = IdentityServer::start_on(
            addr,
            Arc::new(Service {
                shared: shared.clone(),
            }),
        )
        .await?;
        Ok(Self {
            server,
            shared,
            hole: Mutex::new(None),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `host:port`, as `IDENTITY_VALIDATE_GRPC_ADDRESS` takes it.
    pub fn address(&self) -> String {
        self.server.address()
    }

    /// Scripts the answer for a ticket (consumed on first use).
    pub fn add_ticket(&self, ticket: &str, answer: Scripted) {
        lock(&self.shared.tickets).insert(ticket.to_owned(), answer);
    }

    /// Every call fails with `code` (no ticket is consumed).
    pub fn fail_with(&self, code: Code) {
        *lock(&self.shared.mode) = Some(Mode::FailWith(code));
    }

    /// Every call consumes its ticket, then hangs for `by` before answering.
    pub fn stall(&self, by: Duration) {
        *lock(&self.shared.mode) = Some(Mode::Stall(by));
    }

    pub fn answer_normally(&self) {
        *lock(&self.shared.mode) = Some(Mode::Normal);
    }

    /// Stops serving: open connections are dropped and the port is closed.
    pub fn stop(&self) {
        if let Some(hole) = lock(&self.hole).take() {
            hole.abort();
        }
        self.server.stop();
    }

    /// Serves again on the same address.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        self.server.restart().await
    }

    /// Drops open connections, then accepts new ones and never answers on them: the
    /// "packets vanish" failure, where only a deadline ends the call.
    pub async fn blackhole(&self) -> std::io::Result<()> {
        self.stop();
        let listener = bind_again(self.addr()).await?;
        *lock(&self.hole) = Some(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                // Bounded by the test's own connection count; dropped with the task.
                held.push(socket);
            }
        }));
        Ok(())
    }

    /// Validate calls received (including probes).
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Stalled calls whose caller went away before the answer.
    pub fn cancelled(&self) -> usize {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    /// Calls received, oldest first.
    pub fn seen(&self) -> Vec<SeenCall> {
        lock(&self.shared.seen).clone()
    }
}

impl Drop for FakeIdentity {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Answers for Service {
    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let shared = &self.shared;
        shared.calls.fetch_add(1, Ordering::SeqCst);
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (traceparent, grpc_timeout) = (header("traceparent"), header("grpc-timeout"));
        let call = request.into_inner();
        {
            let mut seen = lock(&shared.seen);
            // Keep only recent calls: tests look at a handful, benchmarks send millions.
            if seen.len() >= SEEN_CAPACITY {
                seen.drain(..SEEN_CAPACITY / 2);
            }
            seen.push(SeenCall {
                ticket: call.ticket.clone(),
                client_id: call.client_id.clone(),
                transport: call.transport.clone(),
                traceparent,
                grpc_timeout,
            });
        }

        let mode = lock(&shared.mode).unwrap_or(Mode::Normal);
        if let Mode::FailWith(code) = mode {
            return Err(Status::new(code, "scripted failure"));
        }
        if call.ticket.is_empty() {
            return Err(Status::invalid_argument("empty ticket"));
        }
        // Consume first: a server that hangs after this has still used the ticket up.
        let scripted = lock(&shared.tickets).remove(&call.ticket);
        if let Mode::Stall(by) = mode {
            let mut guard = UnlessAnswered {
                cancelled: &shared.cancelled,
                armed: true,
            };
            tokio::time::sleep(by).await;
            guard.armed = false;
        }
        match scripted {
            Some(Scripted::Answer(answer)) => Ok(Response::new(answer)),
            Some(Scripted::Status(code)) => Err(Status::new(code, "scripted status")),
            None => Err(Status::not_found("unknown or already used ticket")),
        }
    }
}
