//! The `realtime-service` binary: argument handling only; everything else is in the library.
//!
//! Exit codes: 0 success, 1 runtime failure (or an unhealthy `healthcheck`), 2 usage or
//! configuration error (the message names the argument or the variable). Every command
//! answers `--help`; none takes other arguments.

use std::process::ExitCode;

use realtime_service::app::{shutdown_signal, Application, StartupError};
use realtime_service::clock::Clock;
use realtime_service::config::secrets::{check_secret, load_file};
use realtime_service::config::{Config, ConfigErrors, ProxyAuthMode, Secret};
use realtime_service::telemetry;

const USAGE: &str = "\
usage: realtime-service [COMMAND] [--help]

commands:
  serve         run the proxy backend (default)
  check-config  validate the environment and print the effective settings (secrets redacted)
  demo          run against an in-process fake identity-service and print signed curl commands
                (on $LISTEN_HOST:$LISTEN_PORT, default 127.0.0.1:9730)
  standin       run a stand-in identity-service with single-use tickets, a ticket-minting
                HTTP side and the demo rpc backend, for trying the service next to Centrifugo
                ($STANDIN_GRPC_LISTEN, default 127.0.0.1:50051; $STANDIN_HTTP_LISTEN, 50052)
  sign          print the X-Centrifugo-Proxy-Signature header for the body on stdin, signed
                with $CENTRIFUGO_PROXY_SECRET, for calling the service by hand:
                  echo -n \"$BODY\" | realtime-service sign
  healthcheck   GET /livez on 127.0.0.1:$LISTEN_PORT; exit 0 if healthy, 1 if not

`realtime-service COMMAND --help` describes one command.
exit codes: 0 success, 1 runtime failure, 2 usage or configuration error
";

/// mimalloc: per-thread heaps, so a buffer freed on the other worker thread costs no lock
/// (glibc's arenas did: about a tenth of the service's CPU under load went to malloc, free
/// and the futex calls of their contended locks; docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

/// The subcommands, each with its own usage text.
#[derive(Clone, Copy)]
enum Command {
    Serve,
    CheckConfig,
    Demo,
    Standin,
    Sign,
    Healthcheck,
}

impl Command {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "serve" => Self::Serve,
            "check-config" => Self::CheckConfig,
            "demo" => Self::Demo,
            "standin" => Self::Standin,
            "sign" => Self::Sign,
            "healthcheck" => Self::Healthcheck,
            _ => return None,
        })
    }

    fn usage(self) -> &'static str {
        match self {
            Self::Serve => {
                "\
usage: realtime-service [serve]

Runs the proxy backend, configured by environment variables only (docs/configuration.md).
exit codes: 0 after SIGTERM or SIGINT, 1 runtime failure, 2 configuration error
"
            }
            Self::CheckConfig => {
                "\
usage: realtime-service check-config

Validates the environment and the channel policy as startup would, reporting every bad
variable at once; prints the effective settings (secrets redacted) and the fallback pool
startup would load.
exit codes: 0 valid, 2 a configuration error (each names its variable)
"
            }
            Self::Demo => {
                "\
usage: realtime-service demo

Runs the service on $LISTEN_HOST:$LISTEN_PORT (default 127.0.0.1:9730) against an in-process
fake identity-service and prints signed curl commands; Enter toggles identity-service.
With CENTRIFUGO_PROXY_AUTH=static_header (and GRPC_PROXY_LISTEN_PORT for gRPC proxies) it also
writes the matching Centrifugo config ($DEMO_CENTRIFUGO_CONFIG, default in a temporary
directory) and prints the centrifugo command line that uses it.
exit codes: 0 after Ctrl-C, 1 runtime failure
"
            }
            Self::Standin => {
                "\
usage: realtime-service standin

Runs a stand-in identity-service for trying the service next to Centrifugo: gRPC Validate on
$STANDIN_GRPC_LISTEN (default 127.0.0.1:50051) answering single-use tickets it minted, and an
HTTP side on $STANDIN_HTTP_LISTEN (default 127.0.0.1:50052): POST /tickets mints one, PUT /mode
(up, down, stall, fail), GET /stats, POST /rpc (the demo rpc backend). Development only.
exit codes: 0 after SIGTERM or SIGINT, 1 runtime failure, 2 a bad listen address
"
            }
            Self::Sign => {
                "\
usage: echo -n \"$BODY\" | realtime-service sign

Prints the X-Centrifugo-Proxy-Signature header (hex HMAC-SHA256 of the body on stdin, at most
1 MiB) signed with $CENTRIFUGO_PROXY_SECRET, or the file $CENTRIFUGO_PROXY_SECRET_FILE names.
The secret must be at least 16 bytes, as the service requires.
exit codes: 0 printed, 1 stdin unreadable or the body over 1 MiB, 2 no secret or a secret
the service would refuse
"
            }
            Self::Healthcheck => {
                "\
usage: realtime-service healthcheck

GETs /livez on 127.0.0.1:$LISTEN_PORT (default 9730), for exec probes and Docker HEALTHCHECK.
exit codes: 0 healthy, 1 not
"
            }
        }
    }

    fn run(self) -> ExitCode {
        match self {
            Self::Serve => serve(),
            Self::CheckConfig => check_config(),
            Self::Demo => runtime().block_on(demo()),
            Self::Standin => runtime().block_on(standin()),
            Self::Sign => sign(),
            Self::Healthcheck => healthcheck(),
        }
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    let rest: Vec<String> = args.collect();
    let (name, command) = match first.as_deref() {
        None => ("serve", Command::Serve),
        Some("-h" | "--help" | "help") if rest.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") if rest.is_empty() => {
            println!("realtime-service {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some(name) => match Command::parse(name) {
            Some(command) => (name, command),
            None => {
                eprint!("realtime-service: unknown command {name:?}\n\n{USAGE}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    match rest.as_slice() {
        [] => command.run(),
        [flag] if flag == "-h" || flag == "--help" => {
            print!("{}", command.usage());
            ExitCode::SUCCESS
        }
        [other, ..] => {
            eprint!(
                "realtime-service {name}: unknown argument {other:?}\n\n{}",
                command.usage()
            );
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
    Config::load_env().map(|(_, config)| config).map_err(report)
}

fn report(errors: ConfigErrors) -> ExitCode {
    for e in errors.iter() {
        eprintln!("realtime-service: configuration error: {e}");
    }
    ExitCode::from(EXIT_CONFIG)
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
    let (settings, config) = match Config::load_env() {
        Ok(loaded) => loaded,
        Err(errors) => return report(errors),
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

/// `standin`: the stand-in identity-service until SIGTERM or Ctrl-C.
async fn standin() -> ExitCode {
    use realtime_service::demo::standin;
    let addresses = match standin::Addresses::from_env() {
        Ok(addresses) => addresses,
        Err(e) => {
            eprintln!("realtime-service standin: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let stop = async {
        shutdown_signal().await;
    };
    match standin::run(addresses, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("realtime-service standin: {e}");
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

    let secret = match sign_secret() {
        Ok(secret) => secret,
        Err(message) => {
            eprintln!("realtime-service sign: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
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
    let signature = realtime_service::transport::http::auth::sign(
        secrecy::ExposeSecret::expose_secret(&secret).as_bytes(),
        &body,
    );
    println!("{SIGNATURE_HEADER_NAME}: {signature}");
    ExitCode::SUCCESS
}

/// The secret `sign` uses: the variable, or the file the service itself would read (a
/// mounted Secret), held to the rules the service holds it to (at least
/// `MIN_SECRET_BYTES`), so what is signed here is what the service would accept.
fn sign_secret() -> Result<Secret, String> {
    const VAR: &str = "CENTRIFUGO_PROXY_SECRET";
    const FILE: &str = "CENTRIFUGO_PROXY_SECRET_FILE";
    let from_var = std::env::var(VAR).ok().filter(|s| !s.is_empty());
    let from_file = std::env::var_os(FILE).filter(|p| !p.is_empty());
    let (var, secret) = match (from_var, from_file) {
        (Some(secret), _) => (VAR, Secret::from(secret)),
        (None, Some(path)) => match load_file(ProxyAuthMode::Hmac, path.as_ref()) {
            Ok(Some(secret)) => (FILE, secret),
            Ok(None) => return Err(format!("{FILE}: the file is empty")),
            Err(e) => return Err(format!("{FILE}: {e}")),
        },
        (None, None) => {
            return Err(format!(
                "{VAR} is not set (nor {FILE}); export the secret the service uses, then: echo -n \"$BODY\" | realtime-service sign"
            ))
        }
    };
    check_secret(ProxyAuthMode::Hmac, &secret).map_err(|e| format!("{var}: {e}"))?;
    Ok(secret)
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
