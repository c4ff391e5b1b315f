//! What a call's request head must be before the call runs, and the answers grpc-go gives
//! when it is not: the content type, the size of the header list, the path, the deadline.

use std::time::Duration;

use tonic::codegen::http::{header, HeaderMap, HeaderValue, Method, Uri};
use tonic::Status;

use super::proto::centrifugo_proxy_server::SERVICE_NAME;

/// Why a request is not a call this listener serves, with grpc-go's answer for it.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not `application/grpc` (or `+proto`): HTTP 415 with INVALID_ARGUMENT, as grpc-go.
    /// `application/grpc+json` and other codecs are refused here rather than decoded as
    /// protobuf, which would answer garbage.
    ContentType(String),
    /// The header list is over `HTTP_MAX_HEADER_BYTES`: RESOURCE_EXHAUSTED.
    HeadersTooLarge { size: usize, max: usize },
    /// Another service: UNIMPLEMENTED, naming the path.
    UnknownService(String),
}

impl Refusal {
    pub fn status(&self) -> Status {
        match self {
            Self::ContentType(got) => Status::invalid_argument(format!(
                "invalid gRPC request content-type {got:?}: only application/grpc (protobuf) is served"
            )),
            Self::HeadersTooLarge { size, max } => Status::resource_exhausted(format!(
                "request header list of {size} bytes is over HTTP_MAX_HEADER_BYTES ({max})"
            )),
            Self::UnknownService(path) => {
                Status::unimplemented(format!("unknown service or path {path:?}"))
            }
        }
    }

    /// The HTTP status to send with it: only a wrong content type is not a gRPC answer.
    pub fn is_media_type(&self) -> bool {
        matches!(self, Self::ContentType(_))
    }
}

/// The method a request calls, or why it is refused. `max_header_bytes` bounds the header
/// list as HTTP/2 counts it (name, value and 32 bytes per field).
pub fn check<'a>(
    method: &Method,
    uri: &'a Uri,
    headers: &HeaderMap,
    max_header_bytes: usize,
) -> Result<&'a str, Refusal> {
    let content_type = headers.get(header::CONTENT_TYPE);
    if method != Method::POST || !is_protobuf_grpc(content_type) {
        let got = content_type
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        return Err(Refusal::ContentType(got));
    }
    let size = header_list_size(method, uri, headers);
    if size > max_header_bytes {
        return Err(Refusal::HeadersTooLarge {
            size,
            max: max_header_bytes,
        });
    }
    let path = uri.path();
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(SERVICE_NAME))
        .and_then(|p| p.strip_prefix('/'))
        .ok_or_else(|| Refusal::UnknownService(path.to_owned()))
}

/// `application/grpc` or `application/grpc+proto`, with or without parameters.
fn is_protobuf_grpc(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let base = value
        .as_bytes()
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    base.eq_ignore_ascii_case(b"application/grpc")
        || base.eq_ignore_ascii_case(b"application/grpc+proto")
}

/// The header list's size as HTTP/2's SETTINGS_MAX_HEADER_LIST_SIZE counts it, pseudo-headers
/// included.
fn header_list_size(method: &Method, uri: &Uri, headers: &HeaderMap) -> usize {
    let pseudo = [
        ":method".len() + method.as_str().len(),
        ":path".len() + uri.path_and_query().map_or(0, |p| p.as_str().len()),
        ":scheme".len() + uri.scheme_str().map_or(0, str::len),
        ":authority".len() + uri.authority().map_or(0, |a| a.as_str().len()),
    ];
    let fields = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32);
    pseudo.iter().map(|p| p + 32).chain(fields).sum()
}

/// A `grpc-timeout` value: 1 to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use tonic::codegen::http::request::Parts;
    use tonic::codegen::http::Request;

    use super::*;

    fn check(parts: &Parts, max: usize) -> Result<&str, Refusal> {
        super::check(&parts.method, &parts.uri, &parts.headers, max)
    }

    fn header_list_size(parts: &Parts) -> usize {
        super::header_list_size(&parts.method, &parts.uri, &parts.headers)
    }

    fn timeout_of(value: &str) -> Option<Duration> {
        parse_grpc_timeout(value)
    }

    #[test]
    fn grpc_timeout_units_and_malformed_values() {
        assert_eq!(timeout_of("1000m"), Some(Duration::from_millis(1000)));
        assert_eq!(timeout_of("3S"), Some(Duration::from_secs(3)));
        assert_eq!(timeout_of("2M"), Some(Duration::from_secs(120)));
        assert_eq!(timeout_of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout_of("5u"), Some(Duration::from_micros(5)));
        assert_eq!(timeout_of("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "123456789m", "10x", "-1m", "1.5S"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
    }

    fn parts(method: &str, path: &str, content_type: Option<&str>, extra: usize) -> Parts {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        if extra > 0 {
            request = request.header("x-pad", "p".repeat(extra));
        }
        request.body(()).expect("request").into_parts().0
    }

    #[test]
    fn only_protobuf_grpc_posts_to_the_services_own_paths_name_a_method() {
        let path = format!("/{SERVICE_NAME}/Connect");
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC; charset=utf-8",
        ] {
            let head = parts("POST", &path, Some(ct), 0);
            assert_eq!(check(&head, 16_384), Ok("Connect"), "{ct}");
        }
        for ct in [
            None,
            Some("application/json"),
            Some("application/grpc+json"),
        ] {
            let head = parts("POST", &path, ct, 0);
            let refused = check(&head, 16_384);
            assert!(matches!(refused, Err(Refusal::ContentType(_))), "{ct:?}");
        }
        let get = parts("GET", &path, Some("application/grpc"), 0);
        assert!(matches!(check(&get, 16_384), Err(Refusal::ContentType(_))));
        for other in ["/Connect", "/other.Service/Connect", "/"] {
            let head = parts("POST", other, Some("application/grpc"), 0);
            assert_eq!(
                check(&head, 16_384),
                Err(Refusal::UnknownService(other.to_owned()))
            );
        }
    }

    #[test]
    fn the_header_list_is_measured_as_http2_counts_it() {
        let path = format!("/{SERVICE_NAME}/Connect");
        let small = parts("POST", &path, Some("application/grpc"), 0);
        let size = header_list_size(&small);
        // Four pseudo-headers and content-type, 32 bytes each on top of their text.
        assert!((5 * 32..5 * 32 + 200).contains(&size), "{size}");
        assert!(check(&small, size).is_ok());
        assert!(matches!(
            check(&small, size - 1),
            Err(Refusal::HeadersTooLarge { .. })
        ));
        let big = parts("POST", &path, Some("application/grpc"), 20_000);
        assert!(matches!(
            check(&big, 16_384),
            Err(Refusal::HeadersTooLarge { .. })
        ));
    }
}
