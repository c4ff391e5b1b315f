//! The `realtime-service` binary: argument handling only; everything else is in the library.
//!
//! Exit codes: 0 success, 1 runtime failure (or an unhealthy `healthcheck`), 2 configuration
//! error (the message names the variable).

use std::process::ExitCode;

use realtime_service::settings::Settings;
use realtime_service::startup::{shutdown_signal, Application};
use realtime_service::telemetry;

const USAGE: &str = "\
usage: realtime-service [COMMAND]

commands:
  serve         run the proxy backend (default)
  check-config  validate the environment and print the effective settings (secrets redacted)
  demo          run against an in-process fake identity-service and print signed curl commands
  healthcheck   GET /livez on 127.0.0.1:$LISTEN_PORT; exit 0 if healthy, 1 if not
";

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    match command.as_str() {
        "serve" => serve(),
        "check-config" => check_config(),
        "demo" => runtime().block_on(demo()),
        "healthcheck" => healthcheck(),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        "-V" | "--version" => {
            println!("realtime-service {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        other => {
            eprint!("realtime-service: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("realtime-service: cannot start the async runtime: {e}");
            std::process::exit(i32::from(EXIT_RUNTIME));
        }
    }
}

fn load_settings() -> Result<Settings, ExitCode> {
    Settings::from_env().map_err(|e| {
        eprintln!("realtime-service: configuration error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Telemetry is set up and shut down outside the async runtime: the OTLP exporter's HTTP
/// client runs on its own thread and must not be created or dropped on a runtime thread.
fn serve() -> ExitCode {
    let settings = match load_settings() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let telemetry = match telemetry::init(&settings) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("realtime-service: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let code = runtime().block_on(async {
        match Application::build(&settings).await {
            Ok(app) => match app.run_until(shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "server failed");
                    ExitCode::from(EXIT_RUNTIME)
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "startup failed");
                eprintln!("realtime-service: {e}");
                ExitCode::from(match e {
                    realtime_service::startup::StartupError::Config(_)
                    | realtime_service::startup::StartupError::Policy(_) => EXIT_CONFIG,
                    _ => EXIT_RUNTIME,
                })
            }
        }
    });
    telemetry.shutdown();
    code
}

/// Validates everything startup would (environment, channel policy) without serving.
fn check_config() -> ExitCode {
    let settings = match load_settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let policy = match realtime_service::startup::load_policy(&settings) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("realtime-service: configuration error: CHANNEL_POLICY_PATH: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for line in settings.redacted_lines() {
        println!("{line}");
    }
    println!(
        "# channel policy: {} ({})",
        settings
            .channel_policy_path()
            .map_or_else(|| "built-in".to_owned(), |p| p.display().to_string()),
        policy.namespaces().collect::<Vec<_>>().join(", ")
    );
    // The pool file is read the way startup reads it, so a missing or unreadable mount shows
    // here; it is a warning, not an error, because the service must start without it.
    match settings.fallback_tickets_path() {
        None => println!("# fallback pool: disabled (0 tickets)"),
        Some(path) => match realtime_service::fallback::set::load(&path) {
            Ok(loaded) if loaded.set.is_empty() => println!("# fallback pool: empty (0 tickets)"),
            Ok(loaded) => println!("# fallback pool: loaded ({} tickets)", loaded.set.len()),
            Err(e) => println!("# fallback pool: {} (0 tickets)", e.status().as_str()),
        },
    }
    println!("# configuration OK");
    ExitCode::SUCCESS
}

async fn demo() -> ExitCode {
    let settings = Settings::from_pairs([("CENTRIFUGO_PROXY_AUTH", "none"), ("LOG_LEVEL", "info")]);
    let _telemetry = settings.as_ref().ok().and_then(|s| telemetry::init(s).ok());
    match realtime_service::demo::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("realtime-service demo: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// A dependency-free HTTP GET of `/livez`, so the probe works in a distroless image.
fn healthcheck() -> ExitCode {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    let port: u16 = std::env::var("LISTEN_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9730);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(2);
    let healthy = (|| -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /livez HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    })()
    .unwrap_or(false);
    if healthy {
        ExitCode::SUCCESS
    } else {
        eprintln!("realtime-service: /livez on {addr} is not healthy");
        ExitCode::from(EXIT_RUNTIME)
    }
}
