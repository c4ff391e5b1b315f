//! identity-service: the address with a scheme that matches the negotiation type, and the TLS
//! files, read and checked as PEM at startup so a bad mount is a configuration error.

use super::*;

pub(in crate::config) fn identity(s: &Settings, p: &mut Problems) -> Option<Identity> {
    positive(
        p,
        "IDENTITY_VALIDATE_DEADLINE_MS",
        s.identity_validate_deadline_ms,
    );
    positive(
        p,
        "IDENTITY_PROBE_INTERVAL_MS",
        s.identity_probe_interval_ms,
    );
    let uri = p.take(identity_uri(
        &s.identity_validate_grpc_address,
        s.identity_validate_negotiation_type,
    ))?;
    let tls = identity_tls(s, uri.scheme_str() == Some("https"), p);
    Some(Identity {
        tls,
        uri,
        deadline: Duration::from_millis(s.identity_validate_deadline_ms),
        probe_interval: Duration::from_millis(s.identity_probe_interval_ms),
    })
}

/// The identity-service TLS settings (`None`: plaintext), with the files read now so that a
/// bad mount fails startup and `check-config`, naming its variable.
fn identity_tls(s: &Settings, tls: bool, p: &mut Problems) -> Option<IdentityTls> {
    const CA: &str = "IDENTITY_VALIDATE_TLS_CA_PATH";
    const CERT: &str = "IDENTITY_VALIDATE_TLS_CERT_PATH";
    const KEY: &str = "IDENTITY_VALIDATE_TLS_KEY_PATH";
    const NAME: &str = "IDENTITY_VALIDATE_TLS_SERVER_NAME";
    let ca = non_empty_path(s.identity_validate_tls_ca_path.as_deref());
    let cert = non_empty_path(s.identity_validate_tls_cert_path.as_deref());
    let key = non_empty_path(s.identity_validate_tls_key_path.as_deref());
    let server_name = s
        .identity_validate_tls_server_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if !tls {
        refuse_set(
            &[
                (CA, ca.is_some()),
                (CERT, cert.is_some()),
                (KEY, key.is_some()),
                (NAME, server_name.is_some()),
            ],
            "set, but identity-service is reached in plaintext: set IDENTITY_VALIDATE_NEGOTIATION_TYPE=tls (or an https:// address)",
            p,
        );
        return None;
    }
    let ca_pem = ca.and_then(|path| p.take(read_pem(CA, &path, PemKind::Certificates)));
    let client = client_identity((CERT, cert), (KEY, key), p);
    Some(IdentityTls {
        ca_pem,
        client,
        server_name,
    })
}

/// TLS files that would do nothing (the connection is plaintext) are an error: the operator
/// meant the peer to be verified.
pub(super) fn refuse_set(vars: &[(&str, bool)], message: &str, p: &mut Problems) {
    for (var, set) in vars {
        if *set {
            p.push(var, message);
        }
    }
}

/// A client certificate and its key, read and checked; each needs the other.
pub(super) fn client_identity(
    (cert_var, cert): (&str, Option<PathBuf>),
    (key_var, key): (&str, Option<PathBuf>),
    p: &mut Problems,
) -> Option<ClientIdentity> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let cert_pem = p.take(read_pem(cert_var, &cert, PemKind::Certificates));
            let key_pem = p.take(read_pem(key_var, &key, PemKind::PrivateKey));
            cert_pem
                .zip(key_pem)
                .map(|(cert_pem, key_pem)| ClientIdentity {
                    cert_pem,
                    key_pem: key_pem.into(),
                })
        }
        (Some(_), None) => {
            p.push(
                key_var,
                format!("required with {cert_var} (the client certificate's key)"),
            );
            None
        }
        (None, Some(_)) => {
            p.push(cert_var, format!("required with {key_var}"));
            None
        }
        (None, None) => None,
    }
}

#[derive(Clone, Copy)]
pub(super) enum PemKind {
    Certificates,
    PrivateKey,
}

/// Reads a PEM file and checks that it holds what it should; the error names `var`.
pub(super) fn read_pem(
    var: &str,
    path: &std::path::Path,
    kind: PemKind,
) -> Result<Vec<u8>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::new(var, format!("cannot read {}: {e}", path.display())))?;
    let valid = match kind {
        PemKind::Certificates => {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
            certs.is_ok_and(|c| !c.is_empty())
        }
        PemKind::PrivateKey => PrivateKeyDer::from_pem_slice(&bytes).is_ok(),
    };
    if !valid {
        let what = match kind {
            PemKind::Certificates => "PEM certificates",
            PemKind::PrivateKey => "a PEM private key",
        };
        return Err(ConfigError::new(
            var,
            format!("{} does not hold {what}", path.display()),
        ));
    }
    Ok(bytes)
}

/// The identity-service URI with a scheme that matches the negotiation type.
pub(in crate::config) fn identity_uri(
    raw: &str,
    negotiation: Negotiation,
) -> Result<tonic::transport::Uri, ConfigError> {
    const VAR: &str = "IDENTITY_VALIDATE_GRPC_ADDRESS";
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ConfigError::new(VAR, "must not be empty"));
    }
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        match negotiation {
            Negotiation::Plaintext => format!("http://{raw}"),
            Negotiation::Tls => format!("https://{raw}"),
        }
    };
    let uri: tonic::transport::Uri = with_scheme
        .parse()
        .map_err(|e| ConfigError::new(VAR, format!("not a host:port or URI ({e})")))?;
    if uri.host().is_none() {
        return Err(ConfigError::new(VAR, "has no host"));
    }
    Ok(uri)
}
