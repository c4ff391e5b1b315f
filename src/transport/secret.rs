//! The accepted proxy secrets, shared by both transports, and the constant-time checks run
//! against them: the HMAC of an HTTP body, and the secret itself as Centrifugo presents it (an
//! HTTP header via `http.static_headers`, or gRPC metadata via `grpc.static_metadata`).
//!
//! The set is swapped whole when the secret files change (`secret_files`): a request loads
//! one set and checks against it, so it sees the old secrets or the new ones, never a mix,
//! and the HTTP edge and the gRPC listener switch together.

use std::sync::{Arc, PoisonError, RwLock};

use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::proxy::AuthFailure;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// One set of accepted secrets, current first, prepared for every check.
pub struct Keys {
    /// Keyed MACs: cloning a keyed MAC skips re-hashing the key per request.
    hmac: Vec<HmacSha256>,
    /// SHA-256 of each secret: comparing digests hides the secret's length too.
    digests: Vec<[u8; 32]>,
}

impl Keys {
    fn new(secrets: &[Secret]) -> Self {
        Self {
            hmac: secrets
                .iter()
                // HMAC accepts keys of any length, so this never skips one.
                .filter_map(|s| HmacSha256::new_from_slice(s.expose_secret().as_bytes()).ok())
                .collect(),
            digests: secrets
                .iter()
                .map(|s| Sha256::digest(s.expose_secret().as_bytes()).into())
                .collect(),
        }
    }

    /// Checks presented secret values: exactly one, non-empty, visible ASCII, equal to one of
    /// the secrets. Every candidate is evaluated, so timing does not tell which matched.
    pub fn check_secret<'v>(
        &self,
        mut values: impl Iterator<Item = &'v [u8]>,
    ) -> Result<(), AuthFailure> {
        let value = values.next().ok_or(AuthFailure::Missing)?;
        if values.next().is_some() {
            return Err(AuthFailure::Malformed);
        }
        check_shape(value)?;
        let digest: [u8; 32] = Sha256::digest(value).into();
        let matched = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, a| acc | a.ct_eq(&digest));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(AuthFailure::Mismatch)
        }
    }

    /// Checks a decoded HMAC-SHA256 signature of `body` against every key.
    pub fn verify_hmac(&self, signature: &[u8; 32], body: &[u8]) -> Result<(), AuthFailure> {
        let mut matched = false;
        for key in &self.hmac {
            let mut mac = key.clone();
            mac.update(body);
            // `verify_slice` compares in constant time.
            matched |= mac.verify_slice(signature).is_ok();
        }
        if matched {
            Ok(())
        } else {
            Err(AuthFailure::Mismatch)
        }
    }
}

/// The current set, shared by the HTTP edge, the gRPC listener and the file watcher.
#[derive(Clone)]
pub struct SharedSecrets(Arc<RwLock<Arc<Keys>>>);

impl SharedSecrets {
    pub fn new(secrets: &[Secret]) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(Keys::new(secrets)))))
    }

    /// The set to check one request against.
    pub fn current(&self) -> Arc<Keys> {
        // The lock guards a pointer swap only; a panic cannot leave it half-written.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the whole set at once.
    pub fn replace(&self, secrets: &[Secret]) {
        let keys = Arc::new(Keys::new(secrets));
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = keys;
    }
}

/// Non-empty and visible ASCII: what a header or metadata value carrying a secret looks like.
pub fn check_shape(value: &[u8]) -> Result<(), AuthFailure> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_graphic) {
        return Err(AuthFailure::Malformed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_set_applies_to_the_next_check_only() {
        let shared = SharedSecrets::new(&[Secret::from("first-secret-0123")]);
        let before = shared.current();
        shared.replace(&[Secret::from("second-secret-0123")]);
        let check = |keys: &Keys, v: &str| keys.check_secret(std::iter::once(v.as_bytes()));
        // A request that loaded the old set finishes with it.
        assert_eq!(check(&before, "first-secret-0123"), Ok(()));
        assert_eq!(
            check(&shared.current(), "first-secret-0123"),
            Err(AuthFailure::Mismatch)
        );
        assert_eq!(check(&shared.current(), "second-secret-0123"), Ok(()));
    }
}
