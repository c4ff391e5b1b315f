//! One integration-test binary: the real service on a random port, a real tonic fake of
//! identity-service behind it, signed HTTP requests in front.
#![expect(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod architecture;
mod auth;
mod config;
mod connect;
mod fake_identity;
mod grpc_smoke;
mod helpers;
mod logs;
mod ops;
mod outage;
mod pool;
mod proxies_edge;
mod proxies_policy_file;
mod proxies_publish;
mod proxies_refresh;
mod proxies_rpc;
mod proxies_sub_refresh;
mod proxies_subscribe;
mod proxies_support;
mod replies;
mod smoke;
mod telemetry;
mod trace_context;
