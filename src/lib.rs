//! realtime-service: a Centrifugo v6 proxy backend.
//!
//! # Layout
//! Requests flow down: transports -> use cases -> pure decisions.
//! - `transport::http`: the HTTP edge (routing, request authentication, body limit, status
//!   mode, metrics and spans, wire format) and the operational endpoints.
//! - `service`: the use cases (connect, refresh, subscribe, sub_refresh, publish, rpc): the
//!   only place that orchestrates identity-service, the outage detector, the fallback pool,
//!   the rate limiter, rpc backends and the clock. Both transports call it.
//! - `decide`: the decisions, pure functions over plain types (no I/O, no clock reads).
//! - `proxy`: the neutral model both transports speak: requests, typed answers, codes,
//!   outcome labels.
//! - Below the use cases: `identity` (client, answer classification, outage detector, probe),
//!   `fallback` (the single-use ticket pool), `policy` (channel rules), `ratelimit`,
//!   `rpc` (backend routing and calls), `meta` (the identity context carried in meta).
//! - Set up once at startup: `config` (environment -> ready sections), `telemetry`,
//!   `metrics`, `clock`, `tls` (the HTTP clients' TLS), `otlp` (the span exporter), and `app` (build, run, drain).
//! - `demo`: the `demo` subcommand, with its embedded identity-service.
//! - `fuzzing` (hidden): thin entry points into the parsers for the fuzz targets in `fuzz/`.
#![forbid(unsafe_code)]

pub mod app;
pub mod clock;
pub mod config;
pub mod config_error;
pub(crate) mod decide;
pub mod demo;
pub mod fallback;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub(crate) mod log_limit;
pub mod meta;
pub(crate) mod metrics;
pub(crate) mod otlp;
pub mod policy;
pub(crate) mod proxy;
pub(crate) mod ratelimit;
pub(crate) mod redis_client;
pub(crate) mod rpc;
pub(crate) mod service;
pub mod telemetry;
pub mod tls;
pub mod transport;
