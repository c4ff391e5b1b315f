//! Generates, from `proto/` with a vendored `protoc` (so a fresh machine builds with cargo
//! alone), client and server code for both gRPC contracts:
//! - `realtime.v1` (identity-service's Validate): the service is its client; the server
//!   side backs the fake identity-service.
//! - `centrifugal.centrifugo.proxy` (Centrifugo's proxy protocol): the service is its
//!   server; the client side drives the tests and the benchmark.
//!
//! It also exports `REALTIME_GIT_COMMIT` for `realtime_build_info{commit}`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    export_git_commit();
    // Respect an explicit PROTOC (a distro build may insist on its own), else use the vendored one.
    if std::env::var_os("PROTOC").is_none() {
        // Build scripts are single-threaded, and PROTOC is how prost-build is told.
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No `Client::connect(addr)` constructor: it would collide with the generated
        // method of Centrifugo's `Connect` RPC. Clients are built from a `Channel`.
        .build_transport(false)
        .compile_protos(
            &[
                "proto/realtime/v1/connect_proxy.proto",
                "proto/centrifugal/centrifugo/proxy/proxy.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}

/// `REALTIME_GIT_COMMIT`: 12 hex digits of the commit, from the variable of that name when it
/// holds one (an image build, whose context has no `.git`), else from `git`, else `unknown`.
fn export_git_commit() {
    println!("cargo:rerun-if-env-changed=REALTIME_GIT_COMMIT");
    let given = std::env::var("REALTIME_GIT_COMMIT").ok();
    let commit = given
        .as_deref()
        .and_then(short_commit)
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=REALTIME_GIT_COMMIT={commit}");
}

/// A commit id (7 to 40 hex digits), shortened to 12.
fn short_commit(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let hex = (7..=40).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| raw[..raw.len().min(12)].to_ascii_lowercase())
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The commit of the checkout, and the files whose change means a new one: `HEAD` (checkout)
/// and the branch it points to (commit), loose or packed. Only files that exist are named:
/// cargo reruns a build script on every build when a named file is missing.
fn git_commit() -> Option<String> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let commit = short_commit(&git(&manifest, &["rev-parse", "--short=12", "HEAD"])?)?;
    let git_dir = manifest.join(git(&manifest, &["rev-parse", "--git-dir"])?);
    let common_dir = manifest.join(git(&manifest, &["rev-parse", "--git-common-dir"])?);
    let head = git_dir.join("HEAD");
    let mut watched = vec![head.clone(), common_dir.join("packed-refs")];
    if let Some(branch) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|h| h.strip_prefix("ref:").map(|r| r.trim().to_owned()))
    {
        watched.push(common_dir.join(branch));
    }
    for path in watched.iter().filter(|p| p.is_file()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Some(commit)
}
