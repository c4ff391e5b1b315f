//! `rediss://` with a private CA or a client certificate: `REDIS_TLS_CA_PATH`,
//! `REDIS_TLS_CERT_PATH`, `REDIS_TLS_KEY_PATH`. The files are read when the client is built
//! and polled afterwards, like the proxy secret files: when their content changes, the client
//! builds a new connection with them (a certificate rotated by cert-manager or a Secret
//! update needs no restart). A read that fails keeps the files last applied, with a WARN.

use std::path::PathBuf;
use std::time::Duration;

use redis::{ClientTlsConfig, TlsCertificates};
use sha2::{Digest, Sha256};

use crate::config_error::{invalid, ConfigError};

/// How often the files are compared with what the client uses.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The TLS files; all unset for `redis://` or a `rediss://` that trusts the system roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The files' content, read once, and its digest (to see a change).
pub struct TlsMaterial {
    pub certificates: TlsCertificates,
    pub digest: [u8; 32],
}

/// Why a file could not be used; names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{var}: cannot read: {kind}")]
pub struct TlsFileError {
    pub var: &'static str,
    pub kind: std::io::ErrorKind,
}

impl TlsFiles {
    /// Reads the three variables through `get`; `tls` is whether the URL is `rediss://`.
    pub fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
        tls: bool,
    ) -> Result<Self, ConfigError> {
        let path = |var: &str| {
            get(var)
                .filter(|p| !p.trim().is_empty())
                .map(|p| PathBuf::from(p.trim()))
        };
        let files = Self {
            ca: path("REDIS_TLS_CA_PATH"),
            cert: path("REDIS_TLS_CERT_PATH"),
            key: path("REDIS_TLS_KEY_PATH"),
        };
        match (&files.cert, &files.key) {
            (Some(_), None) => {
                return Err(invalid(
                    "REDIS_TLS_KEY_PATH",
                    "is required with REDIS_TLS_CERT_PATH",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "REDIS_TLS_CERT_PATH",
                    "is required with REDIS_TLS_KEY_PATH",
                ))
            }
            _ => {}
        }
        if files.is_set() && !tls {
            let var = if files.ca.is_some() {
                "REDIS_TLS_CA_PATH"
            } else {
                "REDIS_TLS_CERT_PATH"
            };
            return Err(invalid(var, "needs a rediss:// REDIS_URL"));
        }
        Ok(files)
    }

    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some()
    }

    /// Reads every file set.
    pub fn read(&self) -> Result<TlsMaterial, TlsFileError> {
        let read =
            |var: &'static str, path: &Option<PathBuf>| -> Result<Option<Vec<u8>>, TlsFileError> {
                path.as_ref()
                    .map(|p| {
                        std::fs::read(p).map_err(|e| TlsFileError {
                            var,
                            kind: e.kind(),
                        })
                    })
                    .transpose()
            };
        let ca = read("REDIS_TLS_CA_PATH", &self.ca)?;
        let cert = read("REDIS_TLS_CERT_PATH", &self.cert)?;
        let key = read("REDIS_TLS_KEY_PATH", &self.key)?;
        let mut hash = Sha256::new();
        for part in [&ca, &cert, &key] {
            let part = part.as_deref().unwrap_or_default();
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        let client_tls = match (cert, key) {
            (Some(client_cert), Some(client_key)) => Some(ClientTlsConfig {
                client_cert,
                client_key,
            }),
            _ => None,
        };
        Ok(TlsMaterial {
            certificates: TlsCertificates {
                client_tls,
                root_cert: ca,
            },
            digest: hash.finalize().into(),
        })
    }
}
