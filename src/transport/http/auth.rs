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
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{Auth, ProxyAuthMode};
pub use crate::proxy::AuthFailure;
use crate::transport::secret::{check_shape, SecretDigests};

pub const SIGNATURE_HEADER: &str = "x-centrifugo-proxy-signature";
pub const SECRET_HEADER: &str = "x-centrifugo-proxy-secret";

type HmacSha256 = Hmac<Sha256>;

/// The configured check, with keys prepared once.
#[derive(Clone)]
pub enum ProxyAuth {
    /// Keyed MACs, current first: cloning a keyed MAC skips re-hashing the key per request.
    Hmac(Vec<HmacSha256>),
    /// The secret itself in a header.
    StaticHeader(SecretDigests),
    None,
}

impl fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode().as_str())
    }
}

impl ProxyAuth {
    pub fn new(config: &Auth) -> Self {
        let secrets = &config.secrets;
        match config.mode {
            ProxyAuthMode::Hmac => Self::Hmac(
                secrets
                    .iter()
                    .filter_map(|s| HmacSha256::new_from_slice(s.expose()).ok())
                    .collect(),
            ),
            ProxyAuthMode::StaticHeader => Self::StaticHeader(SecretDigests::new(secrets)),
            ProxyAuthMode::None => Self::None,
        }
    }

    pub fn mode(&self) -> ProxyAuthMode {
        match self {
            Self::Hmac(_) => ProxyAuthMode::Hmac,
            Self::StaticHeader(_) => ProxyAuthMode::StaticHeader,
            Self::None => ProxyAuthMode::None,
        }
    }

    /// Checks that can run before the body is read: in static mode the whole check, in HMAC
    /// mode the header's presence and shape (so junk is refused before reading a body).
    /// Returns the decoded signature for `verify_body`.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<Option<[u8; 32]>, AuthFailure> {
        match self {
            Self::None => Ok(None),
            Self::StaticHeader(accepted) => accepted
                .check(headers.get_all(SECRET_HEADER).iter().map(|v| v.as_bytes()))
                .map(|()| None),
            Self::Hmac(_) => {
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
        let Self::Hmac(keys) = self else {
            return Ok(());
        };
        let signature = signature.ok_or(AuthFailure::Missing)?;
        let mut matched = false;
        for key in keys {
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

    fn auth(mode: &str, previous: Option<&str>) -> ProxyAuth {
        let mut pairs = vec![
            ("CENTRIFUGO_PROXY_AUTH", mode.to_owned()),
            ("CENTRIFUGO_PROXY_SECRET", "current".to_owned()),
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
        let a = auth("hmac", Some("old"));
        let body = br#"{"client":"c"}"#;
        let sig = sign(b"current", body);
        assert_eq!(hmac_check(&a, &[&sig], body), Ok(()));
        assert_eq!(hmac_check(&a, &[&sig.to_uppercase()], body), Ok(()));
        assert_eq!(hmac_check(&a, &[&sign(b"old", body)], body), Ok(()));
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
        let sig = sign(b"current", body);
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
        let a = auth("static_header", Some("old"));
        let check = |values: &[&str]| a.check_headers(&headers(SECRET_HEADER, values)).map(|_| ());
        assert_eq!(check(&["current"]), Ok(()));
        assert_eq!(check(&["old"]), Ok(()));
        assert_eq!(check(&["curren"]), Err(AuthFailure::Mismatch));
        assert_eq!(check(&[]), Err(AuthFailure::Missing));
        assert_eq!(check(&["current", "current"]), Err(AuthFailure::Malformed));
        // A signature header does not satisfy static mode.
        assert_eq!(
            a.check_headers(&headers(SIGNATURE_HEADER, &["current"]))
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
