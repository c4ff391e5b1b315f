//! Generates the identity-service gRPC client and server from `proto/` with a vendored
//! `protoc`, so a fresh machine builds with cargo alone.

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
        .compile_protos(&["proto/realtime/v1/connect_proxy.proto"], &["proto"])?;
    Ok(())
}
