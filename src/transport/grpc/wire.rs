//! Centrifugo's gRPC proxy messages to and from the neutral model. `data`, `info` and
//! `meta` are plain protobuf bytes here (JSON text for JSON clients, anything for protobuf
//! clients); with `binary_encoding` Centrifugo sends `b64data` instead, decoded as over HTTP.

use std::borrow::Cow;

use base64::Engine as _;

use super::proto;
use crate::proxy::{
    self, CallRequest, ConnectRequest, ConnectResult, DisconnectBody, ErrorBody, Extension,
    PublishResult, Reply, RpcData, RpcResult, SubscribeResult,
};

fn bytes(data: &[u8]) -> Option<&[u8]> {
    (!data.is_empty()).then_some(data)
}

pub fn connect(r: &proto::ConnectRequest) -> ConnectRequest<'_> {
    ConnectRequest {
        client: &r.client,
        transport: &r.transport,
        data: proxy::payload(bytes(&r.data), Some(&r.b64data)),
    }
}

/// The fields of a call after connect; absent ones stay empty.
#[derive(Default)]
pub struct Call<'a> {
    pub client: &'a str,
    pub user: &'a str,
    pub meta: &'a [u8],
    pub channel: &'a str,
    pub method: &'a str,
    pub data: &'a [u8],
    pub b64data: &'a str,
}

impl<'a> Call<'a> {
    pub fn neutral(self) -> CallRequest<'a> {
        CallRequest {
            client: self.client,
            user: self.user,
            meta: bytes(self.meta),
            channel: self.channel,
            method: self.method,
            data: proxy::payload(bytes(self.data), Some(self.b64data)),
            rpc_data: rpc_data(self.data, self.b64data),
        }
    }
}

/// JSON data is passed to an rpc backend as it is; binary data (a protobuf client's, or
/// `b64data`) as a base64 string, which JSON can carry.
fn rpc_data<'a>(data: &'a [u8], b64data: &'a str) -> RpcData<'a> {
    if !data.is_empty() {
        return match std::str::from_utf8(data) {
            Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
                RpcData::Json(Cow::Borrowed(text))
            }
            _ => RpcData::Base64(Cow::Owned(
                base64::engine::general_purpose::STANDARD.encode(data),
            )),
        };
    }
    if !b64data.is_empty() {
        return RpcData::Base64(Cow::Borrowed(b64data));
    }
    RpcData::Absent
}

pub fn refresh(r: &proto::RefreshRequest) -> CallRequest<'_> {
    Call {
        client: &r.client,
        user: &r.user,
        meta: &r.meta,
        ..Call::default()
    }
    .neutral()
}

pub fn subscribe(r: &proto::SubscribeRequest) -> CallRequest<'_> {
    Call {
        client: &r.client,
        user: &r.user,
        meta: &r.meta,
        channel: &r.channel,
        data: &r.data,
        b64data: &r.b64data,
        ..Call::default()
    }
    .neutral()
}

pub fn sub_refresh(r: &proto::SubRefreshRequest) -> CallRequest<'_> {
    Call {
        client: &r.client,
        user: &r.user,
        meta: &r.meta,
        channel: &r.channel,
        ..Call::default()
    }
    .neutral()
}

pub fn publish(r: &proto::PublishRequest) -> CallRequest<'_> {
    Call {
        client: &r.client,
        user: &r.user,
        meta: &r.meta,
        channel: &r.channel,
        data: &r.data,
        b64data: &r.b64data,
        ..Call::default()
    }
    .neutral()
}

pub fn rpc(r: &proto::RpcRequest) -> CallRequest<'_> {
    Call {
        client: &r.client,
        user: &r.user,
        meta: &r.meta,
        method: &r.method,
        data: &r.data,
        b64data: &r.b64data,
        ..Call::default()
    }
    .neutral()
}

/// A response message: exactly one of result, error or disconnect set.
pub trait Envelope: Default {
    type Result;
    fn set(
        &mut self,
        result: Option<Self::Result>,
        error: Option<proto::Error>,
        disconnect: Option<proto::Disconnect>,
    );
}

macro_rules! envelope {
    ($($response:ident => $result:ident),+ $(,)?) => {$(
        impl Envelope for proto::$response {
            type Result = proto::$result;
            fn set(
                &mut self,
                result: Option<proto::$result>,
                error: Option<proto::Error>,
                disconnect: Option<proto::Disconnect>,
            ) {
                self.result = result;
                self.error = error;
                self.disconnect = disconnect;
            }
        }
    )+};
}

envelope! {
    ConnectResponse => ConnectResult,
    RefreshResponse => RefreshResult,
    SubscribeResponse => SubscribeResult,
    PublishResponse => PublishResult,
    RpcResponse => RpcResult,
    SubRefreshResponse => SubRefreshResult,
}

/// The response message for a neutral reply.
pub fn encode<E: Envelope, R>(reply: Reply<R>, result: impl FnOnce(R) -> E::Result) -> E {
    let mut envelope = E::default();
    match reply {
        Reply::Result(r) => envelope.set(Some(result(r)), None, None),
        Reply::Error(ErrorBody {
            code,
            message,
            temporary,
        }) => envelope.set(
            None,
            Some(proto::Error {
                code,
                message: message.into_owned(),
                temporary,
            }),
            None,
        ),
        Reply::Disconnect(DisconnectBody { code, reason }) => envelope.set(
            None,
            None,
            Some(proto::Disconnect {
                code,
                reason: reason.into_owned(),
            }),
        ),
    }
    envelope
}

pub fn connect_result(r: ConnectResult) -> proto::ConnectResult {
    proto::ConnectResult {
        user: r.user,
        expire_at: r.expire_at.unwrap_or_default(),
        info: r.info.unwrap_or_default(),
        meta: r.meta,
        ..Default::default()
    }
}

/// `(expired, expire_at)`; 0 means "no expiry", as `{}` does over HTTP.
fn extension(e: Extension) -> (bool, i64) {
    match e {
        Extension::Until(at) => (false, at.unwrap_or_default()),
        Extension::Expired => (true, 0),
    }
}

pub fn refresh_result(e: Extension) -> proto::RefreshResult {
    let (expired, expire_at) = extension(e);
    proto::RefreshResult {
        expired,
        expire_at,
        ..Default::default()
    }
}

pub fn sub_refresh_result(e: Extension) -> proto::SubRefreshResult {
    let (expired, expire_at) = extension(e);
    proto::SubRefreshResult {
        expired,
        expire_at,
        ..Default::default()
    }
}

pub fn subscribe_result(r: SubscribeResult) -> proto::SubscribeResult {
    proto::SubscribeResult {
        expire_at: r.expire_at.unwrap_or_default(),
        ..Default::default()
    }
}

/// Allowed as sent: no data, so Centrifugo publishes the client's own.
pub fn publish_result(_: PublishResult) -> proto::PublishResult {
    proto::PublishResult::default()
}

pub fn rpc_result(r: RpcResult) -> proto::RpcResult {
    proto::RpcResult {
        data: r.data,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_rpc_data_travels_as_base64_and_json_as_is() {
        assert_eq!(
            rpc_data(br#"{"a":1}"#, ""),
            RpcData::Json(r#"{"a":1}"#.into())
        );
        assert_eq!(rpc_data(&[0, 1], ""), RpcData::Base64("AAE=".into()));
        assert_eq!(rpc_data(b"", "AAE="), RpcData::Base64("AAE=".into()));
        assert_eq!(rpc_data(b"", ""), RpcData::Absent);
    }

    #[test]
    fn replies_fill_exactly_one_branch() {
        let r: proto::PublishResponse =
            encode(Reply::<PublishResult>::bad_request(), publish_result);
        assert_eq!(r.error.as_ref().map(|e| e.code), Some(107));
        assert!(r.result.is_none() && r.disconnect.is_none());
        let r: proto::RefreshResponse = encode(Reply::Result(Extension::Expired), refresh_result);
        assert_eq!(r.result.map(|r| r.expired), Some(true));
    }
}
