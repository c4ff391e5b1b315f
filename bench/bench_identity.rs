//! A standalone fake identity-service for the benchmark (`bench/run.sh`).
//!
//! Runs [`FakeIdentity`] with `accept_any(true)`: every non-empty ticket is answered with a
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

use realtime_service::fake_identity::FakeIdentity;

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
        let fake = FakeIdentity::start_on(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        fake.accept_any(true);
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
