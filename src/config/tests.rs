use super::*;

pub(super) fn base() -> Vec<(&'static str, &'static str)> {
    vec![("CENTRIFUGO_PROXY_SECRET", "s3cret-s3cret-s3cret")]
}

pub(super) fn with(extra: &[(&'static str, &'static str)]) -> Result<Config, ConfigErrors> {
    let mut pairs = base();
    pairs.extend_from_slice(extra);
    Config::from_pairs(pairs)
}

pub(super) fn settings(extra: &[(&'static str, &'static str)]) -> Settings {
    let mut pairs = base();
    pairs.extend_from_slice(extra);
    Settings::from_pairs(pairs).expect("parses")
}

pub(super) fn err_text(extra: &[(&'static str, &'static str)]) -> String {
    with(extra).expect_err("must be rejected").to_string()
}

#[test]
fn defaults_match_the_documented_values() {
    let s = settings(&[]);
    assert_eq!(s.listen_port, 9730);
    assert_eq!(s.listen_host, "0.0.0.0");
    assert_eq!(s.centrifugo_proxy_auth, ProxyAuthMode::Hmac);
    assert_eq!(s.proxy_max_body_bytes, 65536);
    assert_eq!(s.proxy_http_status_mode, StatusMode::Mapped);
    assert_eq!(s.identity_validate_deadline_ms, 2500);
    assert_eq!(s.identity_probe_interval_ms, 1000);
    assert_eq!(s.fallback_degraded_window_ms, 5000);
    assert_eq!(s.fallback_low_watermark, 1000);
    assert_eq!(s.fallback_connect_ttl_s, 300);
    assert_eq!(s.shutdown_drain_delay_ms, 5000);
    assert_eq!(s.otel_service_name, None);
    let c = with(&[]).expect("valid");
    assert!(c.fallback.tickets_path.is_none());
    assert!(c.listen.grpc.is_none());
    assert_eq!(c.identity.uri.to_string(), "http://localhost:50051/");
}

#[test]
fn secret_is_required_unless_auth_is_none() {
    let err = Config::from_pairs(Vec::<(String, String)>::new())
        .expect_err("no secret")
        .to_string();
    assert!(err.starts_with("CENTRIFUGO_PROXY_SECRET:"), "{err}");
    let err = Config::from_pairs([("CENTRIFUGO_PROXY_SECRET", "")])
        .expect_err("empty secret")
        .to_string();
    assert!(err.starts_with("CENTRIFUGO_PROXY_SECRET:"), "{err}");
    Config::from_pairs([("CENTRIFUGO_PROXY_AUTH", "none")]).expect("none needs no secret");
}

#[test]
fn static_header_secrets_must_be_header_safe() {
    let err = Config::from_pairs([
        ("CENTRIFUGO_PROXY_AUTH", "static_header"),
        ("CENTRIFUGO_PROXY_SECRET", "has a space in it"),
    ])
    .expect_err("space")
    .to_string();
    assert!(
        err.starts_with("CENTRIFUGO_PROXY_SECRET:")
            && err.contains("ASCII")
            && !err.contains("has a space"),
        "{err}"
    );
    let err = Config::from_pairs([
        ("CENTRIFUGO_PROXY_AUTH", "static_header"),
        ("CENTRIFUGO_PROXY_SECRET", "ok-ok-ok-ok-ok-ok"),
        ("CENTRIFUGO_PROXY_SECRET_PREVIOUS", "tab\there-tab-there"),
    ])
    .expect_err("tab")
    .to_string();
    assert!(
        err.starts_with("CENTRIFUGO_PROXY_SECRET_PREVIOUS:"),
        "{err}"
    );
    // HMAC keys are bytes that are never sent: anything goes.
    Config::from_pairs([("CENTRIFUGO_PROXY_SECRET", "has a space in it")]).expect("hmac key");
}

#[test]
fn parse_errors_name_the_variable() {
    let err = err_text(&[("LISTEN_PORT", "nine")]);
    assert!(err.starts_with("LISTEN_PORT:"), "{err}");
    let err = err_text(&[("CENTRIFUGO_PROXY_AUTH", "basic")]);
    assert!(err.starts_with("CENTRIFUGO_PROXY_AUTH:"), "{err}");
    let err = err_text(&[("PROXY_HTTP_STATUS_MODE", "sometimes")]);
    assert!(err.starts_with("PROXY_HTTP_STATUS_MODE:"), "{err}");
}

#[test]
fn every_bad_variable_is_reported_at_once() {
    let err = err_text(&[
        ("IDENTITY_VALIDATE_DEADLINE_MS", "abc"),
        ("LISTEN_PORT", "abc"),
    ]);
    assert!(err.contains("IDENTITY_VALIDATE_DEADLINE_MS:"), "{err}");
    assert!(err.contains("LISTEN_PORT:"), "{err}");
    let err = err_text(&[
        ("PUBLISH_BURST", "0"),
        ("RPC_ROUTES", "nope"),
        ("CONNECT_INFO_FIELDS", "ticket"),
    ]);
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn pool_invariants_are_checked_only_when_the_pool_is_enabled() {
    let pool = ("FALLBACK_TICKETS_PATH", "/tmp/tickets");
    let err = err_text(&[pool, ("FALLBACK_DEGRADED_WINDOW_MS", "0")]);
    assert!(err.starts_with("FALLBACK_DEGRADED_WINDOW_MS:"), "{err}");
    let err = err_text(&[pool, ("FALLBACK_DEGRADED_WINDOW_MS", "2000")]);
    assert!(err.contains("IDENTITY_VALIDATE_DEADLINE_MS"), "{err}");
    // Equal is allowed: the window is "at least one full deadline".
    with(&[pool, ("FALLBACK_DEGRADED_WINDOW_MS", "2500")]).expect("equal ok");
    for ttl in ["59", "3601", "0"] {
        let err = err_text(&[pool, ("FALLBACK_CONNECT_TTL_S", ttl)]);
        assert!(err.starts_with("FALLBACK_CONNECT_TTL_S:"), "{err}");
    }
    with(&[pool, ("FALLBACK_CONNECT_TTL_S", "60")]).expect("lower bound ok");
    with(&[pool, ("FALLBACK_CONNECT_TTL_S", "3600")]).expect("upper bound ok");
    // Without a pool the same values are irrelevant and accepted.
    with(&[
        ("FALLBACK_DEGRADED_WINDOW_MS", "0"),
        ("FALLBACK_CONNECT_TTL_S", "1"),
    ])
    .expect("pool disabled");
}

#[test]
fn info_fields_must_be_meta_fields() {
    let c = with(&[("CONNECT_INFO_FIELDS", "user, subscription_tier")]).expect("valid");
    assert_eq!(c.connect.info_fields, ["user", "subscription_tier"]);
    let err = err_text(&[("CONNECT_INFO_FIELDS", "user,ticket")]);
    assert!(err.starts_with("CONNECT_INFO_FIELDS:"), "{err}");
}

#[test]
fn identity_address_gets_a_scheme_from_the_negotiation_type() {
    let c = with(&[
        ("IDENTITY_VALIDATE_GRPC_ADDRESS", "identity:443"),
        ("IDENTITY_VALIDATE_NEGOTIATION_TYPE", "tls"),
    ])
    .expect("valid");
    assert_eq!(c.identity.uri.scheme_str(), Some("https"));
    assert!(c.identity.tls.is_some());
    let err = err_text(&[("IDENTITY_VALIDATE_GRPC_ADDRESS", "")]);
    assert!(err.starts_with("IDENTITY_VALIDATE_GRPC_ADDRESS:"), "{err}");
}

#[test]
fn grpc_listener_and_its_tls_files() {
    let c = with(&[("GRPC_PROXY_LISTEN_PORT", "9731")]).expect("valid");
    assert_eq!(c.listen.grpc.map(|a| a.port()), Some(9731));
    let c = with(&[("GRPC_PROXY_LISTEN_PORT", "")]).expect("empty is unset");
    assert!(c.listen.grpc.is_none());
    let err = err_text(&[("GRPC_PROXY_LISTEN_PORT", "9730")]);
    assert!(err.starts_with("GRPC_PROXY_LISTEN_PORT:"), "{err}");
    let err = err_text(&[
        ("GRPC_PROXY_LISTEN_PORT", "9731"),
        ("GRPC_PROXY_TLS_CERT_PATH", "/tls/tls.crt"),
    ]);
    assert!(err.starts_with("GRPC_PROXY_TLS_KEY_PATH:"), "{err}");
    let c = with(&[
        ("GRPC_PROXY_LISTEN_PORT", "9731"),
        ("GRPC_PROXY_TLS_CERT_PATH", "/tls/tls.crt"),
        ("GRPC_PROXY_TLS_KEY_PATH", "/tls/tls.key"),
    ])
    .expect("valid");
    assert!(c.listen.grpc_tls.is_some());
}

#[test]
fn redacted_lines_never_contain_secrets_and_cover_every_variable() {
    let s = settings(&[("CENTRIFUGO_PROXY_SECRET_PREVIOUS", "old-one-old-one-old")]);
    let lines = s.redacted_lines();
    let text = lines.join("\n");
    assert!(
        !text.contains("s3cret") && !text.contains("old-one-old-one-old"),
        "{text}"
    );
    assert!(text.contains("CENTRIFUGO_PROXY_SECRET=<redacted>"));
    assert!(!format!("{s:?}").contains("s3cret"));
    assert_eq!(lines.len(), Settings::VARIABLES.len());
    for (line, var) in lines.iter().zip(Settings::VARIABLES) {
        assert!(line.starts_with(&format!("{var}=")), "{line}");
    }
}

/// A directory of files for one test, removed at the end.
struct Files(std::path::PathBuf);

impl Files {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("realtime-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
    fn write(&self, name: &str, content: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write");
        path.display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config_of(pairs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    Config::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn first_error(pairs: &[(&str, &str)]) -> String {
    config_of(pairs).expect_err("must be rejected").to_string()
}

#[test]
fn secrets_shorter_than_16_bytes_are_refused_naming_the_variable() {
    let err = first_error(&[("CENTRIFUGO_PROXY_SECRET", "fifteen-bytes!!")]);
    assert!(
        err.starts_with("CENTRIFUGO_PROXY_SECRET:") && err.contains("16"),
        "{err}"
    );
    let err = first_error(&[
        ("CENTRIFUGO_PROXY_SECRET", "sixteen-bytes!!!"),
        ("CENTRIFUGO_PROXY_SECRET_PREVIOUS", "short"),
    ]);
    assert!(
        err.starts_with("CENTRIFUGO_PROXY_SECRET_PREVIOUS:"),
        "{err}"
    );
    config_of(&[("CENTRIFUGO_PROXY_SECRET", "sixteen-bytes!!!")]).expect("16 bytes");
}

#[test]
fn a_missing_hmac_secret_points_stock_centrifugo_at_static_header_first() {
    let err = first_error(&[]);
    assert!(err.starts_with("CENTRIFUGO_PROXY_SECRET:"), "{err}");
    let (signs, static_header, none) = (
        err.find("signs nothing")
            .expect("says stock Centrifugo signs nothing"),
        err.find("static_header").expect("names static_header"),
        err.find("=none").expect("mentions none"),
    );
    assert!(signs < none && static_header < none, "{err}");
    let err = first_error(&[("CENTRIFUGO_PROXY_AUTH", "static_header")]);
    assert!(err.starts_with("CENTRIFUGO_PROXY_SECRET:"), "{err}");
}

#[test]
fn secrets_come_from_files_with_the_same_rules() {
    let dir = Files::new("secret-files");
    let current = dir.write("current", "current-secret-from-file\n");
    let previous = dir.write("previous", "previous-secret-from-file\r\n");
    let empty = dir.write("empty", "\n");
    let short = dir.write("short", "short\n");
    let c = config_of(&[
        ("CENTRIFUGO_PROXY_SECRET_FILE", &current),
        ("CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE", &previous),
    ])
    .expect("valid files");
    use secrecy::ExposeSecret;
    let secrets: Vec<&str> = c.auth.secrets.iter().map(|s| s.expose_secret()).collect();
    assert_eq!(
        secrets,
        ["current-secret-from-file", "previous-secret-from-file"]
    );
    let files = c.auth.files.expect("watched");
    assert_eq!(files.current.display().to_string(), current);
    // An empty previous file is "no previous secret".
    let c = config_of(&[
        ("CENTRIFUGO_PROXY_SECRET_FILE", &current),
        ("CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE", &empty),
    ])
    .expect("empty previous");
    assert_eq!(c.auth.secrets.len(), 1);

    for (pairs, var) in [
        (
            vec![("CENTRIFUGO_PROXY_SECRET_FILE", empty.as_str())],
            "CENTRIFUGO_PROXY_SECRET_FILE:",
        ),
        (
            vec![("CENTRIFUGO_PROXY_SECRET_FILE", short.as_str())],
            "CENTRIFUGO_PROXY_SECRET_FILE:",
        ),
        (
            vec![("CENTRIFUGO_PROXY_SECRET_FILE", "/nonexistent/secret")],
            "CENTRIFUGO_PROXY_SECRET_FILE:",
        ),
        (
            vec![
                ("CENTRIFUGO_PROXY_SECRET_FILE", current.as_str()),
                ("CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE", short.as_str()),
            ],
            "CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE:",
        ),
    ] {
        let err = first_error(&pairs);
        assert!(err.starts_with(var), "{pairs:?}: {err}");
        assert!(
            !err.contains("short\n") && !err.contains("current-secret"),
            "{err}"
        );
    }
}

#[test]
fn a_secret_and_its_file_exclude_each_other_and_do_not_mix() {
    let dir = Files::new("secret-exclusive");
    let current = dir.write("current", "current-secret-from-file");
    let err = first_error(&[
        ("CENTRIFUGO_PROXY_SECRET", "sixteen-bytes!!!"),
        ("CENTRIFUGO_PROXY_SECRET_FILE", &current),
    ]);
    assert!(
        err.starts_with("CENTRIFUGO_PROXY_SECRET_FILE:")
            && err.contains("CENTRIFUGO_PROXY_SECRET and"),
        "{err}"
    );
    let err = first_error(&[
        ("CENTRIFUGO_PROXY_SECRET_FILE", &current),
        ("CENTRIFUGO_PROXY_SECRET_PREVIOUS", "sixteen-bytes!!!"),
    ]);
    assert!(
        err.starts_with("CENTRIFUGO_PROXY_SECRET_PREVIOUS:"),
        "{err}"
    );
    let err = first_error(&[
        ("CENTRIFUGO_PROXY_SECRET", "sixteen-bytes!!!"),
        ("CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE", &current),
    ]);
    assert!(
        err.starts_with("CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE:"),
        "{err}"
    );
}

const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";

#[test]
fn identity_tls_files_need_tls_and_come_in_pairs() {
    let dir = Files::new("identity-tls");
    let ca = dir.write("ca.pem", CERT_PEM);
    let cert = dir.write("tls.crt", CERT_PEM);
    let key = dir.write("tls.key", KEY_PEM);
    let junk = dir.write("junk", "not pem");
    let tls = ("IDENTITY_VALIDATE_NEGOTIATION_TYPE", "tls");
    let secret = ("CENTRIFUGO_PROXY_SECRET", "sixteen-bytes!!!");

    let c = config_of(&[
        secret,
        tls,
        ("IDENTITY_VALIDATE_TLS_CA_PATH", &ca),
        ("IDENTITY_VALIDATE_TLS_CERT_PATH", &cert),
        ("IDENTITY_VALIDATE_TLS_KEY_PATH", &key),
        ("IDENTITY_VALIDATE_TLS_SERVER_NAME", "identity.internal"),
    ])
    .expect("valid");
    let t = c.identity.tls.expect("tls");
    assert!(t.ca_pem.is_some() && t.client.is_some());
    assert_eq!(t.server_name.as_deref(), Some("identity.internal"));
    assert!(!format!("{:?}", t.client).contains("PRIVATE KEY"));

    for (pairs, var) in [
        (
            vec![secret, ("IDENTITY_VALIDATE_TLS_CA_PATH", ca.as_str())],
            "IDENTITY_VALIDATE_TLS_CA_PATH:",
        ),
        (
            vec![secret, ("IDENTITY_VALIDATE_TLS_SERVER_NAME", "x")],
            "IDENTITY_VALIDATE_TLS_SERVER_NAME:",
        ),
        (
            vec![
                secret,
                tls,
                ("IDENTITY_VALIDATE_TLS_CERT_PATH", cert.as_str()),
            ],
            "IDENTITY_VALIDATE_TLS_KEY_PATH:",
        ),
        (
            vec![
                secret,
                tls,
                ("IDENTITY_VALIDATE_TLS_KEY_PATH", key.as_str()),
            ],
            "IDENTITY_VALIDATE_TLS_CERT_PATH:",
        ),
        (
            vec![
                secret,
                tls,
                ("IDENTITY_VALIDATE_TLS_CA_PATH", "/nonexistent/ca.pem"),
            ],
            "IDENTITY_VALIDATE_TLS_CA_PATH:",
        ),
        (
            vec![
                secret,
                tls,
                ("IDENTITY_VALIDATE_TLS_CA_PATH", junk.as_str()),
            ],
            "IDENTITY_VALIDATE_TLS_CA_PATH:",
        ),
        (
            vec![
                secret,
                tls,
                ("IDENTITY_VALIDATE_TLS_CERT_PATH", cert.as_str()),
                ("IDENTITY_VALIDATE_TLS_KEY_PATH", cert.as_str()),
            ],
            "IDENTITY_VALIDATE_TLS_KEY_PATH:",
        ),
    ] {
        let err = first_error(&pairs);
        assert!(err.starts_with(var), "{pairs:?}: {err}");
    }
    // An https:// address is TLS whatever the negotiation type says.
    config_of(&[
        secret,
        ("IDENTITY_VALIDATE_GRPC_ADDRESS", "https://identity:443"),
        ("IDENTITY_VALIDATE_TLS_CA_PATH", &ca),
    ])
    .expect("https address");
}

#[test]
fn otlp_endpoint_must_be_http_or_https() {
    let secret = ("CENTRIFUGO_PROXY_SECRET", "sixteen-bytes!!!");
    let err = first_error(&[
        secret,
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:4318"),
    ]);
    assert!(err.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT:"), "{err}");
    let err = first_error(&[secret, ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]);
    assert!(err.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT:"), "{err}");
    let c = config_of(&[
        secret,
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
    ])
    .expect("https");
    assert_eq!(
        c.telemetry.traces_endpoint.map(|e| e.url).as_deref(),
        Some("https://collector:4318/v1/traces")
    );
}
