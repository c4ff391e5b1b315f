//! realtime-service: a Centrifugo v6 proxy backend.
//!
//! # Layout
//! The request path reads top to bottom:
//! - `http`: the edge. Routing, request authentication (`http::auth`, `http::extract`),
//!   body limit, status mode, metrics and spans (`http::edge`), edge errors (`http::error`),
//!   and thin handlers (`http::connect`, `http::ops`).
//! - `centrifugo`: the proxy wire format and codes.
//! - `connect`: the connect decision table, pure functions.
//! - `identity`: the identity-service gRPC client, answer classification, outage detector
//!   and background probe.
//! - `fallback`: the single-use static ticket pool.
//! - `meta`: the identity context carried in connection meta.
//! - `policy`: the channel policy (subscribe/publish rules per namespace), pure evaluation.
//! - `settings`, `telemetry`, `metrics`, `startup`, `state`, `clock`: set up once at startup.
//! - `fake_identity`, `demo`: the scriptable identity-service used by `demo`, the benchmark
//!   and the tests.
#![forbid(unsafe_code)]

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
pub mod settings;
pub mod startup;
pub mod state;
pub mod telemetry;
