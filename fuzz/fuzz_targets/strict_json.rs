//! The strict JSON check's fast scan: whatever it calls clean, the exact walk (and
//! serde_json) accepts, so the fast path never lets through what the walk would refuse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use realtime_service::fuzzing::strict_json;

fuzz_target!(|json: &[u8]| {
    let (clean, walked) = strict_json(json);
    if clean {
        assert!(walked, "the scan passed what the walk refuses");
        assert!(serde_json::from_slice::<serde_json::Value>(json).is_ok());
    }
});
