//! `realtime-service demo`: the whole service against an in-process stand-in identity-service
//! (`identity`), a small fallback pool and a tiny rpc backend (`demo.echo`), with a generated
//! secret, printing signed `curl` commands to try, each with the answer to expect. Press Enter
//! to take the fake identity-service down (and again to bring it back): the demo makes the
//! first failed call itself and says when the outage window has opened the fallback pool.
//!
//! Ctrl-C stops it at once: stdin is read on a plain thread that nothing waits for, because a
//! blocking read of a terminal cannot be cancelled and the runtime would wait for it at
//! shutdown.

pub mod centrifugo;
pub mod identity;
pub mod standin;

use std::io::{BufRead as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use identity::{DemoTickets, IdentityServer};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::app::{shutdown_signal, Application};
use crate::clock::Clock;
use crate::config::{Config, Settings};
use crate::identity::{proto, Gateway};
use crate::transport::http::auth::{sign, SECRET_HEADER, SIGNATURE_HEADER};

const WINDOW_MS: u64 = 2000;
const POOL_TICKETS: &[&str] = &["demo-pool-1", "demo-pool-2", "demo-pool-3"];
const CLIENT: &str = "demo-client";
/// The demo user's family; `chat:<family>` is one of its channels under the built-in policy.
const FAMILY: &str = "demo-family";
/// The one method of the demo's rpc backend (prefix `demo`).
const ECHO_METHOD: &str = "demo.echo";
/// Printed when the outage detector opens the window; tests wait for this line.
pub const WINDOW_OPEN: &str = "the outage window is open: pool tickets are accepted now";
/// The bound for the startup connect and for waiting on the rpc backend.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

type DemoError = Box<dyn std::error::Error + Send + Sync>;

pub async fn run() -> Result<(), DemoError> {
    let tickets = DemoTickets::new([
        (
            "demo-ticket-ok",
            identity::success("demo-user", FAMILY, proto::SubscriptionTier::Pro, false),
        ),
        (
            "demo-ticket-degraded",
            identity::success("demo-user", FAMILY, proto::SubscriptionTier::Free, true),
        ),
    ]);
    // Shared with the Enter toggle, and held here until shutdown: dropping it stops it, and
    // the toggle ends early when stdin closes.
    let fake = Arc::new(
        IdentityServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), Arc::new(tickets)).await?,
    );
    let (rpc_addr, rpc_backend) = start_echo_backend().await?;

    let dir = std::env::temp_dir().join(format!("realtime-service-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pool_path = dir.join("tickets");
    std::fs::write(&pool_path, POOL_TICKETS.join("\n") + "\n")?;

    let mut secret = [0u8; 24];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness for the demo secret: {e}"))?;
    let secret = hex::encode(secret);
    let env = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
    let auth = DemoAuth::from_env(&env("CENTRIFUGO_PROXY_AUTH", "hmac"), secret.clone())?;
    let mut pairs = vec![
        ("LISTEN_HOST", env("LISTEN_HOST", "127.0.0.1")),
        ("LISTEN_PORT", env("LISTEN_PORT", "9730")),
        ("CENTRIFUGO_PROXY_AUTH", auth.mode().into()),
        ("CENTRIFUGO_PROXY_SECRET", secret.clone()),
        ("IDENTITY_VALIDATE_GRPC_ADDRESS", fake.address()),
        ("IDENTITY_VALIDATE_DEADLINE_MS", "1000".into()),
        ("IDENTITY_PROBE_INTERVAL_MS", "500".into()),
        ("FALLBACK_TICKETS_PATH", pool_path.display().to_string()),
        ("FALLBACK_DEGRADED_WINDOW_MS", WINDOW_MS.to_string()),
        ("FALLBACK_LOW_WATERMARK", "0".into()),
        ("RPC_ROUTES", format!("demo=http://{rpc_addr}/rpc")),
        ("SHUTDOWN_DRAIN_DELAY_MS", "0".into()),
    ];
    if let Ok(port) = std::env::var("GRPC_PROXY_LISTEN_PORT") {
        pairs.push(("GRPC_PROXY_LISTEN_PORT", port));
    }
    let settings = Settings::from_pairs(pairs)?;
    let config = Config::from_settings(&settings)?;
    let bound_ip = config.listen.http.ip();
    let app = Application::from_config(config, Clock::system()).await?;
    let bound = SocketAddr::new(bound_ip, app.port());
    let base = format!(
        "http://{}",
        SocketAddr::new(curl_host(bound_ip), bound.port())
    );
    let gateway = app.state().service.identity().clone();
    let grpc = app
        .grpc_port()
        .map(|port| SocketAddr::new(curl_host(bound_ip), port));
    let server = tokio::spawn(app.run_until(shutdown_signal()));

    let signer = Signer {
        base: base.clone(),
        auth,
    };
    let session = match accepted_meta(&signer).await {
        Ok(meta) => meta,
        Err(e) => {
            server.abort();
            rpc_backend.abort();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("the demo's own accepted connect failed: {e}").into());
        }
    };
    println!(
        "\nrealtime-service demo listening on {bound} (LISTEN_HOST, LISTEN_PORT); fake identity-service on {}, rpc backend for {ECHO_METHOD} on {rpc_addr}, secret {secret}",
        fake.address()
    );
    print_commands(&signer, &session)?;
    if let DemoAuth::StaticHeader(_) = signer.auth {
        let proxies = match grpc {
            Some(addr) => centrifugo::Proxies::Grpc(addr),
            None => centrifugo::Proxies::Http(SocketAddr::new(curl_host(bound_ip), bound.port())),
        };
        let path = std::env::var_os("DEMO_CENTRIFUGO_CONFIG")
            .map_or_else(|| dir.join("centrifugo.json"), std::path::PathBuf::from);
        std::fs::write(&path, centrifugo::config(proxies)? + "\n")?;
        print_centrifugo(&path, &secret)?;
    } else {
        println!(
            "# Stock Centrifugo cannot sign: start the demo with CENTRIFUGO_PROXY_AUTH=static_header\n\
             # to get a Centrifugo config that calls it (GRPC_PROXY_LISTEN_PORT=9731 for gRPC).\n"
        );
    }

    let lines = stdin_lines();
    let toggler = tokio::spawn(toggle_identity(lines, fake.clone(), gateway));
    let result = server.await;
    toggler.abort();
    rpc_backend.abort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result??)
}

/// Where curl should go to reach a listener bound on `ip`: the address itself, or loopback
/// when it is the unspecified address (which accepts on every interface).
fn curl_host(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// How the demo's callers authenticate: `hmac` (a signing proxy in front of Centrifugo) or
/// `static_header` (what stock Centrifugo sends).
enum DemoAuth {
    Hmac(String),
    StaticHeader(String),
}

impl DemoAuth {
    fn from_env(mode: &str, secret: String) -> Result<Self, DemoError> {
        match mode {
            "hmac" => Ok(Self::Hmac(secret)),
            "static_header" => Ok(Self::StaticHeader(secret)),
            other => Err(format!(
                "CENTRIFUGO_PROXY_AUTH={other:?}: the demo runs with hmac or static_header"
            )
            .into()),
        }
    }

    fn mode(&self) -> &'static str {
        match self {
            Self::Hmac(_) => "hmac",
            Self::StaticHeader(_) => "static_header",
        }
    }

    /// The header (name, value) that authenticates `body`.
    fn header(&self, body: &str) -> (&'static str, String) {
        match self {
            Self::Hmac(secret) => (SIGNATURE_HEADER, sign(secret.as_bytes(), body.as_bytes())),
            Self::StaticHeader(secret) => (SECRET_HEADER, secret.clone()),
        }
    }
}

/// Authenticates bodies the way Centrifugo would, and prints them as curls.
struct Signer {
    base: String,
    auth: DemoAuth,
}

impl Signer {
    fn curl(&self, proxy: &str, body: &str) -> String {
        let (name, value) = self.auth.header(body);
        format!(
            "curl -sS -w ' -> HTTP %{{http_code}}\\n' -X POST {}/centrifugo/{proxy} -H 'Content-Type: application/json' -H '{name}: {value}' --data {}",
            self.base,
            shell_quote(body)
        )
    }
}

/// How to start Centrifugo against this demo, and a client to try it with.
fn print_centrifugo(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# Stock Centrifugo v6 against this demo (config written to {path}):\n\
         CENTRIFUGO_VAR_PROXY_SECRET={secret} centrifugo -c {path}\n\n\
         # Then connect with the JavaScript SDK (npm install centrifuge ws), a fresh ticket per attempt:\n\
         #   const c = new Centrifuge('ws://127.0.0.1:8000/connection/websocket', {{ websocket: WebSocket,\n\
         #     getData: async () => ({{ token: '{reusable}' }}) }});\n\
         #   c.on('connected', ctx => console.log('connected as', ctx.client)); c.connect();\n",
        path = path.display(),
        reusable = standin::REUSABLE_TICKET,
    )?;
    out.flush()
}

/// One argument for a POSIX shell, whatever it contains.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Centrifugo's fields common to every proxy request.
fn base_request(fields: Value) -> Value {
    let mut body = json!({
        "client": CLIENT,
        "transport": "websocket",
        "protocol": "json",
        "encoding": "json",
    });
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
    body
}

fn connect_body(ticket: &str) -> String {
    base_request(json!({ "data": { "token": ticket } })).to_string()
}

/// What an accepted connect gave the connection: its user and meta, which Centrifugo sends
/// back on every later call of that connection.
struct Session {
    user: String,
    meta: Value,
}

impl Session {
    fn request(&self, mut fields: Value) -> String {
        fields["user"] = json!(self.user);
        fields["meta"] = self.meta.clone();
        base_request(fields).to_string()
    }
}

/// Makes the accepted connect over HTTP, as Centrifugo would, and keeps its user and meta.
async fn accepted_meta(signer: &Signer) -> Result<Session, DemoError> {
    let client = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .no_proxy()
        .build()?;
    let body = connect_body("demo-ticket-ok");
    let (name, value) = signer.auth.header(&body);
    let response = client
        .post(format!("{}/centrifugo/connect", signer.base))
        .header(header::CONTENT_TYPE.as_str(), "application/json")
        .header(name, value)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: Value = serde_json::from_slice(&response.bytes().await?)?;
    let result = &answer["result"];
    match (result["user"].as_str(), result.get("meta")) {
        (Some(user), Some(meta)) if status.is_success() => Ok(Session {
            user: user.to_owned(),
            meta: meta.clone(),
        }),
        _ => Err(format!("HTTP {status}: {answer}").into()),
    }
}

fn print_commands(signer: &Signer, session: &Session) -> std::io::Result<()> {
    let channel = format!("chat:{FAMILY}");
    let mut out = std::io::stdout().lock();
    writeln!(out, "# Signed commands against {}:\n", signer.base)?;
    let mut show = |title: &str, expect: &str, proxy: &str, body: &str| {
        writeln!(out, "# {title}")?;
        writeln!(out, "#   expect: {expect}")?;
        writeln!(out, "{}\n", signer.curl(proxy, body))
    };
    show(
        "Accepted: identity-service validates the ticket",
        r#"HTTP 200, body with "user":"demo-user""#,
        "connect",
        &connect_body("demo-ticket-ok"),
    )?;
    show(
        "Rejected: identity-service does not know the ticket (the SDK retries with a fresh one)",
        r#"HTTP 401, body with "code":4401"#,
        "connect",
        &connect_body("demo-ticket-unknown"),
    )?;
    show(
        "Degraded: identity-service answered from its own fallback (degraded: true in meta and info)",
        r#"HTTP 200, body with "degraded":true"#,
        "connect",
        &connect_body("demo-ticket-degraded"),
    )?;
    show(
        &format!("Subscribe to {channel} with the accepted connection's meta (the channel policy allows it)"),
        r#"HTTP 200, body with "result""#,
        "subscribe",
        &session.request(json!({ "channel": channel })),
    )?;
    show(
        &format!("Publish to {channel} (allowed; the payload must be a JSON object)"),
        r#"HTTP 200, body with "result""#,
        "publish",
        &session.request(json!({ "channel": channel, "data": { "text": "hello" } })),
    )?;
    show(
        "Subscribe to another family's chat: denied",
        r#"HTTP 200, body with "code":403"#,
        "subscribe",
        &session.request(json!({ "channel": "chat:another-family" })),
    )?;
    show(
        &format!(
            "RPC {ECHO_METHOD}: routed to the demo's backend (RPC_ROUTES), which echoes the data"
        ),
        r#"HTTP 200, body with "echo""#,
        "rpc",
        &session.request(json!({ "method": ECHO_METHOD, "data": { "text": "ping" } })),
    )?;
    writeln!(
        out,
        "# Fallback pool: press Enter here to take identity-service down; the demo makes the first\n\
         # failed call and prints \"{WINDOW_OPEN}\" when the {} s window has passed.\n\
         # Then (each pool ticket works once; {} also exist; Enter again brings identity-service back):",
        WINDOW_MS / 1000,
        POOL_TICKETS[1..].join(", ")
    )?;
    writeln!(
        out,
        "#   expect: HTTP 200, body with \"fallback_path\":\"pool\""
    )?;
    writeln!(
        out,
        "{}\n",
        signer.curl("connect", &connect_body(POOL_TICKETS[0]))
    )?;
    writeln!(
        out,
        "# State: curl -sS {0}/health ; metrics: curl -sS {0}/metrics",
        signer.base
    )?;
    writeln!(out, "# Ctrl-C stops the demo.\n")?;
    out.flush()
}

/// Lines typed on stdin, read on a plain thread: nothing joins it, so a read blocked on a
/// terminal cannot hold up shutdown (the process exits under it). The channel holds one
/// line; the thread ends when stdin closes or the receiver is gone.
fn stdin_lines() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    let spawned = std::thread::Builder::new()
        .name("demo-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut line = String::new();
            loop {
                line.clear();
                match stdin.read_line(&mut line) {
                    Ok(n) if n > 0 => {
                        if tx.blocking_send(()).is_err() {
                            return;
                        }
                    }
                    // EOF (no terminal) or unreadable: nothing more to toggle.
                    _ => return,
                }
            }
        });
    if let Err(e) = spawned {
        // Without the reader the demo still serves; only the Enter toggle is lost.
        println!("cannot read stdin ({e}); the Enter toggle is off");
    }
    rx
}

/// Enter takes the fake identity-service down, Enter again brings it back.
async fn toggle_identity(
    mut lines: mpsc::Receiver<()>,
    fake: Arc<IdentityServer>,
    gateway: Gateway,
) {
    let mut window: Option<JoinHandle<()>> = None;
    while lines.recv().await.is_some() {
        if let Some(watch) = window.take() {
            watch.abort();
            match fake.restart().await {
                Ok(()) => println!("identity-service is UP again"),
                Err(e) => println!("could not restart the fake identity-service: {e}"),
            }
        } else {
            fake.stop();
            println!(
                "identity-service is DOWN; the outage window ({} s) starts at the first failed call, which the demo makes now",
                WINDOW_MS / 1000
            );
            window = Some(tokio::spawn(announce_window(gateway.clone())));
        }
    }
}

/// Makes the first failed call itself (the background probe only runs once a failure streak
/// is open) and prints `WINDOW_OPEN` as soon as the outage detector says so.
async fn announce_window(gateway: Gateway) {
    let window = Duration::from_millis(WINDOW_MS);
    loop {
        let snapshot = gateway.detector().snapshot();
        if snapshot.degraded {
            println!("{WINDOW_OPEN}");
            return;
        }
        match snapshot.age {
            Some(age) => {
                // The window is a duration from the streak's start: sleep until it should
                // have passed, then ask the detector again.
                tokio::time::sleep(window.saturating_sub(age).max(Duration::from_millis(10))).await;
            }
            None => {
                gateway.probe().await;
                if gateway.detector().snapshot().age.is_none() {
                    // The call reached identity-service (the relay was still closing): retry.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The demo's rpc backend on loopback: `demo.echo` answers its data back; anything else is
/// a 404 refusal, which the service passes on as an rpc error.
async fn start_echo_backend() -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let router = axum::Router::new().route("/rpc", axum::routing::post(echo));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(error = %e, "demo rpc backend stopped");
        }
    });
    Ok((addr, task))
}

/// The handler of the demo's rpc backend (also served by `standin`).
pub(crate) async fn echo(body: Bytes) -> axum::response::Response {
    let json = |status: StatusCode, body: Value| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return json(StatusCode::BAD_REQUEST, json!({ "message": "not JSON" }));
    };
    if request["method"] != ECHO_METHOD {
        return json(
            StatusCode::NOT_FOUND,
            json!({ "message": "unknown method" }),
        );
    }
    json(
        StatusCode::OK,
        json!({ "echo": request["data"], "user": request["user"] }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("{}"), "'{}'");
    }

    #[test]
    fn curls_go_to_loopback_for_the_unspecified_address() {
        assert_eq!(
            curl_host(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            curl_host(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        let bound: IpAddr = "127.0.0.2".parse().expect("ip");
        assert_eq!(curl_host(bound), bound);
    }
}
