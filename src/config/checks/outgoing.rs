//! The service's outgoing HTTPS and gRPC clients other than identity-service's: the rpc
//! backends' CA (`RPC_TLS_CA_PATH`) and the OTLP collector's TLS files, read and checked as
//! PEM at startup; and the OTLP `key=value` lists (`OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_HEADERS`).

use super::identity::{client_identity, read_pem, refuse_set, PemKind};
use super::*;

/// `RPC_TLS_CA_PATH`, read: the CA the `https://` rpc backends' certificates are checked
/// against instead of the public roots.
pub(in crate::config) fn rpc_tls(s: &Settings, p: &mut Problems) -> Option<OutgoingTls> {
    const CA: &str = "RPC_TLS_CA_PATH";
    let ca = non_empty_path(s.rpc_tls_ca_path.as_deref())?;
    let ca_pem = p.take(read_pem(CA, &ca, PemKind::Certificates))?;
    Some(OutgoingTls {
        ca_pem: Some(ca_pem),
        client: None,
    })
}

/// The OTLP collector's TLS files. Set with an `http://` endpoint they would do nothing,
/// which is an error: the operator meant the collector to be verified.
pub(super) fn otlp_tls(s: &Settings, url: &str, p: &mut Problems) -> OutgoingTls {
    const CA: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
    const CERT: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
    const KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";
    let ca = non_empty_path(s.otel_exporter_otlp_certificate.as_deref());
    let cert = non_empty_path(s.otel_exporter_otlp_client_certificate.as_deref());
    let key = non_empty_path(s.otel_exporter_otlp_client_key.as_deref());
    if !url.starts_with("https://") {
        refuse_set(
            &[
                (CA, ca.is_some()),
                (CERT, cert.is_some()),
                (KEY, key.is_some()),
            ],
            &format!("set, but the OTLP endpoint {url} is not https://"),
            p,
        );
        return OutgoingTls::default();
    }
    OutgoingTls {
        ca_pem: ca.and_then(|path| p.take(read_pem(CA, &path, PemKind::Certificates))),
        client: client_identity((CERT, cert), (KEY, key), p),
    }
}

/// A `key=value,key=value` list as the OpenTelemetry spec writes `OTEL_RESOURCE_ATTRIBUTES`
/// and `OTEL_EXPORTER_OTLP_HEADERS`: values percent-decoded, blanks around entries ignored.
/// The error shows no value (headers carry API keys).
pub(in crate::config) fn key_values(raw: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, entry) in raw.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        let Some((key, value)) = entry.split_once('=') else {
            return Err(format!("entry {} is not key=value", n + 1));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("entry {} has an empty key", n + 1));
        }
        let value = percent_decode(value.trim())
            .ok_or_else(|| format!("the value of {key:?} has a bad %-escape"))?;
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// `%XX` escapes to bytes; `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::key_values;

    #[test]
    fn key_value_lists_parse_as_the_spec_writes_them() {
        assert_eq!(
            key_values(" deployment.environment=prod , team=real%20time,,").expect("valid"),
            [
                ("deployment.environment".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "real time".to_owned())
            ]
        );
        assert_eq!(key_values("").expect("empty is valid"), []);
        assert!(key_values("novalue").is_err());
        assert!(key_values("=v").is_err());
        assert!(key_values("k=%zz").is_err());
        assert!(key_values("k=%4").is_err());
        // The error never shows a value.
        let err = key_values("authorization=Bearer%2").expect_err("a broken escape");
        assert!(!err.contains("Bearer"), "{err}");
    }
}
