//! TLS for the service's outgoing HTTP clients (rpc backends, the OTLP exporter): rustls with
//! the ring provider (the one tonic already carries) and the webpki root certificates, so an
//! `https://` URL works in a distroless image that has no system certificate store; or, when
//! configured (`OutgoingTls`), a private CA instead of those roots and a client certificate.
//!
//! reqwest is built without a bundled crypto provider (its default would add aws-lc), so any
//! reqwest client built in this process needs ring installed as rustls' process default
//! first: `install_crypto_provider` does that once, and `Application` calls it.

use std::sync::{Arc, Once};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM certificate chain and its private key; the key's `Debug` shows no content.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: secrecy::SecretSlice<u8>,
}

/// TLS of an outgoing HTTPS or gRPC client (rpc backends, the OTLP collector), files
/// already read by the configuration: a CA instead of the public roots, and a client
/// certificate for mTLS.
#[derive(Debug, Clone, Default)]
pub struct OutgoingTls {
    pub ca_pem: Option<Vec<u8>>,
    pub client: Option<ClientIdentity>,
}

/// Makes ring rustls' process-wide default, once. A provider installed earlier by someone
/// else is kept (installing is first-wins).
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Client TLS: ring, the webpki roots, HTTP/1.1 (the only protocol these clients speak).
pub fn client_config() -> rustls::ClientConfig {
    // Without a CA or a client certificate nothing can fail.
    client_config_with(&OutgoingTls::default())
        .unwrap_or_else(|_| unreachable!("the webpki roots and no client certificate"))
}

/// Client TLS as `tls` says: its CA instead of the webpki roots (a private CA should not be
/// trusted alongside every public one for this connection), its client certificate when the
/// server asks for one. The configuration checked the PEM files; the error is rustls'.
pub fn client_config_with(tls: &OutgoingTls) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
        }
        None => roots.roots = webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    // The ring provider supports every safe default version, so this cannot fail.
    .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
    .with_root_certificates(roots);
    let mut config = match &tls.client {
        Some(client) => {
            use secrecy::ExposeSecret;
            let chain = CertificateDer::pem_slice_iter(&client.cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(client.key_pem.expose_secret())
                .map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The async client for rpc backends: one pool, the whole-call deadline, direct connections,
/// TLS as `tls` says.
pub fn http_client(deadline: Duration, tls: &OutgoingTls) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_config_with(tls)?)
        .timeout(deadline)
        .connect_timeout(deadline)
        // Backends are addressed directly; an HTTP_PROXY variable must not reroute them.
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())
}

/// The blocking client the OTLP exporter runs on its own thread. Built on a fresh thread:
/// a blocking reqwest client must not be created (or dropped) on an async runtime thread.
pub fn blocking_http_client(
    timeout: Duration,
    tls: &OutgoingTls,
) -> Result<reqwest::blocking::Client, String> {
    install_crypto_provider();
    let config = client_config_with(tls)?;
    std::thread::Builder::new()
        .name("otlp-client-init".into())
        .spawn(move || {
            reqwest::blocking::Client::builder()
                .tls_backend_preconfigured(config)
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the thread building the HTTP client panicked".to_owned())?
}

/// The URL schemes the HTTP clients can use.
pub const HTTP_SCHEMES: &[&str] = &["http", "https"];

/// Checks that `url` is an absolute `http://` or `https://` URL with a host; the message
/// says what is wrong (the caller names the variable).
pub fn check_http_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some(scheme) if HTTP_SCHEMES.contains(&scheme) => {}
        Some(scheme) => {
            return Err(format!(
                "{url:?}: scheme {scheme:?} is not supported; use http:// or https://"
            ))
        }
        None => return Err(format!("{url:?} has no scheme; use http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_with_a_host_pass() {
        for good in [
            "http://x/",
            "https://collector:4318",
            "http://127.0.0.1:9/p",
        ] {
            assert_eq!(check_http_url(good), Ok(()), "{good}");
        }
        for bad in [
            "ftp://x/",
            "collector:4318",
            "grpc://x",
            "https://",
            "/v1/traces",
            "",
        ] {
            assert!(check_http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clients_build_with_the_ring_provider() {
        let tls = OutgoingTls::default();
        http_client(Duration::from_secs(1), &tls).expect("async client");
        blocking_http_client(Duration::from_secs(1), &tls).expect("blocking client");
    }
}
