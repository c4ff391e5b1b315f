//! Re-reads the proxy secret files (`CENTRIFUGO_PROXY_SECRET_FILE`,
//! `CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE`) while the service runs, so that rotating the
//! secret needs no restart.
//!
//! A Kubernetes Secret volume updates by swapping a `..data` symlink, which no per-file
//! change notification sees reliably; so the files are polled: read fresh by path every
//! `POLL_INTERVAL` (twice, so a poll never mixes two versions of the volume), compared with
//! what is applied, and swapped into the shared set (both transports) when they differ. Files that break the rules (unreadable, empty, too short)
//! keep the last good secrets, with an ERROR log when the problem appears and the
//! `rejected` metric on every poll while it lasts.

use std::time::Duration;

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::secret::SharedSecrets;
use crate::config::secrets::load_files;
use crate::config::{ProxyAuthMode, Secret, SecretFiles};
use crate::metrics::{Metrics, SecretReload};

/// Often enough that a rotation is live within seconds; a few small reads per poll.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The running watcher; dropping it stops the task.
pub struct SecretWatcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for SecretWatcher {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// Starts polling `files`; `applied` are the secrets `shared` holds now (read at startup).
pub fn spawn(
    mode: ProxyAuthMode,
    files: SecretFiles,
    applied: &[Secret],
    shared: SharedSecrets,
    metrics: Metrics,
) -> SecretWatcher {
    let (stop, mut stopped) = watch::channel(false);
    let mut applied = fingerprint(applied);
    let task = tokio::spawn(async move {
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = stopped.wait_for(|stop| *stop) => return,
            }
            // Small files on a local volume; read off the async threads all the same.
            let read = {
                let (files, mode) = (files.clone(), mode);
                tokio::task::spawn_blocking(move || load_consistent(mode, &files)).await
            };
            match read {
                // Changing under us: the next poll sees it settled.
                Ok(Ok(None)) => {}
                Ok(Ok(Some(secrets))) => {
                    last_error = None;
                    let now = fingerprint(&secrets);
                    if now != applied {
                        shared.replace(&secrets);
                        applied = now;
                        metrics.count_secret_reload(SecretReload::Applied);
                        tracing::info!(
                            with_previous = secrets.len() > 1,
                            "proxy secrets reloaded from their files"
                        );
                    }
                }
                Ok(Err(e)) => {
                    metrics.count_secret_reload(SecretReload::Rejected);
                    let message = e.to_string();
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::error!(
                            error = %message,
                            "proxy secret files rejected; the last good secrets stay in use"
                        );
                        last_error = Some(message);
                    }
                }
                // The blocking read panicked or was cancelled at shutdown: try again later.
                Err(_) => metrics.count_secret_reload(SecretReload::Rejected),
            }
        }
    });
    SecretWatcher { stop, task }
}

/// The files read twice in a row: the two files are separate reads, so one poll could see
/// the current file before a volume update and the previous one after it. Two equal reads
/// mean no update was under way; `None` means one was, and the next poll sees it settled.
fn load_consistent(
    mode: ProxyAuthMode,
    files: &SecretFiles,
) -> Result<Option<Vec<Secret>>, crate::config::ConfigError> {
    let first = load_files(mode, files)?;
    let second = load_files(mode, files)?;
    Ok((fingerprint(&first) == fingerprint(&second)).then_some(second))
}

/// Identifies a set of secrets without keeping a copy of them.
fn fingerprint(secrets: &[Secret]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for secret in secrets {
        let bytes = secret.expose_secret().as_bytes();
        // Length-prefixed, so ["ab", "c"] and ["a", "bc"] differ.
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_sets_apart() {
        let set = |s: &[&str]| s.iter().map(|s| Secret::from(*s)).collect::<Vec<_>>();
        assert_eq!(
            fingerprint(&set(&["ab", "c"])),
            fingerprint(&set(&["ab", "c"]))
        );
        assert_ne!(
            fingerprint(&set(&["ab", "c"])),
            fingerprint(&set(&["a", "bc"]))
        );
        assert_ne!(fingerprint(&set(&["ab"])), fingerprint(&set(&["ab", "c"])));
    }
}
