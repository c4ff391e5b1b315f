//! Oracles the fuzz targets share: an independent reading of a proxy body with
//! `serde_json::Value`, to cross-check what the service's own parsers made of it.

use base64::Engine as _;
use serde_json::Value;

/// The client payload of a proxy body read as a `Value` tree (`b64data` decoded when
/// non-empty, else `data`), or `None` when `Value` cannot read it: numbers out of `f64`
/// range, nesting past serde_json's recursion limit, bad base64. `Some(None)`: no payload.
pub fn payload_value(body: &[u8]) -> Option<Option<Value>> {
    let request: Value = serde_json::from_slice(body).ok()?;
    match request.get("b64data") {
        Some(Value::String(b64)) if !b64.is_empty() => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            serde_json::from_slice(&bytes).ok().map(Some)
        }
        _ => Some(request.get("data").cloned()),
    }
}

/// The JSON answer the service wrote: exactly one of `result`, `error` or `disconnect`.
/// Returns that key and the answer's `code` (0 for a result).
///
/// # Panics
/// When the answer is not such a JSON object: that is the bug the targets look for.
pub fn answer(reply: &[u8]) -> (String, u64) {
    let value: Value = serde_json::from_slice(reply).expect("the answer is JSON");
    let object = value.as_object().expect("the answer is an object");
    assert_eq!(object.len(), 1, "one of result, error, disconnect: {value}");
    let (key, inner) = object.iter().next().expect("one key");
    let code = inner
        .get("code")
        .and_then(Value::as_u64)
        .unwrap_or_default();
    match key.as_str() {
        "result" => assert!(inner.is_object()),
        "error" => assert!(inner["message"].is_string() && code > 0),
        "disconnect" => assert!(inner["reason"].is_string() && (4000..=4999).contains(&code)),
        other => panic!("unexpected answer key {other}"),
    }
    (key.clone(), code)
}
