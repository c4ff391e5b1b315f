//! realtime-service: a Centrifugo v6 proxy backend.
pub mod meta;
pub mod policy;
