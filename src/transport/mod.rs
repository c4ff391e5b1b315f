//! The transports Centrifugo can call this service over. Each one authenticates a call,
//! decodes its wire shape into the neutral request (`crate::proxy`), calls the use case
//! (`crate::service`) and encodes the neutral answer; nothing below them knows they exist.

pub mod grpc;
pub mod http;
pub mod secret;
pub mod secret_files;
