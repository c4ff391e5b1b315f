//! Loading the fallback ticket set: time and peak memory for 100k and 1M tickets.
//!
//! `cargo run --release --example pool_load [-- COUNT...]`. Each size runs in a child
//! process of its own, so its peak RSS (VmHWM from /proc/self/status) is its own. The file
//! holds 32-character tickets, one a line, as `openssl rand -hex 16` would mint them.
//! Reported: the startup load (stream, hash, sort, generation), and a reload of unchanged
//! content (one streaming fingerprint pass, no parsing).

/// The service's allocator (src/main.rs): the peak RSS measured is the one the service has.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use realtime_service::clock::Clock;
use realtime_service::fallback::ledger::{Ledger, MemoryLedger};
use realtime_service::fallback::metrics::FallbackMetrics;
use realtime_service::fallback::TicketPool;
use sha2::{Digest, Sha256};

const DEFAULT_COUNTS: [usize; 2] = [100_000, 1_000_000];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, count] = args.as_slice() {
        if flag == "--one" {
            return match count.parse() {
                Ok(n) => one(n),
                Err(_) => ExitCode::FAILURE,
            };
        }
    }
    let counts: Vec<usize> = if args.is_empty() {
        DEFAULT_COUNTS.to_vec()
    } else {
        match args.iter().map(|a| a.parse()).collect() {
            Ok(counts) => counts,
            Err(_) => {
                eprintln!("usage: pool_load [COUNT...]");
                return ExitCode::FAILURE;
            }
        }
    };
    let Ok(me) = std::env::current_exe() else {
        return ExitCode::FAILURE;
    };
    println!("tickets    file_MB  load_ms  reload_unchanged_ms  peak_rss_MB  set_MB");
    for n in counts {
        let status = Command::new(&me).args(["--one", &n.to_string()]).status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("run with {n} tickets failed");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn one(count: usize) -> ExitCode {
    let Ok(dir) = tempfile::tempdir() else {
        return ExitCode::FAILURE;
    };
    let path = dir.path().join("tickets");
    if write_tickets(&path, count).is_err() {
        return ExitCode::FAILURE;
    }
    let file_mb = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1e6);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return ExitCode::FAILURE;
    };

    let started = Instant::now();
    let pool = TicketPool::new(
        Some(path.clone()),
        0,
        Ledger::Memory(MemoryLedger::default()),
        FallbackMetrics::new(&prometheus::Registry::new()),
        Clock::system(),
    );
    let load = started.elapsed();
    if pool.size() != count {
        eprintln!("loaded {} of {count}", pool.size());
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    runtime.block_on(pool.reload());
    let reload = started.elapsed();

    println!(
        "{count:>9}  {file_mb:>7.1}  {:>7.0}  {:>19.0}  {:>11.1}  {:>6.1}",
        load.as_secs_f64() * 1e3,
        reload.as_secs_f64() * 1e3,
        peak_rss_kb() as f64 / 1024.0,
        (count * 32) as f64 / (1024.0 * 1024.0),
    );
    ExitCode::SUCCESS
}

/// Streams `count` distinct 32-hex-character tickets to `path` (small buffers only, so the
/// writing does not raise the peak that the load is measured by).
fn write_tickets(path: &Path, count: usize) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for n in 0..count {
        let digest = Sha256::digest(n.to_le_bytes());
        writeln!(out, "{}", hex::encode(&digest[..16]))?;
    }
    out.flush()
}

/// Peak resident set size of this process, in KiB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
