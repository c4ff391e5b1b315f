//! A standalone fake identity-service for the benchmark (`bench/run.sh`).
//!
//! Runs the product's stand-in identity-service (`demo::identity`) answering every non-empty ticket with a
//! `Success` (no scripted tickets, nothing consumed), so the load generator can send unique
//! tickets at any rate. Prints `listening <host:port>` on stdout once it accepts connections,
//! then serves until it is killed (SIGTERM/SIGINT end it cleanly).
//!
//! ```text
//! cargo run --release --example bench_identity -- [--listen 127.0.0.1:0] [--threads N]
//! ```
//! `--listen` defaults to `127.0.0.1:0` (a free loopback port). `--threads` sets the tokio
//! worker threads (default 1: on a small shared machine the fake should not crowd out the
//! service under test; both the direct and the proxied run pay the same fake).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use std::sync::Arc;

use realtime_service::demo::identity::{self as stand_in, Answers, IdentityServer};
use realtime_service::identity::proto::{self, ValidateRequest, ValidateResponse};
use tonic::{Request, Response, Status};

#[path = "stop.rs"]
mod stop;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench_identity: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut threads: usize = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                listen = v.parse().map_err(|e| format!("--listen {v:?}: {e}"))?;
            }
            "--threads" => {
                let v = value("--threads")?;
                threads = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--threads {v:?}: expected a positive integer"))?;
            }
            "-h" | "--help" => {
                println!("usage: bench_identity [--listen 127.0.0.1:0] [--threads 1]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !listen.ip().is_loopback() {
        return Err(format!(
            "--listen {listen}: only loopback addresses are allowed"
        ));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let fake = IdentityServer::start_on(listen, Arc::new(AcceptAny))
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening {}", fake.address())
                .and_then(|()| out.flush())
                .map_err(|e| format!("stdout: {e}"))?;
        }
        stop::stop_signal().await;
        drop(fake);
        Ok(())
    })
}

/// Every non-empty ticket is a success for a user named after the ticket's length class, so
/// the service under test does the full work of an accepted connect.
struct AcceptAny;

#[tonic::async_trait]
impl Answers for AcceptAny {
    async fn validate(
        &self,
        request: Request<ValidateRequest>,
    ) -> Result<Response<ValidateResponse>, Status> {
        let ticket = stand_in::ticket_of(request)?;
        let user = format!("user-{}", ticket.len());
        Ok(Response::new(stand_in::success(
            &user,
            &format!("family-of-{user}"),
            proto::SubscriptionTier::Free,
            false,
        )))
    }
}
