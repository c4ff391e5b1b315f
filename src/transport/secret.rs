//! The shared-secret check both transports run: the secret Centrifugo presents (an HTTP
//! header via `http.static_headers`, or gRPC metadata via `grpc.static_metadata`) against
//! the configured ones, in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::proxy::AuthFailure;

/// SHA-256 of each accepted secret: comparing digests hides the secret's length too.
#[derive(Clone)]
pub struct SecretDigests(Vec<[u8; 32]>);

impl SecretDigests {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        Self(
            secrets
                .into_iter()
                .map(|s| Sha256::digest(s.expose()).into())
                .collect(),
        )
    }

    /// Checks the presented values: exactly one, non-empty, visible ASCII, equal to one of
    /// the secrets. Every candidate is evaluated, so timing does not tell which matched.
    pub fn check<'v>(&self, mut values: impl Iterator<Item = &'v [u8]>) -> Result<(), AuthFailure> {
        let value = values.next().ok_or(AuthFailure::Missing)?;
        if values.next().is_some() {
            return Err(AuthFailure::Malformed);
        }
        check_shape(value)?;
        let digest: [u8; 32] = Sha256::digest(value).into();
        let matched = self
            .0
            .iter()
            .fold(subtle::Choice::from(0), |acc, a| acc | a.ct_eq(&digest));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(AuthFailure::Mismatch)
        }
    }
}

/// Non-empty and visible ASCII: what a header or metadata value carrying a secret looks like.
pub fn check_shape(value: &[u8]) -> Result<(), AuthFailure> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_graphic) {
        return Err(AuthFailure::Malformed);
    }
    Ok(())
}
