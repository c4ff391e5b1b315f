//! Client payloads as both transports deliver them: `data` as sent, or standard base64 in
//! `b64data` when the proxy has `binary_encoding: true` (`../shared/centrifugo-proxy.md` 4.3).

use std::borrow::Cow;

use base64::Engine as _;

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("b64data is not valid standard base64")]
    BadBase64,
}

/// The client's payload bytes, `None` without one, or an undecodable `b64data`.
pub type Payload<'a> = Result<Option<Cow<'a, [u8]>>, PayloadError>;

/// A non-empty `b64data` wins: Centrifugo sets it only with binary encoding.
pub fn payload<'a>(data: Option<&'a [u8]>, b64data: Option<&str>) -> Payload<'a> {
    if let Some(b64) = b64data.filter(|s| !s.is_empty()) {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(|bytes| Some(Cow::Owned(bytes)))
            .map_err(|_| PayloadError::BadBase64);
    }
    Ok(data.filter(|d| !d.is_empty()).map(Cow::Borrowed))
}

/// What an rpc backend receives as `data`: JSON as the client sent it, or a base64 string
/// for binary data (which JSON cannot carry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcData<'a> {
    Absent,
    Json(Cow<'a, str>),
    Base64(Cow<'a, str>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_prefers_b64data_and_rejects_bad_base64() {
        let p = payload(Some(br#"{"x":1}"#), Some("eyJ0b2tlbiI6InQifQ=="));
        assert_eq!(p.expect("ok").as_deref(), Some(&br#"{"token":"t"}"#[..]));
        assert_eq!(payload(None, Some("%%%")), Err(PayloadError::BadBase64));
        let p = payload(Some(br#"{"a":1}"#), Some(""));
        assert_eq!(p.expect("ok").as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(payload(None, None).expect("ok"), None);
        assert_eq!(payload(Some(b""), None).expect("ok"), None);
    }

    mod properties {
        use base64::Engine as _;
        use proptest::prelude::*;

        use super::*;

        const STANDARD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn b64data_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                let data = br#"{"from":"data"}"#;
                let decoded = payload(Some(data), Some(&STANDARD.encode(&bytes))).expect("valid");
                // An empty b64data is "not binary": the JSON data stands.
                let expected: &[u8] = if bytes.is_empty() { data } else { &bytes };
                prop_assert_eq!(decoded.as_deref(), Some(expected));
            }

            #[test]
            fn only_canonical_base64_decodes(
                text in prop_oneof![any::<String>(), "[A-Za-z0-9+/]{0,16}={0,2}"],
            ) {
                match payload(None, Some(&text)) {
                    Ok(Some(bytes)) => prop_assert_eq!(STANDARD.encode(&bytes), text),
                    Ok(None) => prop_assert!(text.is_empty()),
                    Err(PayloadError::BadBase64) => prop_assert!(STANDARD.decode(&text).is_err()),
                }
            }
        }
    }
}
