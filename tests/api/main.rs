//! One integration-test binary: the real service on a random port, a real tonic fake of
//! identity-service behind it, signed HTTP requests in front.
#![expect(clippy::unwrap_used, reason = "tests fail loudly by design")]

mod helpers;
mod smoke;
