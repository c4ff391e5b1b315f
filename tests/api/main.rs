//! One integration-test binary: the real service on a random port, a real tonic fake of
//! identity-service behind it, signed HTTP requests and a tonic client of the gRPC proxy in front.
#![expect(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod abuse;
mod abuse_process;
mod architecture;
mod auth;
mod config;
mod connect;
mod demo;
mod docs;
mod fake_identity;
mod grpc_auth;
mod grpc_cancel;
mod grpc_compression;
mod grpc_connect;
mod grpc_edge;
mod grpc_lifecycle;
mod grpc_ops;
mod grpc_pool;
mod grpc_protocol;
mod grpc_proxies;
mod grpc_raw;
mod grpc_support;
mod helpers;
mod logs;
mod ops;
mod outage;
mod pool;
mod pool_fleet;
mod pool_store;
mod process;
mod proxies_edge;
mod proxies_policy_file;
mod proxies_publish;
mod proxies_refresh;
mod proxies_rpc;
mod proxies_sub_refresh;
mod proxies_subscribe;
mod proxies_support;
mod replies;
mod secret_files;
mod smoke;
mod telemetry;
mod tls;
mod trace_context;
