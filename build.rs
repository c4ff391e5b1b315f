//! Generates, from `proto/` with a vendored `protoc` (so a fresh machine builds with cargo
//! alone), client and server code for both gRPC contracts:
//! - `realtime.v1` (identity-service's Validate): the service is its client; the server
//!   side backs the fake identity-service.
//! - `centrifugal.centrifugo.proxy` (Centrifugo's proxy protocol): the service is its
//!   server; the client side drives the tests and the benchmark.

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
