//! The proxy secrets: the rules every accepted secret follows, and how one held in a file (a
//! mounted Kubernetes Secret) is read. Startup and the running file watcher use the same
//! functions, so a rotated file is held to the rules the first one was.

use std::path::{Path, PathBuf};

use secrecy::zeroize::Zeroize;
use secrecy::ExposeSecret;

use super::value::Secret;
use super::ProxyAuthMode;
use crate::config_error::ConfigError;

/// Shorter secrets are refused: an HMAC key or a static header this short can be guessed.
pub const MIN_SECRET_BYTES: usize = 16;

/// The files the secrets are re-read from while running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFiles {
    /// `CENTRIFUGO_PROXY_SECRET_FILE`.
    pub current: PathBuf,
    /// `CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE`.
    pub previous: Option<PathBuf>,
}

/// What is wrong with a secret, as a message without its content.
pub fn check_secret(mode: ProxyAuthMode, secret: &Secret) -> Result<(), String> {
    let bytes = secret.expose_secret().as_bytes();
    if bytes.len() < MIN_SECRET_BYTES {
        return Err(format!("must be at least {MIN_SECRET_BYTES} bytes long"));
    }
    // The secret travels as an HTTP header (or gRPC metadata) value and is compared exactly.
    if mode == ProxyAuthMode::StaticHeader && !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(
            "must be visible ASCII without spaces in static_header mode (it is sent as an HTTP header value)"
                .into(),
        );
    }
    Ok(())
}

/// Reads a secret file and applies the rules: `Ok(None)` for an empty file.
pub fn load_file(mode: ProxyAuthMode, path: &Path) -> Result<Option<Secret>, String> {
    let secret = read_secret_file(path)?;
    if let Some(secret) = &secret {
        check_secret(mode, secret).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(secret)
}

/// The accepted secrets as the files hold them now, current first; the error names the
/// variable of the file that is wrong. Used by the running watcher (startup reports every
/// problem through `Config`).
pub fn load_files(mode: ProxyAuthMode, files: &SecretFiles) -> Result<Vec<Secret>, ConfigError> {
    const CURRENT: &str = "CENTRIFUGO_PROXY_SECRET_FILE";
    const PREVIOUS: &str = "CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE";
    let current = load_file(mode, &files.current)
        .map_err(|e| ConfigError::new(CURRENT, e))?
        .ok_or_else(|| {
            ConfigError::new(CURRENT, format!("{} is empty", files.current.display()))
        })?;
    let previous = match &files.previous {
        Some(path) => load_file(mode, path).map_err(|e| ConfigError::new(PREVIOUS, e))?,
        None => None,
    };
    Ok(std::iter::once(current).chain(previous).collect())
}

/// Reads a secret file fresh (following a Secret volume's `..data` symlink as it is now).
/// The trailing newline an editor or `echo` adds is not part of the secret; an empty file
/// holds no secret (`None`).
pub fn read_secret_file(path: &Path) -> Result<Option<Secret>, String> {
    let raw = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8(raw).map_err(|e| {
        // The bytes are the secret: wipe them, and say only what is wrong.
        e.into_bytes().zeroize();
        format!("{} is not UTF-8 text", path.display())
    })?;
    let secret = Secret::from(text);
    let trimmed = secret.expose_secret().trim_end_matches(['\n', '\r']);
    Ok((!trimmed.is_empty()).then(|| Secret::from(trimmed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, content: &[u8]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("realtime-secrets-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("secret");
        std::fs::write(&path, content).expect("write");
        path
    }

    #[test]
    fn files_lose_the_trailing_newline_only() {
        let path = temp_file("newline", b" a secret of 16+ bytes \r\n\n");
        let secret = read_secret_file(&path).expect("reads").expect("set");
        assert_eq!(secret.expose_secret(), " a secret of 16+ bytes ");
        let empty = temp_file("empty", b"\n");
        assert!(read_secret_file(&empty).expect("reads").is_none());
        let err = read_secret_file(&empty.with_file_name("absent")).expect_err("missing");
        assert!(err.contains("cannot read"), "{err}");
        let binary = temp_file("binary", b"\xff\xfe secret bytes");
        let err = read_secret_file(&binary).expect_err("not text");
        assert!(!err.contains("secret bytes"), "{err}");
    }

    #[test]
    fn secrets_are_long_enough_and_header_safe_in_static_mode() {
        let check = |mode, s: &str| check_secret(mode, &Secret::from(s));
        assert!(check(ProxyAuthMode::Hmac, "fifteen bytes!!").is_err());
        assert_eq!(check(ProxyAuthMode::Hmac, "sixteen bytes!!!"), Ok(()));
        assert_eq!(check(ProxyAuthMode::Hmac, "with a space, 16+"), Ok(()));
        assert!(check(ProxyAuthMode::StaticHeader, "with a space, 16+").is_err());
        assert_eq!(
            check(ProxyAuthMode::StaticHeader, "no-space-at-all-16"),
            Ok(())
        );
    }
}
