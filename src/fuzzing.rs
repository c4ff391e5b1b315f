//! Entry points for the fuzz targets in `fuzz/` (see `docs/architecture.md`, "Tests"): each
//! runs one of the service's parsers on untrusted input the way the service does, and
//! returns what it made of it, so a target can check invariants. Every function is a thin
//! call into the real code, so the fuzzers exercise what production runs. Not an API: hidden
//! from the docs and free to change with the parsers.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue};

use crate::config::Config;
use crate::decide::{connect, context, publish as decide_publish};
use crate::policy::{ChannelPolicy, PolicyError};
use crate::transport::http::auth::{AuthFailure, ProxyAuth, SIGNATURE_HEADER};
use crate::transport::http::parse_body;
use crate::transport::http::wire::{self, ProxyRequest};

/// The HMAC secret `signature_header` checks against; the seed corpus is signed with it.
pub const SIGNATURE_SECRET: &str = "fuzzing-proxy-secret-0123456789";

/// What the HTTP edge made of a connect body.
#[derive(Debug)]
pub enum Connect {
    /// Refused as a body (not a JSON object, or not a proxy request): 400 before the use case.
    BadBody,
    /// The ticket the use case would send to identity-service.
    Ticket(String),
    /// No usable ticket: the JSON body the service answers with.
    Answer(Vec<u8>),
}

/// A connect body as `POST /centrifugo/connect` reads it after authentication: the request
/// shape, the payload (`data`, or base64 `b64data`), then the ticket in it.
pub fn http_connect(body: &[u8]) -> Connect {
    let Ok(request) = parse_body::<ProxyRequest>(body) else {
        return Connect::BadBody;
    };
    match connect::extract_ticket(&request.connect().data) {
        Ok(ticket) => Connect::Ticket(ticket),
        Err(problem) => Connect::Answer(wire::encode(&connect::ticket_problem(problem).reply)),
    }
}

static BUILTIN_POLICY: LazyLock<ChannelPolicy> = LazyLock::new(ChannelPolicy::builtin);

/// A publish body as `POST /centrifugo/publish` decides it, under the built-in policy and
/// with the rate limiter allowing: the JSON answer, or `None` when the body is refused (400).
pub fn publish(body: &[u8]) -> Option<Vec<u8>> {
    let request = parse_body::<ProxyRequest>(body).ok()?;
    let call = request.call();
    let meta = context::identity_context(call.meta, call.user);
    let decision = decide_publish::publish(
        meta.as_ref().map_err(|problem| *problem),
        &BUILTIN_POLICY,
        call.channel,
        &call.data,
    )
    .unwrap_or_else(|| decide_publish::after_rate_limit(true));
    Some(wire::encode(&decision.reply))
}

static HMAC: LazyLock<ProxyAuth> = LazyLock::new(|| {
    let config = Config::from_pairs([
        ("CENTRIFUGO_PROXY_AUTH", "hmac"),
        ("CENTRIFUGO_PROXY_SECRET", SIGNATURE_SECRET),
    ]);
    // A fixed, valid configuration: failing here is a bug in this module, not an input.
    ProxyAuth::new(
        &config
            .expect("the fuzzing auth configuration is valid")
            .auth,
    )
});

/// One `X-Centrifugo-Proxy-Signature` value checked against `body` in `hmac` mode, keyed
/// with [`SIGNATURE_SECRET`]. A value that no HTTP parser would deliver as a header is
/// refused as malformed.
pub fn signature_header(value: &[u8], body: &[u8]) -> Result<(), AuthFailure> {
    let value = HeaderValue::from_bytes(value).map_err(|_| AuthFailure::Malformed)?;
    let mut headers = HeaderMap::new();
    headers.insert(SIGNATURE_HEADER, value);
    let signature = HMAC.check_headers(&headers)?;
    HMAC.verify_body(signature.as_ref(), body)
}

/// A channel policy file's text, read as TOML and as JSON.
pub fn policy(text: &str) -> [Result<ChannelPolicy, PolicyError>; 2] {
    [
        ChannelPolicy::from_toml_str(text, "fuzz.toml"),
        ChannelPolicy::from_json_str(text, "fuzz.json"),
    ]
}

/// A fallback pool file's contents: how many distinct tickets the pool would hold (0 when the
/// file would be refused).
pub fn pool_file(bytes: &[u8]) -> usize {
    crate::fallback::set::parse(bytes).map_or(0, |set| set.len())
}

/// The strict JSON check on any bytes: whether its fast scan called them clean, and whether
/// the exact walk accepted them.
pub fn strict_json(json: &[u8]) -> (bool, bool) {
    let (clean, walked) = crate::proxy::strict_json::scan_and_walk(json);
    (clean, walked.is_ok())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    /// Visible ASCII at both ends, anything printable inside: a ticket as a pool file holds it.
    const TICKET: &str = "[!-~]([ -~]{0,20}[!-~])?";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whitespace around a line, CRLF line ends and blank lines never change the pool.
        #[test]
        fn pool_lines_ignore_whitespace_variants(
            lines in prop::collection::vec(
                (TICKET, "[ \t]{0,3}", "[ \t\r]{0,3}", prop::bool::ANY, "(\r?\n[ \t]*){0,2}"),
                0..12,
            ),
        ) {
            let distinct: HashSet<&str> = lines.iter().map(|(t, ..)| t.as_str()).collect();
            let plain: Vec<&str> = lines.iter().map(|(t, ..)| t.as_str()).collect();
            let mut padded = String::new();
            for (ticket, before, after, crlf, blank) in &lines {
                padded += &format!("{before}{ticket}{after}{}{blank}", if *crlf { "\r\n" } else { "\n" });
            }
            prop_assert_eq!(pool_file(plain.join("\n").as_bytes()), distinct.len());
            prop_assert_eq!(pool_file(padded.as_bytes()), distinct.len());
        }
    }

    #[test]
    fn the_wrappers_reach_the_real_parsers() {
        let body = br#"{"client":"c","data":{"token":"tkt"}}"#;
        assert!(matches!(http_connect(body), Connect::Ticket(t) if t == "tkt"));
        assert!(matches!(http_connect(b"[1]"), Connect::BadBody));
        let mac = crate::transport::http::auth::sign(SIGNATURE_SECRET.as_bytes(), body);
        assert_eq!(signature_header(mac.as_bytes(), body), Ok(()));
        assert_eq!(
            signature_header(mac.as_bytes(), b"{}"),
            Err(AuthFailure::Mismatch)
        );
        assert_eq!(
            publish(b"{}").as_deref(),
            Some(&br#"{"error":{"code":403,"message":"permission denied"}}"#[..])
        );
        let [toml, json] = policy(include_str!("../config/channel-policy.toml"));
        assert!(toml.is_ok() && json.is_err());
        assert_eq!(pool_file(b"a\nb\na\n"), 2);
    }
}
