//! `X-Centrifugo-Proxy-Signature` in `hmac` mode. Input: the header value, a newline, the
//! body. A value is accepted only when it is the body's MAC (hex, either case); the right
//! MAC is always accepted; the right MAC with one byte replaced or bytes appended (from the
//! input) is accepted exactly when it still spells the same MAC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use realtime_service::fuzzing::{signature_header, SIGNATURE_SECRET};
use realtime_service::transport::http::auth::sign;

fuzz_target!(|input: &[u8]| {
    let (value, body) = match input.iter().position(|b| *b == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &b""[..]),
    };
    let mac = sign(SIGNATURE_SECRET.as_bytes(), body);
    let right = |v: &[u8]| v.eq_ignore_ascii_case(mac.as_bytes());

    if signature_header(value, body).is_ok() {
        assert!(right(value), "accepted a wrong MAC");
    }
    assert_eq!(signature_header(mac.as_bytes(), body), Ok(()));
    assert_eq!(
        signature_header(mac.to_uppercase().as_bytes(), body),
        Ok(())
    );

    if let [position, byte, rest @ ..] = value {
        let mut forged = mac.clone().into_bytes();
        let at = usize::from(*position) % forged.len();
        forged[at] = *byte;
        forged.extend_from_slice(rest);
        assert_eq!(signature_header(&forged, body).is_ok(), right(&forged));
    }
});
