//! Request authentication: proves a call came from Centrifugo (or the signer in front of it)
//! before anything in it is parsed.
//!
//! Two ways, chosen by `CENTRIFUGO_PROXY_AUTH`: an HMAC-SHA256 of the raw body in
//! `X-Centrifugo-Proxy-Signature` (hex), or the shared secret itself in
//! `X-Centrifugo-Proxy-Secret` (what stock Centrifugo can send via `http.static_headers`).
//! Both compare in constant time, and both accept the previous secret during a rotation.
//! Anything that cannot be verified (absent, empty, duplicated, non-ASCII, wrong length) is
//! a rejection: no path treats "could not verify" as "verified".

use std::fmt;

use axum::http::HeaderMap;
use hmac::Mac;

use crate::config::{Auth, ProxyAuthMode};
pub use crate::proxy::AuthFailure;
use crate::transport::secret::{check_shape, HmacSha256, SharedSecrets};

pub const SIGNATURE_HEADER: &str = "x-centrifugo-proxy-signature";
pub const SECRET_HEADER: &str = "x-centrifugo-proxy-secret";

/// The configured check. The secrets are shared with the gRPC listener and swapped by the
/// file watcher.
#[derive(Clone)]
pub struct ProxyAuth {
    mode: ProxyAuthMode,
    secrets: SharedSecrets,
}

impl fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode.as_str())
    }
}

impl ProxyAuth {
    /// The check with the configured secrets. Clones share them: a swap through
    /// `secrets()` reaches every clone.
    pub fn new(config: &Auth) -> Self {
        Self {
            mode: config.mode,
            secrets: SharedSecrets::new(&config.secrets),
        }
    }

    pub fn mode(&self) -> ProxyAuthMode {
        self.mode
    }

    /// The secrets this check uses, to share with the other transport and the watcher.
    pub fn secrets(&self) -> &SharedSecrets {
        &self.secrets
    }

    /// Checks that can run before the body is read: in static mode the whole check, in HMAC
    /// mode the header's presence and shape (so junk is refused before reading a body).
    /// Returns the decoded signature for `verify_body`.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<Option<[u8; 32]>, AuthFailure> {
        match self.mode {
            ProxyAuthMode::None => Ok(None),
            ProxyAuthMode::StaticHeader => self
                .secrets
                .current()
                .check_secret(headers.get_all(SECRET_HEADER).iter().map(|v| v.as_bytes()))
                .map(|()| None),
            ProxyAuthMode::Hmac => {
                let value = single_header(headers, SIGNATURE_HEADER)?;
                let mut signature = [0u8; 32];
                hex::decode_to_slice(value, &mut signature).map_err(|_| AuthFailure::Malformed)?;
                Ok(Some(signature))
            }
        }
    }

    /// The HMAC check over the raw body bytes (no-op in the other modes).
    pub fn verify_body(
        &self,
        signature: Option<&[u8; 32]>,
        body: &[u8],
    ) -> Result<(), AuthFailure> {
        if self.mode != ProxyAuthMode::Hmac {
            return Ok(());
        }
        let signature = signature.ok_or(AuthFailure::Missing)?;
        self.secrets.current().verify_hmac(signature, body)
    }

    /// The gRPC check: the secret itself in metadata, in every mode but `none` (nobody signs
    /// a protobuf body).
    pub fn check_metadata<'v>(
        &self,
        values: impl Iterator<Item = &'v [u8]>,
    ) -> Result<(), AuthFailure> {
        match self.mode {
            ProxyAuthMode::None => Ok(()),
            ProxyAuthMode::Hmac | ProxyAuthMode::StaticHeader => {
                self.secrets.current().check_secret(values)
            }
        }
    }
}

/// Exactly one non-empty, visible-ASCII value.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a [u8], AuthFailure> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(AuthFailure::Missing)?;
    if values.next().is_some() {
        return Err(AuthFailure::Malformed);
    }
    let bytes = value.as_bytes();
    check_shape(bytes)?;
    Ok(bytes)
}

/// Hex HMAC-SHA256 of `body`: what a signer in front of the service computes. Used by the
/// demo, the benchmark and the tests.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const CURRENT: &str = "current-secret-0123";
    const OLD: &str = "old-secret-0123456";

    fn auth(mode: &str, previous: Option<&str>) -> ProxyAuth {
        let mut pairs = vec![
            ("CENTRIFUGO_PROXY_AUTH", mode.to_owned()),
            ("CENTRIFUGO_PROXY_SECRET", CURRENT.to_owned()),
        ];
        if let Some(p) = previous {
            pairs.push(("CENTRIFUGO_PROXY_SECRET_PREVIOUS", p.to_owned()));
        }
        ProxyAuth::new(
            &crate::config::Config::from_pairs(pairs)
                .expect("config")
                .auth,
        )
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    fn hmac_check(a: &ProxyAuth, values: &[&str], body: &[u8]) -> Result<(), AuthFailure> {
        let sig = a.check_headers(&headers(SIGNATURE_HEADER, values))?;
        a.verify_body(sig.as_ref(), body)
    }

    #[test]
    fn hmac_accepts_either_case_and_the_previous_secret() {
        let a = auth("hmac", Some(OLD));
        let body = br#"{"client":"c"}"#;
        let sig = sign(CURRENT.as_bytes(), body);
        assert_eq!(hmac_check(&a, &[&sig], body), Ok(()));
        assert_eq!(hmac_check(&a, &[&sig.to_uppercase()], body), Ok(()));
        assert_eq!(hmac_check(&a, &[&sign(OLD.as_bytes(), body)], body), Ok(()));
        assert_eq!(
            hmac_check(&a, &[&sign(b"other", body)], body),
            Err(AuthFailure::Mismatch)
        );
        // Re-serialised JSON is a different body.
        assert_eq!(
            hmac_check(&a, &[&sig], br#"{"client": "c"}"#),
            Err(AuthFailure::Mismatch)
        );
    }

    #[test]
    fn hmac_rejects_missing_and_malformed_headers() {
        let a = auth("hmac", None);
        let body = b"{}";
        let sig = sign(CURRENT.as_bytes(), body);
        assert_eq!(hmac_check(&a, &[], body), Err(AuthFailure::Missing));
        assert_eq!(hmac_check(&a, &[""], body), Err(AuthFailure::Malformed));
        assert_eq!(hmac_check(&a, &["zz"], body), Err(AuthFailure::Malformed));
        assert_eq!(
            hmac_check(&a, &[&sig[..62]], body),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            hmac_check(&a, &[&sig, &sig], body),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            hmac_check(&a, &[&format!("sha256={sig}")], body),
            Err(AuthFailure::Malformed)
        );
    }

    #[test]
    fn static_header_compares_the_secret() {
        let a = auth("static_header", Some(OLD));
        let check = |values: &[&str]| a.check_headers(&headers(SECRET_HEADER, values)).map(|_| ());
        assert_eq!(check(&[CURRENT]), Ok(()));
        assert_eq!(check(&[OLD]), Ok(()));
        assert_eq!(check(&[&CURRENT[1..]]), Err(AuthFailure::Mismatch));
        assert_eq!(check(&[]), Err(AuthFailure::Missing));
        assert_eq!(check(&[CURRENT, CURRENT]), Err(AuthFailure::Malformed));
        // A signature header does not satisfy static mode.
        assert_eq!(
            a.check_headers(&headers(SIGNATURE_HEADER, &[CURRENT]))
                .map(|_| ()),
            Err(AuthFailure::Missing)
        );
    }

    #[test]
    fn none_accepts_anything_and_debug_hides_keys() {
        let a = auth("none", None);
        assert_eq!(a.check_headers(&HeaderMap::new()), Ok(None));
        assert_eq!(format!("{:?}", auth("hmac", None)), "hmac");
    }
}
