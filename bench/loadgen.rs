//! Load generator for the benchmark (`bench/run.sh`): a separate process, so its CPU is not
//! the service's.
//!
//! ```text
//! loadgen http  --url http://127.0.0.1:PORT/centrifugo/connect --secret S [options]
//! loadgen grpc  --addr 127.0.0.1:PORT [options]
//! loadgen grpc-connect --addr 127.0.0.1:PORT --secret S [options]
//! loadgen free-port
//! ```
//!
//! Both load modes keep exactly `--concurrency` requests in flight (a closed loop: each
//! worker sends its next request when the previous one is answered) for `--seconds` (or
//! `--requests` in total, whichever ends first), over connections that stay open:
//! - `http`: Centrifugo-shaped connect bodies, each with a unique ticket (`<prefix><n>`) or
//!   the next line of `--tickets-file`, signed with HMAC-SHA256 (`x-centrifugo-proxy-signature`),
//!   or with `--auth static_header` carrying the secret in `x-centrifugo-proxy-secret`.
//!   `--client raw` (default) is a minimal HTTP/1.1 keep-alive client, one connection per
//!   worker; `--client reqwest` uses one `reqwest::Client` (its pool keeps one connection per
//!   worker). The raw client costs the load generator less CPU, which matters when the
//!   load generator shares two cores with the service; `bench/README.md` has both measured.
//! - `grpc`: the same tickets sent straight to identity-service with the generated tonic
//!   client over one channel (one HTTP/2 connection, as the service itself uses), with the
//!   same 2500 ms `grpc-timeout` the service sends.
//! - `grpc-connect`: the same connects as Centrifugo sends them to a gRPC proxy:
//!   `centrifugal.centrifugo.proxy.CentrifugoProxy/Connect` over one channel, `data` the
//!   JSON `{"token":...}`, the secret as `x-centrifugo-proxy-secret` metadata (what
//!   `grpc.static_metadata` sends) and Centrifugo's default 1 s proxy timeout as
//!   `grpc-timeout`. A call is ok when the answer carries a `result` (a `disconnect` or
//!   `error` in a status-OK answer is counted as not ok, by kind).
//!
//! Options:
//! ```text
//!   --concurrency C     requests in flight (default 16)
//!   --seconds D         measured duration (default 5)
//!   --requests N        stop after N requests in total (default: no limit)
//!   --warmup W          seconds of the same load before measuring, on the same connections (default 0)
//!   --tickets-file F    tickets, one per line (the fallback pool), instead of generated ones;
//!                       the run ends early when they run out
//!   --prefix P          generated ticket prefix (default bench-<pid>-)
//!   --pid [NAME=]PID    report this process's CPU time per request (repeatable; the first is
//!                       `cpu_us_per_req`); the load generator's own is always reported
//!   --clk-tck HZ        clock ticks per second of /proc/PID/stat (default: AT_CLKTCK from
//!                       /proc/self/auxv, else 100)
//!   --threads T         load generator worker threads (default 1)
//!   --label L           a name for the RESULT line
//!   --auth A            hmac (http default) | static_header (grpc-connect default) | none
//!   --secret S          the proxy secret; when absent, taken from LOADGEN_SECRET
//! ```
//!
//! Output: a human summary, then one machine-readable line:
//! `RESULT mode=http label=L concurrency=C requests=N ok=N errors=N seconds=S rps=R
//!  p50_us=.. p90_us=.. p99_us=.. max_us=.. cpu_us_per_req=.. cpu_us_per_req_NAME=.. outcomes=..`

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use realtime_service::identity::proto::connect_proxy_service_client::ConnectProxyServiceClient;
use realtime_service::identity::proto::ValidateRequest;
use realtime_service::transport::grpc::proto::centrifugo_proxy_client::CentrifugoProxyClient;
use realtime_service::transport::grpc::proto::ConnectRequest;
use realtime_service::transport::http::auth::{sign, SECRET_HEADER, SIGNATURE_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::metadata::{AsciiMetadataValue, MetadataKey};
use tonic::transport::Channel;

/// The deadline the service sends with each Validate (its default); sent on direct calls too.
const GRPC_TIMEOUT: Duration = Duration::from_millis(2500);
/// Centrifugo's default proxy `timeout`, which it sends as `grpc-timeout`.
const CENTRIFUGO_PROXY_TIMEOUT: Duration = Duration::from_secs(1);
/// No request in this benchmark should take this long; one that does is counted as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    // reqwest carries no crypto provider of its own in this build.
    realtime_service::tls::install_crypto_provider();
    match run() {
        Ok(code) => code,
        Err(message) => {
            eprintln!("loadgen: {message}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Connect (or subscribe, publish) proxy calls over HTTP, to the service.
    Http,
    /// Validate calls straight to identity-service.
    Grpc,
    /// Centrifugo's gRPC `Connect` proxy calls, to the service.
    GrpcConnect,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::GrpcConnect => "grpc-connect",
        }
    }
}

/// How requests prove they come from Centrifugo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// HMAC-SHA256 of the body in `x-centrifugo-proxy-signature` (HTTP only).
    Hmac,
    /// The secret itself in `x-centrifugo-proxy-secret` (header or gRPC metadata).
    StaticHeader,
    None,
}

impl Auth {
    fn parse(v: &str) -> Result<Self, String> {
        match v {
            "hmac" => Ok(Self::Hmac),
            "static_header" => Ok(Self::StaticHeader),
            "none" => Ok(Self::None),
            _ => Err(format!("--auth {v:?}: hmac|static_header|none")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Raw,
    Reqwest,
}

#[derive(Debug, Clone)]
struct Args {
    mode: Mode,
    url: Option<String>,
    addr: Option<String>,
    secret: String,
    auth: Auth,
    concurrency: usize,
    seconds: f64,
    requests: Option<u64>,
    warmup: f64,
    tickets_file: Option<PathBuf>,
    prefix: String,
    pids: Vec<(String, u32)>,
    clk_tck: Option<u64>,
    threads: usize,
    label: String,
    client: ClientKind,
}

fn run() -> Result<ExitCode, String> {
    let mut raw = std::env::args().skip(1);
    let mode = match raw.next().as_deref() {
        Some("http") => Mode::Http,
        Some("grpc") => Mode::Grpc,
        Some("grpc-connect") => Mode::GrpcConnect,
        Some("free-port") => {
            // A port that was free a moment ago; the caller binds it right away.
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("free-port: {e}"))?;
            println!("{}", listener.port());
            return Ok(ExitCode::SUCCESS);
        }
        Some("-h" | "--help") | None => {
            println!(
                "usage: loadgen http|grpc|grpc-connect|free-port [--url U | --addr A] [--secret S] \
                 [--auth hmac|static_header|none] [--concurrency 16] \
                 [--seconds 5] [--requests N] [--warmup 0] [--tickets-file F] [--prefix P] \
                 [--pid [NAME=]PID]... [--clk-tck HZ] [--threads 1] [--label L] [--client raw|reqwest]\n\
                 (details at the top of bench/loadgen.rs)"
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(other) => {
            return Err(format!(
                "unknown mode {other:?} (http|grpc|grpc-connect|free-port)"
            ))
        }
    };
    let args = parse_args(mode, raw)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let report = runtime.block_on(drive(&args))?;
    report.print(&args);
    // Non-zero when nothing at all succeeded, so scripts notice a broken setup.
    Ok(if report.ok == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn parse_args(mode: Mode, mut raw: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        mode,
        url: None,
        addr: None,
        secret: String::new(),
        auth: match mode {
            Mode::GrpcConnect => Auth::StaticHeader,
            Mode::Http | Mode::Grpc => Auth::Hmac,
        },
        concurrency: 16,
        seconds: 5.0,
        requests: None,
        warmup: 0.0,
        tickets_file: None,
        prefix: format!("bench-{}-", std::process::id()),
        pids: Vec::new(),
        clk_tck: None,
        threads: 1,
        label: mode.as_str().to_owned(),
        client: ClientKind::Raw,
    };
    fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
        v.parse().map_err(|_| format!("{name} {v:?}: not a number"))
    }
    while let Some(flag) = raw.next() {
        if flag == "-h" || flag == "--help" {
            return Err("options are listed at the top of bench/loadgen.rs".into());
        }
        let v = raw
            .next()
            .ok_or_else(|| format!("{flag} needs a value (or is unknown)"))?;
        match flag.as_str() {
            "--url" => args.url = Some(v),
            "--addr" => args.addr = Some(v),
            "--secret" => args.secret = v,
            "--auth" => args.auth = Auth::parse(&v)?,
            "--concurrency" => args.concurrency = num(&flag, &v)?,
            "--seconds" => args.seconds = num(&flag, &v)?,
            "--requests" => args.requests = Some(num(&flag, &v)?),
            "--warmup" => args.warmup = num(&flag, &v)?,
            "--tickets-file" => args.tickets_file = Some(PathBuf::from(v)),
            "--prefix" => args.prefix = v,
            "--clk-tck" => args.clk_tck = Some(num(&flag, &v)?),
            "--threads" => args.threads = num(&flag, &v)?,
            "--label" => args.label = v,
            "--client" => {
                args.client = match v.as_str() {
                    "raw" => ClientKind::Raw,
                    "reqwest" => ClientKind::Reqwest,
                    _ => return Err(format!("--client {v:?}: raw|reqwest")),
                }
            }
            "--pid" => {
                let (name, pid) = match v.split_once('=') {
                    Some((name, pid)) => (name.to_owned(), pid),
                    None => (format!("pid{v}"), v.as_str()),
                };
                args.pids.push((name, num("--pid", pid)?));
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if args.concurrency == 0 || args.threads == 0 {
        return Err("--concurrency and --threads must be positive".into());
    }
    let seconds_ok = args.seconds > 0.0 && args.seconds <= 600.0;
    if !seconds_ok || !(0.0..=600.0).contains(&args.warmup) {
        return Err("--seconds must be in (0, 600] and --warmup in [0, 600]".into());
    }
    if args.secret.is_empty() {
        // The environment keeps the secret out of the process list.
        args.secret = std::env::var("LOADGEN_SECRET").unwrap_or_default();
    }
    match mode {
        Mode::Http if args.url.is_none() => return Err("http mode needs --url".into()),
        Mode::Grpc | Mode::GrpcConnect if args.addr.is_none() => {
            return Err(format!("{} mode needs --addr", mode.as_str()))
        }
        _ => {}
    }
    let needs_secret = mode != Mode::Grpc && args.auth != Auth::None;
    if needs_secret && args.secret.is_empty() {
        return Err(format!(
            "{} mode with --auth other than none needs --secret (or LOADGEN_SECRET)",
            mode.as_str()
        ));
    }
    if mode == Mode::GrpcConnect && args.auth == Auth::Hmac {
        return Err("grpc-connect: --auth hmac is HTTP only (use static_header or none)".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------
// The load loop

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    Http(u16),
    Grpc(i32),
    /// A status-OK proxy answer, by what it carries: `result`, `disconnect`, `error`, `empty`.
    GrpcAnswer(&'static str),
    Error(&'static str),
}

impl Outcome {
    fn is_ok(self) -> bool {
        matches!(
            self,
            Self::Http(200) | Self::Grpc(0) | Self::GrpcAnswer("result")
        )
    }
    fn label(self) -> String {
        match self {
            Self::Http(status) => format!("http_{status}"),
            Self::Grpc(code) => format!("grpc_{:?}", tonic::Code::from_i32(code)).to_lowercase(),
            Self::GrpcAnswer(what) => format!("grpc_ok_{what}"),
            Self::Error(what) => format!("error_{what}"),
        }
    }
}

/// Where tickets come from: generated unique ones, or the lines of a file.
enum Tickets {
    Generated(String),
    File(Vec<String>),
}

impl Tickets {
    fn get(&self, n: u64) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Self::Generated(prefix) => Some(format!("{prefix}{n}").into()),
            Self::File(lines) => usize::try_from(n)
                .ok()
                .and_then(|i| lines.get(i))
                .map(|t| t.as_str().into()),
        }
    }
}

struct Shared {
    args: Args,
    tickets: Tickets,
    /// The next ticket number (warm-up and measured requests never share a ticket).
    next: AtomicU64,
    /// Measured requests started, for `--requests`.
    measured: AtomicU64,
}

#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    outcomes: HashMap<Outcome, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_ns.extend(other.latencies_ns);
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
    }
}

async fn drive(args: &Args) -> Result<Report, String> {
    let tickets = match &args.tickets_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--tickets-file {}: {e}", path.display()))?;
            let lines: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            if lines.is_empty() {
                return Err(format!("--tickets-file {}: no tickets", path.display()));
            }
            Tickets::File(lines)
        }
        None => Tickets::Generated(args.prefix.clone()),
    };
    let shared = Arc::new(Shared {
        args: args.clone(),
        tickets,
        next: AtomicU64::new(0),
        measured: AtomicU64::new(0),
    });
    let target = Target::new(args).await?;

    // Workers start together, warm up on their own connections, then wait on a barrier so
    // the measured window and the CPU snapshots line up.
    let (start_tx, start_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    let warmed = Arc::new(tokio::sync::Barrier::new(args.concurrency + 1));
    let mut handles = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let mut conn = target.connection(worker);
        let shared = shared.clone();
        let warmed = warmed.clone();
        let mut start_rx = start_rx.clone();
        handles.push(tokio::spawn(async move {
            if shared.args.warmup > 0.0 {
                let until = Instant::now() + Duration::from_secs_f64(shared.args.warmup);
                let _ = run_loop(&shared, &mut conn, until, None).await;
            }
            warmed.wait().await;
            let until = loop {
                if let Some(until) = *start_rx.borrow_and_update() {
                    break until;
                }
                if start_rx.changed().await.is_err() {
                    return Tally::default();
                }
            };
            run_loop(&shared, &mut conn, until, shared.args.requests).await
        }));
    }
    warmed.wait().await;
    let cpu_before = CpuSnapshot::take(args)?;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.seconds);
    let _ = start_tx.send(Some(until));
    let mut tally = Tally::default();
    for handle in handles {
        tally.merge(handle.await.map_err(|e| format!("worker failed: {e}"))?);
    }
    let elapsed = started.elapsed();
    let cpu_after = CpuSnapshot::take(args)?;
    Ok(Report::new(tally, elapsed, cpu_before, cpu_after, args))
}

async fn run_loop(
    shared: &Shared,
    conn: &mut Connection,
    until: Instant,
    limit: Option<u64>,
) -> Tally {
    let mut tally = Tally {
        latencies_ns: Vec::with_capacity(16 * 1024),
        outcomes: HashMap::new(),
    };
    loop {
        if Instant::now() >= until {
            break;
        }
        // `--requests` counts across all workers.
        if limit.is_some_and(|limit| shared.measured.fetch_add(1, Ordering::Relaxed) >= limit) {
            break;
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(ticket) = shared.tickets.get(n) else {
            break;
        };
        let started = Instant::now();
        let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, conn.send(&ticket, n)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                conn.reset();
                Outcome::Error("timeout")
            }
        };
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        tally.latencies_ns.push(ns);
        *tally.outcomes.entry(outcome).or_default() += 1;
    }
    tally
}

// ---------------------------------------------------------------------------------------
// Targets and connections

enum Target {
    Raw {
        addr: SocketAddr,
        host: String,
        path: String,
        auth: HttpAuth,
        kind: BodyKind,
    },
    Reqwest {
        client: reqwest::Client,
        url: Arc<str>,
        auth: HttpAuth,
        kind: BodyKind,
    },
    Grpc(ConnectProxyServiceClient<Channel>),
    GrpcConnect {
        client: CentrifugoProxyClient<Channel>,
        secret: Option<AsciiMetadataValue>,
    },
}

impl Target {
    async fn new(args: &Args) -> Result<Self, String> {
        match args.mode {
            Mode::Http => {
                let url = args.url.clone().unwrap_or_default();
                let auth = HttpAuth {
                    mode: args.auth,
                    secret: args.secret.as_bytes().into(),
                };
                let (addr, host, path) = parse_http_url(&url)?;
                let kind = BodyKind::from_path(&path);
                if !addr.ip().is_loopback() {
                    return Err(format!("--url {url}: only loopback targets are allowed"));
                }
                Ok(match args.client {
                    ClientKind::Raw => Self::Raw {
                        addr,
                        host,
                        path,
                        auth,
                        kind,
                    },
                    ClientKind::Reqwest => Self::Reqwest {
                        client: reqwest::Client::builder()
                            .no_proxy()
                            .tcp_nodelay(true)
                            .pool_max_idle_per_host(args.concurrency)
                            .build()
                            .map_err(|e| format!("reqwest client: {e}"))?,
                        url: url.into(),
                        auth,
                        kind,
                    },
                })
            }
            Mode::Grpc => Ok(Self::Grpc(ConnectProxyServiceClient::new(
                grpc_channel(args).await?,
            ))),
            Mode::GrpcConnect => {
                let secret = match args.auth {
                    Auth::StaticHeader => Some(
                        AsciiMetadataValue::try_from(args.secret.as_str())
                            .map_err(|_| "--secret: not a valid metadata value".to_owned())?,
                    ),
                    Auth::None | Auth::Hmac => None,
                };
                Ok(Self::GrpcConnect {
                    client: CentrifugoProxyClient::new(grpc_channel(args).await?),
                    secret,
                })
            }
        }
    }

    fn connection(&self, worker: usize) -> Connection {
        let seed = (u64::from(std::process::id()) << 32) ^ (worker as u64);
        match self {
            Self::Raw {
                addr,
                host,
                path,
                auth,
                kind,
            } => Connection::Raw(RawHttp {
                kind: *kind,
                addr: *addr,
                head: format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                ),
                auth: auth.clone(),
                stream: None,
                buf: Vec::with_capacity(4096),
                out: Vec::with_capacity(1024),
                seed,
            }),
            Self::Reqwest {
                client,
                url,
                auth,
                kind,
            } => Connection::Reqwest {
                client: client.clone(),
                url: url.clone(),
                auth: auth.clone(),
                kind: *kind,
                seed,
            },
            Self::Grpc(client) => Connection::Grpc {
                client: client.clone(),
                seed,
            },
            Self::GrpcConnect { client, secret } => Connection::GrpcConnect {
                client: client.clone(),
                secret: secret.clone(),
                seed,
            },
        }
    }
}

enum Connection {
    Raw(RawHttp),
    Reqwest {
        client: reqwest::Client,
        url: Arc<str>,
        auth: HttpAuth,
        kind: BodyKind,
        seed: u64,
    },
    Grpc {
        client: ConnectProxyServiceClient<Channel>,
        seed: u64,
    },
    GrpcConnect {
        client: CentrifugoProxyClient<Channel>,
        secret: Option<AsciiMetadataValue>,
        seed: u64,
    },
}

impl Connection {
    async fn send(&mut self, ticket: &str, n: u64) -> Outcome {
        match self {
            Self::Raw(raw) => raw.send(ticket, n).await,
            Self::Reqwest {
                client,
                url,
                auth,
                kind,
                seed,
            } => {
                let body = request_body(*kind, &client_id(*seed, n), ticket);
                let mut request = client
                    .post(&**url)
                    .header("content-type", "application/json");
                if let Some((name, value)) = auth.header(body.as_bytes()) {
                    request = request.header(name, value);
                }
                let sent = request.body(body).send().await;
                match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match response.bytes().await {
                            Ok(_) => Outcome::Http(status),
                            Err(_) => Outcome::Error("body"),
                        }
                    }
                    Err(e) if e.is_connect() => Outcome::Error("connect"),
                    Err(_) => Outcome::Error("request"),
                }
            }
            Self::Grpc { client, seed } => {
                let mut request = tonic::Request::new(ValidateRequest {
                    ticket: ticket.to_owned(),
                    client_id: client_id(*seed, n),
                    transport: "websocket".to_owned(),
                });
                request.set_timeout(GRPC_TIMEOUT);
                match client.validate(request).await {
                    Ok(_) => Outcome::Grpc(0),
                    Err(status) => Outcome::Grpc(status.code() as i32),
                }
            }
            Self::GrpcConnect {
                client,
                secret,
                seed,
            } => {
                let ticket_json = serde_json::Value::String(ticket.to_owned()).to_string();
                let mut request = tonic::Request::new(ConnectRequest {
                    client: client_id(*seed, n),
                    transport: "websocket".to_owned(),
                    protocol: "json".to_owned(),
                    encoding: "json".to_owned(),
                    data: format!(r#"{{"token":{ticket_json}}}"#).into_bytes(),
                    ..ConnectRequest::default()
                });
                request.set_timeout(CENTRIFUGO_PROXY_TIMEOUT);
                if let Some(secret) = secret {
                    request
                        .metadata_mut()
                        .insert(MetadataKey::from_static(SECRET_HEADER), secret.clone());
                }
                match client.connect(request).await {
                    Ok(response) => {
                        let answer = response.into_inner();
                        Outcome::GrpcAnswer(if answer.result.is_some() {
                            "result"
                        } else if answer.disconnect.is_some() {
                            "disconnect"
                        } else if answer.error.is_some() {
                            "error"
                        } else {
                            "empty"
                        })
                    }
                    Err(status) => Outcome::Grpc(status.code() as i32),
                }
            }
        }
    }

    fn reset(&mut self) {
        if let Self::Raw(raw) = self {
            raw.stream = None;
        }
    }
}

/// One loopback channel (one HTTP/2 connection) to `--addr`, connected before the run.
async fn grpc_channel(args: &Args) -> Result<Channel, String> {
    let addr = args.addr.clone().unwrap_or_default();
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("--addr {addr:?}: expected ip:port ({e})"))?;
    if !sock.ip().is_loopback() {
        return Err(format!("--addr {addr}: only loopback targets are allowed"));
    }
    tonic::transport::Endpoint::from_shared(format!("http://{sock}"))
        .map_err(|e| format!("--addr {addr}: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// How an HTTP request is authenticated: the header to add for a given body.
#[derive(Clone)]
struct HttpAuth {
    mode: Auth,
    secret: Arc<[u8]>,
}

impl HttpAuth {
    fn header(&self, body: &[u8]) -> Option<(&'static str, String)> {
        match self.mode {
            Auth::Hmac => Some((SIGNATURE_HEADER, sign(&self.secret, body))),
            Auth::StaticHeader => Some((
                SECRET_HEADER,
                String::from_utf8_lossy(&self.secret).into_owned(),
            )),
            Auth::None => None,
        }
    }
}

/// A UUID-shaped client id, unique per request of this run.
fn client_id(seed: u64, n: u64) -> String {
    let a = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n;
    let b = n.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ seed;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0xfff) as u16,
        (b >> 52) as u16 & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// Which proxy the URL names, and so which body to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Connect,
    Subscribe,
    Publish,
}

impl BodyKind {
    fn from_path(path: &str) -> Self {
        match path.rsplit('/').next() {
            Some("subscribe") => Self::Subscribe,
            Some("publish") => Self::Publish,
            _ => Self::Connect,
        }
    }
}

/// A request body as Centrifugo v6 sends it (protocol json). Connect carries the ticket in
/// `data.token`; subscribe and publish act for a user named after the ticket (so the
/// per-user publish limit is never what is measured), with the meta connect gives such a
/// user, on that user's family chat channel (a namespace with a subscription TTL, a lock
/// check and, for publish, a JSON-object payload check).
fn request_body(kind: BodyKind, client: &str, ticket: &str) -> String {
    let ticket_json = serde_json::Value::String(ticket.to_owned()).to_string();
    let head = format!(
        r#""client":"{client}","transport":"websocket","protocol":"json","encoding":"json""#
    );
    if kind == BodyKind::Connect {
        return format!(r#"{{{head},"data":{{"token":{ticket_json}}}}}"#);
    }
    let meta = serde_json::json!({
        "user": ticket,
        "family_id": format!("fam-{ticket}"),
        "subscription_tier": "pro",
        "is_admin": false,
        "parental_state": {
            "screen_time_lock": false,
            "feature_lock_chat": false,
            "feature_lock_diary": false,
            "feature_lock_flowcoach": false
        },
        "degraded": false
    });
    let channel = serde_json::Value::String(format!("chat:fam-{ticket}")).to_string();
    let data = if kind == BodyKind::Publish {
        r#","data":{"text":"a chat message of a typical length, sent through the publish proxy benchmark","sent_at":1767225600}"#
    } else {
        ""
    };
    format!(r#"{{{head},"user":{ticket_json},"channel":{channel},"meta":{meta}{data}}}"#)
}

/// `http://host:port/path` -> (socket address, Host header, path). Plain HTTP, IP literals
/// or `localhost` only: the benchmark never resolves names.
fn parse_http_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {url:?}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_ip = authority.replacen("localhost", "127.0.0.1", 1);
    let addr: SocketAddr = with_ip
        .parse()
        .map_err(|e| format!("--url {url:?}: expected http://IP:PORT/path ({e})"))?;
    Ok((addr, authority.to_owned(), path.to_owned()))
}

/// A minimal HTTP/1.1 keep-alive client: one connection, one request at a time, responses
/// framed by Content-Length (what the service sends).
struct RawHttp {
    addr: SocketAddr,
    kind: BodyKind,
    /// Request line and fixed headers.
    head: String,
    auth: HttpAuth,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    out: Vec<u8>,
    seed: u64,
}

impl RawHttp {
    async fn send(&mut self, ticket: &str, n: u64) -> Outcome {
        let body = request_body(self.kind, &client_id(self.seed, n), ticket);
        self.out.clear();
        self.out.extend_from_slice(self.head.as_bytes());
        let _ = write!(self.out, "Content-Length: {}\r\n", body.len());
        if let Some((name, value)) = self.auth.header(body.as_bytes()) {
            let _ = write!(self.out, "{name}: {value}\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(body.as_bytes());
        match self.exchange().await {
            Ok((status, keep_alive)) => {
                if !keep_alive {
                    self.stream = None;
                }
                Outcome::Http(status)
            }
            Err(what) => {
                self.stream = None;
                Outcome::Error(what)
            }
        }
    }

    async fn exchange(&mut self) -> Result<(u16, bool), &'static str> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            slot => {
                let stream = TcpStream::connect(self.addr).await.map_err(|_| "connect")?;
                let _ = stream.set_nodelay(true);
                slot.insert(stream)
            }
        };
        stream.write_all(&self.out).await.map_err(|_| "write")?;
        self.buf.clear();
        // Headers.
        let header_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > 64 * 1024 {
                return Err("headers_too_large");
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = std::str::from_utf8(&self.buf[..header_end]).map_err(|_| "bad_response")?;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or("bad_response")?;
        let mut length = None;
        let mut keep_alive = true;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked_unsupported");
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                keep_alive = false;
            }
        }
        let length = length.ok_or("no_content_length")?;
        while self.buf.len() < header_end + length {
            read_more(stream, &mut self.buf).await?;
        }
        Ok((status, keep_alive))
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), &'static str> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) => Err("closed"),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(_) => Err("read"),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// CPU accounting

/// utime + stime (in clock ticks) of each watched process and of the load generator, and
/// the machine's busy and total ticks (from /proc/stat, summed over all CPUs).
struct CpuSnapshot {
    ticks: Vec<(String, Option<u64>)>,
    machine: Option<(u64, u64)>,
}

impl CpuSnapshot {
    fn take(args: &Args) -> Result<Self, String> {
        let mut ticks = Vec::with_capacity(args.pids.len() + 1);
        for (name, pid) in &args.pids {
            let t = proc_cpu_ticks(&format!("/proc/{pid}/stat"));
            if t.is_none() {
                return Err(format!("--pid {name}={pid}: cannot read /proc/{pid}/stat"));
            }
            ticks.push((name.clone(), t));
        }
        ticks.push(("loadgen".to_owned(), proc_cpu_ticks("/proc/self/stat")));
        Ok(Self {
            ticks,
            machine: machine_ticks(),
        })
    }
}

/// (busy, total) ticks of the whole machine: the first line of /proc/stat, idle and iowait
/// counted as not busy.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

/// CPUs online, from /proc/stat's per-CPU lines.
fn cpu_count() -> usize {
    std::fs::read_to_string("/proc/stat").map_or(1, |s| {
        s.lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count()
            .max(1)
    })
}

/// Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the `)` that ends the
/// command name (which may itself contain spaces or parentheses).
fn proc_cpu_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// AT_CLKTCK from the auxiliary vector (the value `getconf CLK_TCK` prints), else 100.
fn clock_ticks_per_second() -> u64 {
    const AT_CLKTCK: u64 = 17;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 100;
    };
    let word = std::mem::size_of::<usize>();
    let read = |chunk: &[u8]| -> u64 {
        let mut bytes = [0u8; 8];
        bytes[..word].copy_from_slice(chunk);
        u64::from_ne_bytes(bytes)
    };
    auxv.chunks_exact(word * 2)
        .map(|pair| (read(&pair[..word]), read(&pair[word..])))
        .find(|(key, _)| *key == AT_CLKTCK)
        .map_or(100, |(_, value)| value)
}

// ---------------------------------------------------------------------------------------
// Report

struct Report {
    requests: u64,
    ok: u64,
    seconds: f64,
    rps: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    outcomes: Vec<(String, u64)>,
    /// (name, CPU seconds, µs per request) per watched process, the load generator last.
    cpu: Vec<(String, f64, Option<f64>)>,
    /// Share of all CPUs busy during the run, and the part of it (in % of one core) spent
    /// by processes other than the watched ones and the load generator: other work on a
    /// shared machine, which makes a run noisy.
    machine: Option<(f64, f64)>,
    cpus: usize,
    clk_tck: u64,
    /// The run ended early because the tickets file ran out.
    tickets_ran_out: bool,
}

impl Report {
    fn new(
        mut tally: Tally,
        elapsed: Duration,
        before: CpuSnapshot,
        after: CpuSnapshot,
        args: &Args,
    ) -> Self {
        tally.latencies_ns.sort_unstable();
        let lat = &tally.latencies_ns;
        let requests = lat.len() as u64;
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let rank = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len());
            lat[rank - 1] as f64 / 1000.0
        };
        let ok = tally
            .outcomes
            .iter()
            .filter(|(o, _)| o.is_ok())
            .map(|(_, n)| n)
            .sum();
        let mut outcomes: Vec<(Outcome, u64)> = tally.outcomes.into_iter().collect();
        outcomes.sort();
        let seconds = elapsed.as_secs_f64();
        let clk_tck = args.clk_tck.unwrap_or_else(clock_ticks_per_second);
        let cpu = before
            .ticks
            .iter()
            .zip(&after.ticks)
            .map(|((name, b), (_, a))| {
                let secs = match (b, a) {
                    (Some(b), Some(a)) => a.saturating_sub(*b) as f64 / clk_tck as f64,
                    _ => f64::NAN,
                };
                let per_req =
                    (requests > 0 && secs.is_finite()).then(|| secs * 1e6 / requests as f64);
                (name.clone(), secs, per_req)
            })
            .collect::<Vec<(String, f64, Option<f64>)>>();
        let cpus = cpu_count();
        let machine = before
            .machine
            .zip(after.machine)
            .and_then(|((b0, t0), (b1, t1))| {
                let (busy, total) = (b1.checked_sub(b0)?, t1.checked_sub(t0)?);
                let busy_pct = 100.0 * busy as f64 / total.max(1) as f64;
                let ours: f64 = cpu.iter().map(|(_, secs, _)| secs).sum();
                let busy_core_secs = busy_pct / 100.0 * cpus as f64 * seconds;
                let other_pct = (100.0 * (busy_core_secs - ours) / seconds).max(0.0);
                Some((busy_pct, other_pct))
            });
        let tickets_ran_out = match &args.tickets_file {
            Some(_) => seconds + 0.05 < args.seconds && args.requests.is_none_or(|n| requests < n),
            None => false,
        };
        Self {
            requests,
            ok,
            seconds,
            rps: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            p50_us: pct(0.50),
            p90_us: pct(0.90),
            p99_us: pct(0.99),
            max_us: pct(1.0),
            outcomes: outcomes.into_iter().map(|(o, n)| (o.label(), n)).collect(),
            cpu,
            machine,
            cpus,
            clk_tck,
            tickets_ran_out,
        }
    }

    fn print(&self, args: &Args) {
        let mut out = std::io::stdout().lock();
        let outcomes = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",");
        let target = args
            .url
            .as_deref()
            .or(args.addr.as_deref())
            .unwrap_or_default();
        let client = match (args.mode, args.client) {
            (Mode::Grpc | Mode::GrpcConnect, _) => "tonic",
            (Mode::Http, ClientKind::Raw) => "raw-http1",
            (Mode::Http, ClientKind::Reqwest) => "reqwest",
        };
        let _ = writeln!(
            out,
            "== {} [{}] -> {target}: {} in flight, {:.2} s, client {client}{}",
            args.label,
            args.mode.as_str(),
            args.concurrency,
            self.seconds,
            if args.tickets_file.is_some() {
                ", tickets from file"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "   {} requests ({} ok, {} not ok), {:.0} req/s",
            self.requests,
            self.ok,
            self.requests - self.ok,
            self.rps
        );
        let _ = writeln!(
            out,
            "   latency: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            self.p50_us, self.p90_us, self.p99_us, self.max_us
        );
        let _ = writeln!(out, "   outcomes: {outcomes}");
        for (name, secs, per_req) in &self.cpu {
            let _ = writeln!(
                out,
                "   cpu {name}: {secs:.2} s ({:.0}% of one core), {} µs/request",
                100.0 * secs / self.seconds,
                per_req.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
            );
        }
        if let Some((busy, other)) = self.machine {
            let _ = writeln!(
                out,
                "   machine: {busy:.0}% of {} CPUs busy; other processes {other:.0}% of one core",
                self.cpus
            );
        }
        if self.tickets_ran_out {
            let _ = writeln!(
                out,
                "   note: the tickets file ran out after {:.2} s",
                self.seconds
            );
        }
        let mut line = format!(
            "RESULT mode={} label={} concurrency={} requests={} ok={} errors={} seconds={:.3} rps={:.1} p50_us={:.1} p90_us={:.1} p99_us={:.1} max_us={:.1}",
            args.mode.as_str(),
            args.label,
            args.concurrency,
            self.requests,
            self.ok,
            self.requests - self.ok,
            self.seconds,
            self.rps,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.max_us
        );
        let fmt = |v: &Option<f64>| v.map_or_else(|| "nan".to_owned(), |v| format!("{v:.1}"));
        if let Some((_, _, first)) = self.cpu.first().filter(|_| !args.pids.is_empty()) {
            line.push_str(&format!(" cpu_us_per_req={}", fmt(first)));
        }
        for (name, _, per_req) in &self.cpu {
            line.push_str(&format!(" cpu_us_per_req_{name}={}", fmt(per_req)));
        }
        if let Some((busy, other)) = self.machine {
            line.push_str(&format!(
                " machine_busy_pct={busy:.0} other_cpu_pct={other:.0}"
            ));
        }
        line.push_str(&format!(
            " tickets_ran_out={} clk_tck={} outcomes={outcomes}",
            self.tickets_ran_out, self.clk_tck
        ));
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
