//! Centrifugo's HTTP proxy wire format: the JSON request fields this service reads, turned
//! into the neutral requests, and the neutral answers written as the JSON Centrifugo expects
//! (`result` / `error` / `disconnect`).
//!
//! `data`, `info` and `meta` are raw JSON on the wire (not base64, not protobuf-JSON); see
//! `../shared/centrifugo-proxy.md` sections 1 and 4.3. Answers are written directly into one
//! buffer: their shapes are few and fixed, and `info` and `meta` are already JSON text.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::proxy::{
    self, CallRequest, ConnectRequest, ConnectResult, Extension, Payload, PublishResult, Reply,
    RpcData, RpcResult, SubscribeResult,
};

/// A proxy request body, for every proxy type: the fields a type does not have are simply
/// absent. One type means one parser and one place that knows the wire names. Fields borrow
/// from the body (a string is copied only when it has escapes).
#[derive(Debug, Default, Deserialize)]
pub struct ProxyRequest<'a> {
    /// Centrifugo's connection id.
    #[serde(default, borrow)]
    pub client: Cow<'a, str>,
    #[serde(default, borrow)]
    pub transport: Cow<'a, str>,
    #[serde(default, borrow)]
    pub protocol: Cow<'a, str>,
    /// `binary` when the proxy has `binary_encoding: true` (payload in `b64data`).
    #[serde(default, borrow)]
    pub encoding: Cow<'a, str>,
    /// The connection's user; always present (maybe `""`) except on connect.
    #[serde(default, borrow)]
    pub user: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub channel: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub method: Option<Cow<'a, str>>,
    /// Connection meta, as connect returned it (only with `include_connection_meta`).
    #[serde(default, borrow)]
    pub meta: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub b64data: Option<Cow<'a, str>>,
}

impl ProxyRequest<'_> {
    /// The client's payload bytes as sent (decoded from `b64data` with binary encoding).
    pub fn payload(&self) -> Payload<'_> {
        proxy::payload(
            self.data.map(|raw| raw.get().as_bytes()),
            self.b64data.as_deref(),
        )
    }

    pub fn connect(&self) -> ConnectRequest<'_> {
        ConnectRequest {
            client: &self.client,
            transport: &self.transport,
            data: self.payload(),
        }
    }

    pub fn call(&self) -> CallRequest<'_> {
        CallRequest {
            client: &self.client,
            user: self.user.as_deref().unwrap_or_default(),
            meta: self.meta.map(|raw| raw.get().as_bytes()),
            channel: self.channel.as_deref().unwrap_or_default(),
            method: self.method.as_deref().unwrap_or_default(),
            data: self.payload(),
            // JSON data wins here: it is what a JSON client sent; b64data is binary data.
            rpc_data: match (self.data, self.b64data.as_deref()) {
                (Some(raw), _) => RpcData::Json(raw.get().into()),
                (None, Some(b64)) if !b64.is_empty() => RpcData::Base64(b64.into()),
                _ => RpcData::Absent,
            },
        }
    }
}

/// A result that can be written as the JSON object under `"result"`.
pub trait WireResult {
    fn write_json(&self, out: &mut Vec<u8>);
}

/// The JSON body for a reply.
pub fn encode<R: WireResult>(reply: &Reply<R>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    match reply {
        Reply::Result(result) => {
            out.extend_from_slice(b"{\"result\":");
            result.write_json(&mut out);
        }
        Reply::Error(e) => {
            out.extend_from_slice(b"{\"error\":{\"code\":");
            number(&mut out, e.code);
            out.extend_from_slice(b",\"message\":");
            string(&mut out, &e.message);
            if e.temporary {
                out.extend_from_slice(b",\"temporary\":true");
            }
            out.push(b'}');
        }
        Reply::Disconnect(d) => {
            out.extend_from_slice(b"{\"disconnect\":{\"code\":");
            number(&mut out, d.code);
            out.extend_from_slice(b",\"reason\":");
            string(&mut out, &d.reason);
            out.push(b'}');
        }
    }
    out.push(b'}');
    out
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `,"expire_at":N` or `"expire_at":N` as the first field.
fn expire_at(out: &mut Vec<u8>, at: Option<i64>, first: bool) {
    if let Some(at) = at {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"\"expire_at\":");
        number(out, at);
    }
}

impl WireResult for ConnectResult {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"user\":");
        string(out, &self.user);
        expire_at(out, self.expire_at, false);
        if let Some(info) = &self.info {
            out.extend_from_slice(b",\"info\":");
            out.extend_from_slice(info);
        }
        out.extend_from_slice(b",\"meta\":");
        out.extend_from_slice(&self.meta);
        out.push(b'}');
    }
}

impl WireResult for Extension {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        match self {
            Self::Until(at) => expire_at(out, *at, true),
            Self::Expired => out.extend_from_slice(b"\"expired\":true"),
        }
        out.push(b'}');
    }
}

impl WireResult for SubscribeResult {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        expire_at(out, self.expire_at, true);
        out.push(b'}');
    }
}

impl WireResult for PublishResult {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{}");
    }
}

impl WireResult for RpcResult {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"data\":");
        out.extend_from_slice(&self.data);
        out.push(b'}');
    }
}

/// Edge failures never carry a result.
impl WireResult for () {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<R: WireResult>(reply: &Reply<R>) -> String {
        String::from_utf8(encode(reply)).expect("utf-8")
    }

    #[test]
    fn replies_serialise_to_centrifugo_shapes() {
        let r: Reply<()> = Reply::disconnect(4401, "invalid ticket");
        assert_eq!(
            text(&r),
            r#"{"disconnect":{"code":4401,"reason":"invalid ticket"}}"#
        );
        let r: Reply<()> = Reply::bad_request();
        assert_eq!(
            text(&r),
            r#"{"error":{"code":107,"message":"bad request"}}"#
        );
        let r: Reply<()> = Reply::temporary_error(429, "too many requests");
        assert_eq!(
            text(&r),
            r#"{"error":{"code":429,"message":"too many requests","temporary":true}}"#
        );
        let r: Reply<()> = Reply::error(400, "quote \" and \u{1}");
        assert_eq!(
            text(&r),
            r#"{"error":{"code":400,"message":"quote \" and \u0001"}}"#
        );
    }

    #[test]
    fn results_have_centrifugo_field_names() {
        let r = Reply::Result(ConnectResult {
            user: "u".into(),
            expire_at: Some(5),
            info: Some(br#"{"degraded":true}"#.to_vec()),
            meta: br#"{"user":"u"}"#.to_vec(),
        });
        assert_eq!(
            text(&r),
            r#"{"result":{"user":"u","expire_at":5,"info":{"degraded":true},"meta":{"user":"u"}}}"#
        );
        assert_eq!(
            text(&Reply::Result(Extension::Until(None))),
            r#"{"result":{}}"#
        );
        assert_eq!(
            text(&Reply::Result(Extension::Expired)),
            r#"{"result":{"expired":true}}"#
        );
        assert_eq!(
            text(&Reply::Result(SubscribeResult { expire_at: Some(9) })),
            r#"{"result":{"expire_at":9}}"#
        );
        assert_eq!(
            text(&Reply::Result(RpcResult {
                data: b"[1]".to_vec()
            })),
            r#"{"result":{"data":[1]}}"#
        );
    }

    #[test]
    fn rpc_data_prefers_json_and_payload_prefers_b64data() {
        fn parse(s: &str) -> ProxyRequest<'_> {
            serde_json::from_str(s).expect("json")
        }
        let p = parse(r#"{"b64data":"eyJ0b2tlbiI6InQifQ==","data":{"x":1}}"#);
        assert_eq!(
            p.payload().expect("ok").as_deref(),
            Some(&br#"{"token":"t"}"#[..])
        );
        assert_eq!(p.call().rpc_data, RpcData::Json(r#"{"x":1}"#.into()));
        let p = parse(r#"{"b64data":"AAE="}"#);
        assert_eq!(p.call().rpc_data, RpcData::Base64("AAE=".into()));
        assert_eq!(parse("{}").call().rpc_data, RpcData::Absent);
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::Value;

        use super::*;
        use crate::proxy::{DisconnectBody, ErrorBody};

        fn parsed<R: WireResult>(reply: &Reply<R>) -> Value {
            serde_json::from_slice(&encode(reply)).expect("encode writes JSON")
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn errors_read_back(code: u32, message: String, temporary: bool) {
                let reply: Reply<()> = Reply::Error(ErrorBody {
                    code,
                    message: message.clone().into(),
                    temporary,
                });
                let value = parsed(&reply);
                let error = &value["error"];
                prop_assert_eq!(value.as_object().map(|o| o.len()), Some(1));
                prop_assert_eq!(error["code"].as_u64(), Some(u64::from(code)));
                prop_assert_eq!(error["message"].as_str(), Some(message.as_str()));
                prop_assert_eq!(error.get("temporary").and_then(Value::as_bool), temporary.then_some(true));
            }

            #[test]
            fn disconnects_read_back(code: u32, reason: String) {
                let reply: Reply<()> = Reply::Disconnect(DisconnectBody {
                    code,
                    reason: reason.clone().into(),
                });
                let value = parsed(&reply);
                prop_assert_eq!(value.as_object().map(|o| o.len()), Some(1));
                prop_assert_eq!(value["disconnect"]["code"].as_u64(), Some(u64::from(code)));
                prop_assert_eq!(value["disconnect"]["reason"].as_str(), Some(reason.as_str()));
            }

            #[test]
            fn connect_results_read_back(user: String, expire_at: Option<i64>) {
                let value = parsed(&Reply::Result(ConnectResult {
                    user: user.clone(),
                    expire_at,
                    info: None,
                    meta: br#"{"user":"u"}"#.to_vec(),
                }));
                let result = &value["result"];
                prop_assert_eq!(result["user"].as_str(), Some(user.as_str()));
                prop_assert_eq!(result.get("expire_at").and_then(Value::as_i64), expire_at);
            }
        }
    }
}
