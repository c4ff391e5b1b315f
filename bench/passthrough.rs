//! The pass-through reference for the benchmark (`bench/run.sh`): the least a connect
//! proxy in Rust can do, to measure what the service's own work costs on top of it.
//!
//! `POST /centrifugo/connect` reads `data.token` (and `client`, `transport`) from the JSON
//! body, calls identity-service `realtime.v1.ConnectProxyService/Validate` with the same
//! deadline the service uses (sent as `grpc-timeout` and enforced locally), and answers
//! `{"result":{"user":"<user_id>"}}`. No authentication, metrics, tracing or logs: what is
//! left is the HTTP edge, one JSON parse, the gRPC call and one JSON answer. Anything but a
//! `Success` is answered 502 and a body that is not a connect 400, so a broken run shows up
//! as errors in the load generator instead of fast fake successes.
//!
//! ```text
//! passthrough [--listen 127.0.0.1:0] [--identity 127.0.0.1:PORT] [--deadline-ms 2500]
//! ```
//! Each flag falls back to an environment variable: `PASSTHROUGH_LISTEN`,
//! `IDENTITY_VALIDATE_GRPC_ADDRESS` and `IDENTITY_VALIDATE_DEADLINE_MS` (the service's own
//! names for the last two). Loopback addresses only. Prints `listening <host:port>` on
//! stdout once it accepts connections; SIGTERM or SIGINT stop it (in-flight requests finish).
//! The runtime is tokio's default multi-threaded one, as in the service.

/// The same allocator as the service (src/main.rs), so the comparison measures the service's
/// work, not a difference in allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use realtime_service::identity::proto::connect_proxy_service_client::ConnectProxyServiceClient;
use realtime_service::identity::proto::{validate_response, ValidateRequest};
use serde::Deserialize;
use tonic::transport::{Channel, Endpoint};

#[path = "stop.rs"]
mod stop;

/// The service's default `IDENTITY_VALIDATE_DEADLINE_MS`.
const DEFAULT_DEADLINE_MS: u64 = 2500;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("passthrough: {message}");
            ExitCode::FAILURE
        }
    }
}

struct Config {
    listen: SocketAddr,
    identity: SocketAddr,
    deadline: Duration,
}

fn config() -> Result<Config, String> {
    let mut listen = std::env::var("PASSTHROUGH_LISTEN").ok();
    let mut identity = std::env::var("IDENTITY_VALIDATE_GRPC_ADDRESS").ok();
    let mut deadline = std::env::var("IDENTITY_VALIDATE_DEADLINE_MS").ok();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--listen" => &mut listen,
            "--identity" => &mut identity,
            "--deadline-ms" => &mut deadline,
            "-h" | "--help" => {
                return Err("usage: passthrough [--listen 127.0.0.1:0] \
                            [--identity 127.0.0.1:PORT] [--deadline-ms 2500]"
                    .into())
            }
            other => return Err(format!("unknown argument {other:?}")),
        };
        *slot = Some(args.next().ok_or_else(|| format!("{flag} needs a value"))?);
    }
    let loopback = |name: &str, value: &str| -> Result<SocketAddr, String> {
        // The service accepts `http://host:port` for identity-service; so does this.
        let bare = value.strip_prefix("http://").unwrap_or(value);
        let addr: SocketAddr = bare
            .parse()
            .map_err(|e| format!("{name} {value:?}: expected ip:port ({e})"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{name} {value}: only loopback addresses are allowed"
            ));
        }
        Ok(addr)
    };
    let listen = loopback("--listen", listen.as_deref().unwrap_or("127.0.0.1:0"))?;
    let identity = loopback(
        "--identity",
        identity
            .as_deref()
            .ok_or("--identity (or IDENTITY_VALIDATE_GRPC_ADDRESS) is required")?,
    )?;
    let deadline_ms = match deadline.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| format!("--deadline-ms {v:?}: expected a positive integer"))?,
        None => DEFAULT_DEADLINE_MS,
    };
    Ok(Config {
        listen,
        identity,
        deadline: Duration::from_millis(deadline_ms),
    })
}

fn run() -> Result<(), String> {
    let config = config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(serve(config))
}

#[derive(Clone)]
struct Upstream {
    client: ConnectProxyServiceClient<Channel>,
    deadline: Duration,
}

async fn serve(config: Config) -> Result<(), String> {
    // The same channel shape as the service's identity client: one lazily connected
    // HTTP/2 connection, TCP_NODELAY, dial bounded by the deadline.
    let channel = Endpoint::from_shared(format!("http://{}", config.identity))
        .map_err(|e| format!("identity address: {e}"))?
        .connect_timeout(config.deadline)
        .tcp_nodelay(true)
        .connect_lazy();
    let upstream = Upstream {
        client: ConnectProxyServiceClient::new(channel),
        deadline: config.deadline,
    };
    let router = Router::new()
        .route("/centrifugo/connect", post(connect))
        .with_state(upstream);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {addr}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))?;
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(stop::stop_signal())
        .await
        .map_err(|e| format!("serve: {e}"))
}

/// The part of Centrifugo's connect request this program reads.
#[derive(Deserialize)]
struct ConnectBody<'a> {
    #[serde(borrow, default)]
    client: &'a str,
    #[serde(borrow, default)]
    transport: &'a str,
    #[serde(borrow)]
    data: ConnectData<'a>,
}

#[derive(Deserialize)]
struct ConnectData<'a> {
    // Cow: a token with JSON escapes cannot be borrowed.
    #[serde(borrow)]
    token: std::borrow::Cow<'a, str>,
}

async fn connect(State(upstream): State<Upstream>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<ConnectBody<'_>>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut request = tonic::Request::new(ValidateRequest {
        ticket: body.data.token.into_owned(),
        client_id: body.client.to_owned(),
        transport: body.transport.to_owned(),
    });
    request.set_timeout(upstream.deadline);
    let mut client = upstream.client;
    let answer = tokio::time::timeout(upstream.deadline, client.validate(request)).await;
    let user = match answer {
        Ok(Ok(response)) => match response.into_inner().result {
            Some(validate_response::Result::Success(success)) => success.user_id,
            _ => return StatusCode::BAD_GATEWAY.into_response(),
        },
        _ => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let user = serde_json::Value::String(user);
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"result":{{"user":{user}}}}}"#),
    )
        .into_response()
}
