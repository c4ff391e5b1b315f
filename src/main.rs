//! The `realtime-service` binary: argument handling only; everything else is in the library.
//!
//! Exit codes: 0 success, 1 runtime failure (or an unhealthy `healthcheck`), 2 configuration
//! error (the message names the variable).

use std::process::ExitCode;

use realtime_service::app::{shutdown_signal, Application, StartupError};
use realtime_service::clock::Clock;
use realtime_service::config::{Config, Settings};
use realtime_service::telemetry;

const USAGE: &str = "\
usage: realtime-service [COMMAND]

commands:
  serve         run the proxy backend (default)
  check-config  validate the environment and print the effective settings (secrets redacted)
  demo          run against an in-process fake identity-service and print signed curl commands
                (on $LISTEN_HOST:$LISTEN_PORT, default 127.0.0.1:9730)
  sign          print the X-Centrifugo-Proxy-Signature header for the body on stdin, signed
                with $CENTRIFUGO_PROXY_SECRET, for calling the service by hand:
                  echo -n \"$BODY\" | realtime-service sign
  healthcheck   GET /livez on 127.0.0.1:$LISTEN_PORT; exit 0 if healthy, 1 if not
";

/// mimalloc: per-thread heaps, so a buffer freed on the other worker thread costs no lock
/// (glibc's arenas did: about a tenth of the service's CPU under load went to malloc, free
/// and the futex calls of their contended locks; docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    match command.as_str() {
        "serve" => serve(),
        "check-config" => check_config(),
        "demo" => runtime().block_on(demo()),
        "sign" => sign(),
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

/// The whole configuration, every problem reported at once.
fn load_config() -> Result<Config, ExitCode> {
    Settings::from_env()
        .and_then(|settings| Config::from_settings(&settings))
        .map_err(|errors| {
            for e in errors.iter() {
                eprintln!("realtime-service: configuration error: {e}");
            }
            ExitCode::from(EXIT_CONFIG)
        })
}

/// Telemetry is set up and shut down outside the async runtime: the OTLP exporter's HTTP
/// client runs on its own thread and must not be created or dropped on a runtime thread.
fn serve() -> ExitCode {
    let config = match load_config() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let telemetry = match telemetry::init(&config.telemetry) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("realtime-service: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let code = runtime().block_on(async {
        match Application::from_config(config, Clock::system()).await {
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
                    StartupError::Config(_) | StartupError::Policy(_) => EXIT_CONFIG,
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
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("realtime-service: configuration error: {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match Config::from_settings(&settings) {
        Ok(config) => config,
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("realtime-service: configuration error: {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let policy = match realtime_service::app::load_policy(config.policy_path.as_deref()) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("realtime-service: configuration error: CHANNEL_POLICY_PATH: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for line in settings.redacted_lines() {
        println!("{line}");
    }
    for warning in config.warnings() {
        println!("# warning: {warning}");
    }
    println!(
        "# channel policy: {} ({})",
        config
            .policy_path
            .as_ref()
            .map_or_else(|| "built-in".to_owned(), |p| p.display().to_string()),
        policy.namespaces().collect::<Vec<_>>().join(", ")
    );
    // The pool file is read the way startup reads it, so a missing or unreadable mount shows
    // here; it is a warning, not an error, because the service must start without it.
    let (lines, misconfigured) =
        runtime().block_on(realtime_service::app::describe_stores(&config));
    for line in lines {
        println!("# {line}");
    }
    if let Some(error) = misconfigured {
        eprintln!("realtime-service: configuration error: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    println!("# configuration OK");
    ExitCode::SUCCESS
}

async fn demo() -> ExitCode {
    let config = Config::from_pairs([("CENTRIFUGO_PROXY_AUTH", "none"), ("LOG_LEVEL", "info")]);
    let _telemetry = config
        .as_ref()
        .ok()
        .and_then(|c| telemetry::init(&c.telemetry).ok());
    match realtime_service::demo::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("realtime-service demo: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The header `hmac` mode checks, as `curl -H` takes it.
const SIGNATURE_HEADER_NAME: &str = "X-Centrifugo-Proxy-Signature";
/// The largest body `sign` reads: far above any body the service accepts, so a body the
/// service would refuse as too large can still be signed to see that refusal.
const SIGN_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// `sign`: the signature header for the body on stdin, exactly as the service will check it
/// (HMAC-SHA256 of the raw bytes, hex). The secret comes from the environment, never from an
/// argument, so it stays out of shell history and `ps`.
fn sign() -> ExitCode {
    use std::io::Read;

    // The variable, or the file the service itself would read (a mounted Secret).
    let mut secret = std::env::var_os("CENTRIFUGO_PROXY_SECRET")
        .unwrap_or_default()
        .into_encoded_bytes();
    if secret.is_empty() {
        if let Some(path) =
            std::env::var_os("CENTRIFUGO_PROXY_SECRET_FILE").filter(|p| !p.is_empty())
        {
            match std::fs::read(&path) {
                // As the service reads it: a trailing newline is not part of the secret.
                Ok(mut bytes) => {
                    while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
                        bytes.pop();
                    }
                    secret = bytes;
                }
                Err(e) => {
                    eprintln!(
                        "realtime-service sign: CENTRIFUGO_PROXY_SECRET_FILE: cannot read it: {e}"
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
    }
    if secret.is_empty() {
        eprintln!(
            "realtime-service sign: CENTRIFUGO_PROXY_SECRET is not set (nor CENTRIFUGO_PROXY_SECRET_FILE); export the secret the service uses, then: echo -n \"$BODY\" | realtime-service sign"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let mut body = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(SIGN_MAX_BODY_BYTES + 1)
        .read_to_end(&mut body);
    if let Err(e) = read {
        eprintln!("realtime-service sign: cannot read the body from stdin: {e}");
        return ExitCode::from(EXIT_RUNTIME);
    }
    if body.len() as u64 > SIGN_MAX_BODY_BYTES {
        eprintln!(
            "realtime-service sign: the body on stdin is larger than {SIGN_MAX_BODY_BYTES} bytes"
        );
        return ExitCode::from(EXIT_RUNTIME);
    }
    let signature = realtime_service::transport::http::auth::sign(&secret, &body);
    println!("{SIGNATURE_HEADER_NAME}: {signature}");
    ExitCode::SUCCESS
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

#[cfg(test)]
mod tests {
    #[test]
    fn sign_prints_the_header_the_service_checks() {
        assert!(super::SIGNATURE_HEADER_NAME
            .eq_ignore_ascii_case(realtime_service::transport::http::auth::SIGNATURE_HEADER));
    }
}
