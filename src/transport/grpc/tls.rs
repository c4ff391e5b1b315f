//! The gRPC listener's TLS: the acceptor built from the configured PEM files, rebuilt when
//! they change, so a renewed certificate (cert-manager rewriting a Secret volume) needs no
//! restart.
//!
//! Like the proxy secret files (`transport::secret_files`), the files are read by path and
//! compared, not watched: a Secret volume changes by swapping a symlink. The check happens on
//! accept, at most every `POLL_INTERVAL`, so it needs no task of its own; a renewal applies
//! to connections accepted after it. Files that stop reading or parsing keep the last good
//! certificate, with one ERROR line when that starts.

use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, GrpcTls};
use crate::transport::secret_files::POLL_INTERVAL;

const CERT_VAR: &str = "GRPC_PROXY_TLS_CERT_PATH";
const KEY_VAR: &str = "GRPC_PROXY_TLS_KEY_PATH";
const CA_VAR: &str = "GRPC_PROXY_TLS_CLIENT_CA_PATH";

/// The configured files and the acceptor built from their current content.
pub struct TlsFiles {
    paths: GrpcTls,
    acceptor: TlsAcceptor,
    /// Of the bytes the acceptor was built from.
    digest: [u8; 32],
    checked: Instant,
    /// The files are unreadable or invalid (reported once until they are good again).
    failing: bool,
}

/// The files' bytes, read once for one build.
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Pem {
    fn read(paths: &GrpcTls) -> Result<Self, ConfigError> {
        let read = |var: &str, path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| ConfigError::new(var, format!("cannot read {}: {e}", path.display())))
        };
        Ok(Self {
            cert: read(CERT_VAR, &paths.cert)?,
            key: read(KEY_VAR, &paths.key)?,
            client_ca: match &paths.client_ca {
                Some(path) => Some(read(CA_VAR, path)?),
                None => None,
            },
        })
    }

    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            let part = part.map_or(&[][..], Vec::as_slice);
            // Lengths first: two different splits of the same bytes differ.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hash.finalize().into()
    }

    /// The acceptor (HTTP/2 by ALPN); errors name the variable.
    fn acceptor(&self) -> Result<TlsAcceptor, ConfigError> {
        let pem = |var: &'static str| {
            move |e: rustls::pki_types::pem::Error| ConfigError::new(var, format!("not PEM: {e}"))
        };
        let certs = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem(CERT_VAR))?;
        if certs.is_empty() {
            return Err(ConfigError::new(CERT_VAR, "no certificate in the file"));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(pem(KEY_VAR))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new(CERT_VAR, e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(bundle) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in CertificateDer::pem_slice_iter(bundle) {
                    roots
                        .add(ca.map_err(pem(CA_VAR))?)
                        .map_err(|e| ConfigError::new(CA_VAR, e.to_string()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    provider,
                )
                .build()
                .map_err(|e| ConfigError::new(CA_VAR, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| ConfigError::new(KEY_VAR, e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl TlsFiles {
    /// Reads and checks the files at startup; errors name the variable.
    pub fn load(paths: &GrpcTls) -> Result<Self, ConfigError> {
        let pem = Pem::read(paths)?;
        Ok(Self {
            paths: paths.clone(),
            acceptor: pem.acceptor()?,
            digest: pem.digest(),
            checked: Instant::now(),
            failing: false,
        })
    }

    /// The acceptor for a new connection, rebuilt first if the files changed since the last
    /// look (at most every `POLL_INTERVAL`).
    pub fn acceptor(&mut self) -> TlsAcceptor {
        if self.checked.elapsed() >= POLL_INTERVAL {
            self.checked = Instant::now();
            self.reload();
        }
        self.acceptor.clone()
    }

    fn reload(&mut self) {
        let rebuilt = Pem::read(&self.paths).and_then(|pem| {
            let digest = pem.digest();
            if digest == self.digest {
                return Ok(None);
            }
            Ok(Some((pem.acceptor()?, digest)))
        });
        match rebuilt {
            Ok(None) => self.failing = false,
            Ok(Some((acceptor, digest))) => {
                self.acceptor = acceptor;
                self.digest = digest;
                self.failing = false;
                tracing::info!("gRPC listener: TLS certificate files changed, reloaded");
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(
                        error = %e,
                        "gRPC listener: TLS files unreadable or invalid, keeping the last good certificate"
                    );
                }
                self.failing = true;
            }
        }
    }
}
