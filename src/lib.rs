//! realtime-service: a Centrifugo v6 proxy backend.
//!
//! # Layout
//! The request path reads top to bottom:
//! - `http`: the edge. Routing, request authentication (`http::auth`, `http::extract`),
//!   body limit, status mode, metrics and spans (`http::edge`), edge errors (`http::error`),
//!   and thin handlers (`http::connect`, `http::proxies`, `http::ops`).
//! - `centrifugo`: the proxy wire format and codes.
//! - `connect`: the connect decision table, pure functions.
//! - `authorize`: decisions for refresh, subscribe, sub_refresh, publish and rpc, pure
//!   functions over the identity context (from meta) and the channel `policy`.
//! - `ratelimit`: the per-user publish token bucket. `rpc`: routing rpc methods to HTTP backends.
//! - `identity`: the identity-service gRPC client, answer classification, outage detector
//!   and background probe.
//! - `fallback`: the single-use ticket pool: ticket set, consumed ledger, live reload.
//! - `redis_client`: the one Redis client shared by the fallback ledger and the limiter.
//! - `meta`: the identity context carried in connection meta.
//! - `policy`: the channel policy (subscribe/publish rules per namespace), pure evaluation.
//! - `settings`, `telemetry`, `metrics`, `startup`, `state`, `clock`: set up once at startup.
//! - `fake_identity`, `demo`: the scriptable identity-service used by `demo`, the benchmark
//!   and the tests.
#![forbid(unsafe_code)]

pub mod authorize;
pub mod centrifugo;
pub mod clock;
pub mod connect;
pub mod demo;
pub mod fake_identity;
pub mod fallback;
pub mod http;
pub mod identity;
pub mod meta;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod redis_client;
pub mod rpc;
pub mod settings;
pub mod startup;
pub mod state;
pub mod telemetry;
