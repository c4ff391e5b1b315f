//! A scriptable stand-in for identity-service: a real tonic server speaking
//! `realtime.v1.ConnectProxyService`, used by `demo`, the benchmark and the integration tests.
//!
//! It behaves like the real one where it matters (tickets are single use; an empty ticket
//! is answered INVALID_ARGUMENT without consuming anything), and can be told to misbehave:
//! fail every call with a gRPC code, stall (after consuming the ticket, like a server that
//! hangs mid-request), stop (connections dropped, port closed), black-hole (connections
//! accepted, nothing ever answered) and come back on the same port.
//!
//! The gRPC server itself listens on a private port; the public address is a small TCP relay
//! owned here. Stopping the relay drops every connection at once, which a tonic server cannot
//! do to its own connections, so "the network went away" is simulated faithfully.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

use crate::identity::proto::connect_proxy_service_server::{
    ConnectProxyService, ConnectProxyServiceServer,
};
use crate::identity::proto::{
    self, validate_response::Result as Branch, ValidateRequest, ValidateResponse,
};

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
    /// Scripted answers; the flag marks tickets that survive use (demo convenience).
    tickets: Mutex<HashMap<String, (Scripted, bool)>>,
    mode: Mutex<Option<Mode>>,
    accept_any: std::sync::atomic::AtomicBool,
    calls: AtomicUsize,
    seen: Mutex<Vec<SeenCall>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Handle to a running fake. Dropping it stops everything.
pub struct FakeIdentity {
    /// The public (relay) address clients use.
    addr: SocketAddr,
    /// The gRPC server's private address.
    backend: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
    front: Mutex<Option<JoinHandle<()>>>,
}

impl FakeIdentity {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())).await
    }

    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let private = TcpListener::bind((addr.ip(), 0)).await?;
        let backend = private.local_addr()?;
        let shared = Arc::new(Shared::default());
        let server = spawn_server(private, shared.clone());
        let public = TcpListener::bind(addr).await?;
        let addr = public.local_addr()?;
        Ok(Self {
            addr,
            backend,
            shared,
            server,
            front: Mutex::new(Some(spawn_front(public, Some(backend)))),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port`, as `IDENTITY_VALIDATE_GRPC_ADDRESS` takes it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Scripts the answer for a ticket (consumed on first use).
    pub fn add_ticket(&self, ticket: &str, answer: Scripted) {
        lock(&self.shared.tickets).insert(ticket.to_owned(), (answer, false));
    }

    /// Scripts a ticket that can be used again and again (so demo commands can be repeated).
    pub fn add_reusable_ticket(&self, ticket: &str, answer: Scripted) {
        lock(&self.shared.tickets).insert(ticket.to_owned(), (answer, true));
    }

    /// Accept any unknown non-empty ticket as a success (benchmarks).
    pub fn accept_any(&self, yes: bool) {
        self.shared.accept_any.store(yes, Ordering::SeqCst);
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
        if let Some(front) = lock(&self.front).take() {
            front.abort();
        }
    }

    /// Serves again on the same address.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.reopen(Some(self.backend)).await
    }

    /// Drops open connections, then accepts new ones and never answers on them: the
    /// "packets vanish" failure, where only a deadline ends the call.
    pub async fn blackhole(&self) -> std::io::Result<()> {
        self.reopen(None).await
    }

    async fn reopen(&self, backend: Option<SocketAddr>) -> std::io::Result<()> {
        self.stop();
        // The aborted relay releases the port asynchronously; retry briefly.
        let mut attempt = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if attempt >= 50 => return Err(e),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        *lock(&self.front) = Some(spawn_front(listener, backend));
        Ok(())
    }

    /// Validate calls received (including probes).
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Calls received, oldest first.
    pub fn seen(&self) -> Vec<SeenCall> {
        lock(&self.shared.seen).clone()
    }
}

impl Drop for FakeIdentity {
    fn drop(&mut self) {
        self.stop();
        self.server.abort();
    }
}

/// The public side: relays each connection to `backend`, or holds it silently when `None`.
/// Connection tasks live in a `JoinSet` owned by the accept task, so aborting the accept task
/// drops every connection with it.
fn spawn_front(listener: TcpListener, backend: Option<SocketAddr>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else { continue };
                    let _ = inbound.set_nodelay(true);
                    connections.spawn(async move {
                        match backend {
                            Some(backend) => {
                                if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                                    let _ = outbound.set_nodelay(true);
                                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                                }
                            }
                            // Hold the socket open and say nothing, until aborted.
                            None => std::future::pending::<()>().await,
                        }
                    });
                }
                // Reap finished connections so the set does not grow without bound.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

fn spawn_server(listener: TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    let service = ConnectProxyServiceServer::new(Service { shared });
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "fake identity-service stopped with an error");
        }
    })
}

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl ConnectProxyService for Service {
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
        let scripted = {
            let mut tickets = lock(&shared.tickets);
            match tickets.get(&call.ticket) {
                Some((answer, true)) => Some(answer.clone()),
                Some(_) => tickets.remove(&call.ticket).map(|(answer, _)| answer),
                None => None,
            }
        };
        if let Mode::Stall(by) = mode {
            tokio::time::sleep(by).await;
        }
        match scripted {
            Some(Scripted::Answer(answer)) => Ok(Response::new(answer)),
            Some(Scripted::Status(code)) => Err(Status::new(code, "scripted status")),
            None if shared.accept_any.load(Ordering::SeqCst) => {
                let user = format!(
                    "user-{}",
                    &crate::fallback::TicketDigest::of(call.ticket.as_bytes()).short_hex()[..8]
                );
                match Scripted::success(&user) {
                    Scripted::Answer(answer) => Ok(Response::new(answer)),
                    Scripted::Status(code) => Err(Status::new(code, "")),
                }
            }
            None => Err(Status::not_found("unknown or already used ticket")),
        }
    }
}
