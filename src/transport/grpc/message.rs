//! A call's request message on the wire: the 5-byte prefix (compressed flag, big-endian
//! length), the size cap, and gzip.
//!
//! Centrifugo's `grpc.compression: true` makes grpc-go gzip every non-empty message, however
//! small, so gzip is decoded here; answers always go out uncompressed (a client must accept
//! identity). `PROXY_MAX_BODY_BYTES` caps the message both as sent and as decompressed, and
//! decompression stops one byte past the cap, so a small bomb costs no more than an honest
//! message of the largest size served.

use std::io::Read;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::read::GzDecoder;
use h2::RecvStream;
use tonic::codegen::http::HeaderValue;
use tonic::Status;

/// What this side decodes, for `grpc-accept-encoding` (identity is always implied).
pub const ACCEPTED_ENCODINGS: &str = "gzip";

/// A request message, or why there is none.
pub enum Message {
    Bytes(Bytes),
    /// Larger than `PROXY_MAX_BODY_BYTES`, as sent or once decompressed: answered 107,
    /// never buffered past the cap.
    TooLarge,
}

/// A call's `grpc-encoding`: how its messages with the compressed flag are compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    /// No header, or `identity`: no message may carry the flag.
    Identity,
    Gzip,
    /// Anything else, by name (for the status naming it).
    Other(String),
}

impl Encoding {
    pub fn of(header: Option<&HeaderValue>) -> Self {
        match header.map(HeaderValue::as_bytes) {
            None | Some(b"identity") => Self::Identity,
            Some(b"gzip") => Self::Gzip,
            Some(other) => Self::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }
}

/// Reads the one request message of `stream`, buffering at most `max` bytes of it (a larger
/// one is drained and dropped, so the client gets its answer after sending everything), and
/// decodes it as `encoding` says.
pub async fn read(
    stream: &mut RecvStream,
    encoding: &Encoding,
    max: usize,
) -> Result<Message, Status> {
    let mut buf = BytesMut::new();
    let mut too_large = false;
    while let Some(chunk) = stream.data().await {
        let chunk = chunk.map_err(|e| Status::cancelled(format!("request stream: {e}")))?;
        let _ = stream.flow_control().release_capacity(chunk.len());
        if too_large {
            continue;
        }
        buf.extend_from_slice(&chunk);
        if let Some(len) = declared_len(&buf) {
            if len > max || buf.len() > 5 + max {
                too_large = true;
                buf = BytesMut::new();
            }
        }
    }
    if too_large {
        return Ok(Message::TooLarge);
    }
    let Some(len) = declared_len(&buf) else {
        return Err(Status::internal("missing request message"));
    };
    if buf.len() != 5 + len {
        return Err(Status::internal("expected exactly one request message"));
    }
    let flag = buf[0];
    buf.advance(5);
    decode(flag, buf.freeze(), encoding, max)
}

/// The message as its compressed flag and the call's encoding say; the statuses are the
/// ones the gRPC over HTTP/2 protocol document and grpc-go give.
fn decode(flag: u8, payload: Bytes, encoding: &Encoding, max: usize) -> Result<Message, Status> {
    match (flag, encoding) {
        (0, _) => Ok(Message::Bytes(payload)),
        (1, Encoding::Gzip) => gunzip(GzDecoder::new(payload.reader()), max)
            .map(|inflated| inflated.map_or(Message::TooLarge, |m| Message::Bytes(m.into())))
            .map_err(|e| {
                Status::internal(format!("failed to decompress the request message: {e}"))
            }),
        (1, Encoding::Identity) => Err(Status::internal(
            "compressed flag set on a message without grpc-encoding",
        )),
        (1, Encoding::Other(name)) => Err(Status::unimplemented(format!(
            "grpc-encoding {name} is not supported: send {ACCEPTED_ENCODINGS} or identity"
        ))),
        (other, _) => Err(Status::internal(format!(
            "compressed flag {other} is neither 0 nor 1"
        ))),
    }
}

/// The decompressed bytes of `decoder`, or `None` once they pass `max`: no more than
/// `max + 1` bytes are ever produced, however much the input would expand to.
fn gunzip(decoder: impl Read, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let cap = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    decoder.take(cap).read_to_end(&mut out)?;
    Ok((out.len() <= max).then_some(out))
}

/// The length in a message's 5-byte prefix (compressed flag, big-endian length).
fn declared_len(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = buf.get(1..5)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(prefix)).ok()
}

/// A protobuf message with its 5-byte prefix, uncompressed, as a gRPC DATA payload.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Encoding into a buffer with the room the message asked for cannot fail.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use tonic::Code;

    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).expect("in memory");
        encoder.finish().expect("in memory").into()
    }

    fn decoded(flag: u8, payload: Bytes, encoding: &Encoding, max: usize) -> Result<Vec<u8>, Code> {
        match decode(flag, payload, encoding, max) {
            Ok(Message::Bytes(bytes)) => Ok(bytes.to_vec()),
            Ok(Message::TooLarge) => Err(Code::ResourceExhausted),
            Err(status) => Err(status.code()),
        }
    }

    #[test]
    fn the_prefix_carries_the_length_big_endian() {
        assert_eq!(declared_len(&[0, 0, 0, 1, 2]), Some(258));
        assert_eq!(declared_len(&[0, 0, 0, 1]), None);
        let framed = frame(&crate::transport::grpc::proto::Disconnect {
            code: 4401,
            reason: "unauthorized".into(),
        });
        assert_eq!(framed[0], 0);
        assert_eq!(declared_len(&framed), Some(framed.len() - 5));
    }

    #[test]
    fn encodings_by_header() {
        let of = |v: &'static str| Encoding::of(Some(&HeaderValue::from_static(v)));
        assert_eq!(Encoding::of(None), Encoding::Identity);
        assert_eq!(of("identity"), Encoding::Identity);
        assert_eq!(of("gzip"), Encoding::Gzip);
        assert_eq!(of("snappy"), Encoding::Other("snappy".into()));
    }

    #[test]
    fn gzip_messages_decode_up_to_the_cap_and_not_past_it() {
        let text = b"a message of some length ".repeat(40);
        let len = text.len();
        let gzipped = gzip(&text);
        assert_eq!(
            decoded(1, gzipped.clone(), &Encoding::Gzip, len),
            Ok(text.clone())
        );
        assert_eq!(
            decoded(1, gzipped, &Encoding::Gzip, len - 1),
            Err(Code::ResourceExhausted)
        );
        // The flag clear: the bytes as they are, whatever the header says.
        let plain = Bytes::from_static(b"plain");
        assert_eq!(
            decoded(0, plain.clone(), &Encoding::Gzip, 5),
            Ok(b"plain".to_vec())
        );
        assert_eq!(
            decoded(0, plain, &Encoding::Other("br".into()), 5),
            Ok(b"plain".to_vec())
        );
    }

    #[test]
    fn a_compressed_flag_the_call_cannot_decode_gets_the_protocols_status() {
        let gzipped = gzip(b"hello");
        assert_eq!(
            decoded(1, gzipped.clone(), &Encoding::Other("br".into()), 64),
            Err(Code::Unimplemented)
        );
        assert_eq!(
            decoded(1, gzipped, &Encoding::Identity, 64),
            Err(Code::Internal)
        );
        assert_eq!(
            decoded(1, Bytes::from_static(b"not gzip"), &Encoding::Gzip, 64),
            Err(Code::Internal)
        );
        assert_eq!(
            decoded(2, Bytes::new(), &Encoding::Gzip, 64),
            Err(Code::Internal)
        );
    }

    /// Counts the bytes a reader has produced.
    struct Counted<R> {
        inner: R,
        produced: usize,
    }

    impl<R: Read> Read for Counted<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.produced += n;
            Ok(n)
        }
    }

    #[test]
    fn decompression_stops_one_byte_past_the_cap_of_an_endless_stream() {
        // A decoder that never ends, as a bomb looks from here: unbounded, this never returns.
        let mut endless = Counted {
            inner: std::io::repeat(0),
            produced: 0,
        };
        assert_eq!(gunzip(&mut endless, 1024).expect("reads"), None);
        assert_eq!(endless.produced, 1025);
        // A real bomb: 4 MiB of zeros, under the cap as sent.
        let bomb = gzip(&vec![0; 4 << 20]);
        assert!(bomb.len() < 65_536, "{}", bomb.len());
        assert_eq!(
            decoded(1, bomb, &Encoding::Gzip, 65_536),
            Err(Code::ResourceExhausted)
        );
    }
}
