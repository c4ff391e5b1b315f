//! Centrifugo's gRPC proxy protocol (`proto/centrifugal/centrifugo/proxy/proxy.proto`,
//! package `centrifugal.centrifugo.proxy`): the generated messages, the
//! `CentrifugoProxy` server trait the gRPC transport implements, and the client that
//! tests and the benchmark call it with.

// Generated code: lints that fire on it are not ours to fix.
#![allow(clippy::all, clippy::pedantic, clippy::unwrap_used)]
tonic::include_proto!("centrifugal.centrifugo.proxy");

#[cfg(test)]
mod tests {
    //! Pins the wire schema: Centrifugo decodes by field number, so a renumbered field
    //! would silently drop data. Each case sets one field and compares the exact bytes:
    //! a tag byte is `(field number << 3) | wire type` (0 varint, 2 length-delimited).
    use prost::Message;

    use super::*;

    fn bytes(message: &impl Message) -> Vec<u8> {
        message.encode_to_vec()
    }

    #[test]
    fn connect_fields_keep_their_numbers() {
        let request = ConnectRequest {
            data: b"{}".to_vec(),
            ..Default::default()
        };
        // data = 10, bytes.
        assert_eq!(bytes(&request), [0x52, 2, b'{', b'}']);
        let request = ConnectRequest {
            b64data: "e30=".into(),
            ..Default::default()
        };
        // b64data = 11, string.
        assert_eq!(bytes(&request), [0x5a, 4, b'e', b'3', b'0', b'=']);

        let result = ConnectResult {
            meta: b"{}".to_vec(),
            ..Default::default()
        };
        // meta = 9, bytes.
        assert_eq!(bytes(&result), [0x4a, 2, b'{', b'}']);
        let result = ConnectResult {
            user: "u".into(),
            expire_at: 1,
            info: b"i".to_vec(),
            ..Default::default()
        };
        // user = 1 string, expire_at = 2 int64, info = 3 bytes.
        assert_eq!(bytes(&result), [0x0a, 1, b'u', 0x10, 1, 0x1a, 1, b'i']);
    }

    #[test]
    fn response_envelopes_keep_their_numbers() {
        let disconnect = Disconnect {
            code: 4401,
            reason: "unauthorized".into(),
        };
        // code = 1 varint (4401 = 0xb1 0x22), reason = 2 string.
        let mut expected = vec![0x08, 0xb1, 0x22, 0x12, 12];
        expected.extend_from_slice(b"unauthorized");
        assert_eq!(bytes(&disconnect), expected);

        let error = Error {
            code: 107,
            message: "m".into(),
            temporary: true,
        };
        assert_eq!(bytes(&error), [0x08, 107, 0x12, 1, b'm', 0x18, 1]);

        // result = 1, error = 2, disconnect = 3, each an embedded message.
        let response = ConnectResponse {
            result: Some(ConnectResult::default()),
            error: Some(Error::default()),
            disconnect: Some(Disconnect::default()),
        };
        assert_eq!(bytes(&response), [0x0a, 0, 0x12, 0, 0x1a, 0]);
    }

    #[test]
    fn meta_and_method_fields_keep_their_numbers() {
        let meta = || b"{}".to_vec();
        let cases: [(&str, Vec<u8>, u8); 6] = [
            (
                "RefreshRequest.meta = 11",
                bytes(&RefreshRequest {
                    meta: meta(),
                    ..Default::default()
                }),
                0x5a,
            ),
            (
                "SubscribeRequest.meta = 13",
                bytes(&SubscribeRequest {
                    meta: meta(),
                    ..Default::default()
                }),
                0x6a,
            ),
            (
                "PublishRequest.meta = 14",
                bytes(&PublishRequest {
                    meta: meta(),
                    ..Default::default()
                }),
                0x72,
            ),
            (
                "RPCRequest.meta = 14",
                bytes(&RpcRequest {
                    meta: meta(),
                    ..Default::default()
                }),
                0x72,
            ),
            (
                "SubRefreshRequest.meta = 12",
                bytes(&SubRefreshRequest {
                    meta: meta(),
                    ..Default::default()
                }),
                0x62,
            ),
            (
                "RPCRequest.method = 11",
                bytes(&RpcRequest {
                    method: "{}".into(),
                    ..Default::default()
                }),
                0x5a,
            ),
        ];
        for (case, encoded, tag) in cases {
            assert_eq!(encoded, [tag, 2, b'{', b'}'], "{case}");
        }
    }

    #[test]
    fn request_context_and_payload_fields_keep_their_numbers() {
        let request = SubscribeRequest {
            client: "c".into(),
            user: "u".into(),
            channel: "ch".into(),
            data: b"d".to_vec(),
            ..Default::default()
        };
        // client = 1, user = 10, channel = 11, data = 14.
        assert_eq!(
            bytes(&request),
            [0x0a, 1, b'c', 0x52, 1, b'u', 0x5a, 2, b'c', b'h', 0x72, 1, b'd']
        );
        let request = PublishRequest {
            channel: "c".into(),
            data: b"d".to_vec(),
            ..Default::default()
        };
        // channel = 11, data = 12.
        assert_eq!(bytes(&request), [0x5a, 1, b'c', 0x62, 1, b'd']);
        let result = PublishResult {
            data: b"d".to_vec(),
            ..Default::default()
        };
        assert_eq!(bytes(&result), [0x0a, 1, b'd']);
        // Publication keeps the client protocol's number for data (4).
        let publication = Publication {
            data: b"d".to_vec(),
            ..Default::default()
        };
        assert_eq!(bytes(&publication), [0x22, 1, b'd']);
    }

    #[test]
    fn reserved_disconnect_field_is_not_decoded() {
        // Field 3 of Disconnect was `bool reconnect` before v5; an old sender's value must
        // be skipped, not read into another field.
        let decoded = Disconnect::decode(&[0x08, 1, 0x18, 1][..]).expect("valid protobuf");
        assert_eq!(
            decoded,
            Disconnect {
                code: 1,
                reason: String::new()
            }
        );
    }

    #[test]
    fn service_path_is_centrifugos() {
        assert_eq!(
            centrifugo_proxy_server::SERVICE_NAME,
            "centrifugal.centrifugo.proxy.CentrifugoProxy"
        );
    }
}
