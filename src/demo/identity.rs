//! A stand-in identity-service for the `demo` subcommand (and, through `Answers`, for the
//! benchmark and the tests, which bring their own answers): a real tonic server speaking
//! `realtime.v1.ConnectProxyService` behind a small TCP relay that can be stopped and
//! started again on the same port.
//!
//! The relay is what makes "identity-service went away" faithful: stopping it drops every
//! open connection at once, which a tonic server cannot do to its own connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::identity::proto::connect_proxy_service_server::{
    ConnectProxyService, ConnectProxyServiceServer,
};
use crate::identity::proto::{self, validate_response::Result as Branch};
use crate::identity::proto::{ValidateRequest, ValidateResponse};

/// How a stand-in answers one Validate call.
#[tonic::async_trait]
pub trait Answers: Send + Sync + 'static {
    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status>;
}

/// The demo's answers: a fixed set of reusable tickets (so the printed commands can be run
/// again); an empty ticket is INVALID_ARGUMENT and any other NOT_FOUND, as identity-service
/// answers them.
pub struct DemoTickets(HashMap<String, ValidateResponse>);

impl DemoTickets {
    pub fn new(tickets: impl IntoIterator<Item = (&'static str, ValidateResponse)>) -> Self {
        Self(
            tickets
                .into_iter()
                .map(|(t, answer)| (t.to_owned(), answer))
                .collect(),
        )
    }
}

#[tonic::async_trait]
impl Answers for DemoTickets {
    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let ticket = ticket_of(request)?;
        self.0
            .get(&ticket)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found("unknown ticket"))
    }
}

/// The ticket of a call, refusing an empty one with INVALID_ARGUMENT as identity-service
/// does (that is what the background probe sends).
pub fn ticket_of(request: Request<ValidateRequest>) -> Result<String, Status> {
    let ticket = request.into_inner().ticket;
    if ticket.is_empty() {
        return Err(Status::invalid_argument("empty ticket"));
    }
    Ok(ticket)
}

/// A Success answer for `user`.
pub fn success(
    user: &str,
    family_id: &str,
    tier: proto::SubscriptionTier,
    degraded: bool,
) -> ValidateResponse {
    ValidateResponse {
        result: Some(Branch::Success(proto::Success {
            user_id: user.to_owned(),
            context: Some(proto::ConnectionContext {
                family_id: family_id.to_owned(),
                subscription_tier: tier as i32,
                is_admin: false,
                parental_state: Some(proto::ParentalState::default()),
            }),
            expire_at: 0,
            degraded,
        })),
    }
}

/// Handle to a running stand-in. Dropping it stops everything.
pub struct IdentityServer {
    /// The public (relay) address clients use.
    addr: SocketAddr,
    /// The gRPC server's private address.
    backend: SocketAddr,
    server: JoinHandle<()>,
    front: Mutex<Option<JoinHandle<()>>>,
}

impl IdentityServer {
    /// Starts on `addr` (port 0: a free one).
    pub async fn start_on<A: Answers>(addr: SocketAddr, answers: Arc<A>) -> std::io::Result<Self> {
        let private = TcpListener::bind((addr.ip(), 0)).await?;
        let backend = private.local_addr()?;
        let server = spawn_server(private, answers);
        let public = TcpListener::bind(addr).await?;
        let addr = public.local_addr()?;
        Ok(Self {
            addr,
            backend,
            server,
            front: Mutex::new(Some(spawn_front(public, backend))),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port`, as `IDENTITY_VALIDATE_GRPC_ADDRESS` takes it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Stops serving: open connections are dropped and the port is closed.
    pub fn stop(&self) {
        if let Some(front) = self
            .front
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            front.abort();
        }
    }

    /// Serves again on the same address.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        let listener = bind_again(self.addr).await?;
        *self.front.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(spawn_front(listener, self.backend));
        Ok(())
    }
}

impl Drop for IdentityServer {
    fn drop(&mut self) {
        self.stop();
        self.server.abort();
    }
}

/// Binds an address a just-aborted listener held: the port is released asynchronously, so
/// retry briefly.
pub async fn bind_again(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut attempt = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if attempt >= 50 => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The public side: relays each connection to `backend`. Connection tasks live in a
/// `JoinSet` owned by the accept task, so aborting the accept task drops every connection.
fn spawn_front(listener: TcpListener, backend: SocketAddr) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else { continue };
                    let _ = inbound.set_nodelay(true);
                    connections.spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                            let _ = outbound.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
                // Reap finished connections so the set does not grow without bound.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

struct Service<A>(Arc<A>);

#[tonic::async_trait]
impl<A: Answers> ConnectProxyService for Service<A> {
    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        self.0.validate(request).await
    }
}

fn spawn_server<A: Answers>(listener: TcpListener, answers: Arc<A>) -> JoinHandle<()> {
    let service = ConnectProxyServiceServer::new(Service(answers));
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "stand-in identity-service stopped with an error");
        }
    })
}
