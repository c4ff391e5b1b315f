//! Publish bodies (meta, channel, `data` or `b64data`) decided under the built-in policy:
//! never a panic, the answer is always well-formed JSON with a known code, and an accepted
//! publish carries a JSON object payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oracle::{answer, payload_value};
use realtime_service::fuzzing::publish;

fuzz_target!(|body: &[u8]| {
    let Some(reply) = publish(body) else {
        return;
    };
    match answer(&reply) {
        (key, _) if key == "result" => {
            // Every publishable built-in namespace requires an object payload.
            if let Some(payload) = payload_value(body) {
                assert!(
                    payload.as_ref().is_some_and(|p| p.is_object()),
                    "accepted a payload that is not an object: {payload:?}"
                );
            }
        }
        (key, code) if key == "error" => {
            assert!([400, 403, 413, 429].contains(&code), "error code {code}");
        }
        (_, code) => assert_eq!(code, 4403, "disconnect code"),
    }
});
