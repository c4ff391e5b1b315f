//! `rediss://` against a TLS-only `redis-server` and a CA the test makes.

use std::collections::HashMap;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::testing::OwnRedis;
use super::*;

/// A CA (PEM) and an issuer to sign with. Every certificate gets its own subject name:
/// OpenSSL (Redis's side) takes a leaf whose issuer equals its subject for self-signed.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), Issuer::new(params, key))
}

/// A certificate for `name` signed by `issuer`: (cert PEM, key PEM).
fn leaf(name: &str, issuer: &Issuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

fn config(pairs: &[(&str, &str)]) -> Result<Option<RedisConfig>, ConfigError> {
    let map: HashMap<&str, &str> = pairs.iter().copied().collect();
    RedisConfig::from_lookup(&|k| map.get(k).map(|v| (*v).to_owned()))
}

#[test]
fn tls_files_need_rediss_and_come_as_a_cert_key_pair() {
    let err = config(&[("REDIS_URL", "redis://h"), ("REDIS_TLS_CA_PATH", "/ca")])
        .expect_err("plain URL")
        .to_string();
    assert!(err.starts_with("REDIS_TLS_CA_PATH:"), "{err}");
    let err = config(&[("REDIS_URL", "rediss://h"), ("REDIS_TLS_CERT_PATH", "/c")])
        .expect_err("no key")
        .to_string();
    assert!(err.starts_with("REDIS_TLS_KEY_PATH:"), "{err}");
    let ok = config(&[
        ("REDIS_URL", "rediss://h"),
        ("REDIS_TLS_CA_PATH", "/ca"),
        ("REDIS_TLS_CERT_PATH", "/c"),
        ("REDIS_TLS_KEY_PATH", "/k"),
    ])
    .expect("valid")
    .expect("some");
    assert!(ok.tls.is_set());
}

/// Without the CA the handshake fails (reason `tls`, naming `REDIS_URL`); with a wrong CA it
/// fails naming `REDIS_TLS_CA_PATH`; the right CA written into that file is picked up while
/// the client runs, and the server's required client certificate is presented.
#[tokio::test]
async fn rediss_with_a_private_ca_and_a_client_certificate_reread_on_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (ca_pem, issuer) = ca("test Redis CA");
    let (other_ca_pem, _) = ca("another CA");
    let (server_cert, server_key) = leaf("127.0.0.1", &issuer);
    let (client_cert, client_key) = leaf("realtime-service", &issuer);
    let ca_file = write(d, "ca.pem", &ca_pem);
    let server = OwnRedis::start_tls(
        Path::new(&write(d, "server.pem", &server_cert)),
        Path::new(&write(d, "server.key", &server_key)),
        Path::new(&ca_file),
    );
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let trusted = write(d, "trusted.pem", &other_ca_pem);
    let (cert, key) = (
        write(d, "client.pem", &client_cert),
        write(d, "client.key", &client_key),
    );

    let without_ca = config(&[("REDIS_URL", &url)]).expect("ok").expect("some");
    let client = RedisClient::connect_lazy(&without_ca).expect("client");
    let failure = client
        .check(without_ca.variables())
        .await
        .expect_err("unknown CA");
    assert_eq!(
        (failure.reason, failure.variable()),
        (Failure::Tls, "REDIS_URL")
    );

    let with_files = config(&[
        ("REDIS_URL", &url),
        ("REDIS_TLS_CA_PATH", &trusted),
        ("REDIS_TLS_CERT_PATH", &cert),
        ("REDIS_TLS_KEY_PATH", &key),
    ])
    .expect("ok")
    .expect("some");
    let client = RedisClient::connect_lazy(&with_files).expect("client");
    let failure = client
        .check(with_files.variables())
        .await
        .expect_err("wrong CA");
    assert_eq!(
        (failure.reason, failure.variable()),
        (Failure::Tls, "REDIS_TLS_CA_PATH"),
        "{failure}"
    );
    assert!(!client.reload_tls().expect("readable"), "unchanged");
    std::fs::write(&trusted, &ca_pem).expect("rotate");
    assert!(client.reload_tls().expect("readable"), "changed");
    client
        .check(with_files.variables())
        .await
        .expect("TLS with the right CA");
    client.ping().await.expect("ping over TLS");
}
