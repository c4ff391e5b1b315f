//! The channel policy in force, replaceable while serving: `CHANNEL_POLICY_PATH` is re-read
//! on the pool's reload interval and on SIGHUP. A valid new policy replaces the old one
//! atomically; an invalid one keeps the last good policy and records the error (shown in
//! `/health`), so a bad edit never takes the service down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{ChannelPolicy, PolicyError};

/// `/health` `channel_policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicySnapshot {
    /// `builtin` or the file's path.
    pub source: String,
    /// Unix seconds of the last reload attempt; null for the built-in policy.
    pub last_reload: Option<i64>,
    /// Why the last attempt was refused; null when the file in force is the file on disk.
    pub reload_error: Option<String>,
}

pub struct LivePolicy {
    path: Option<PathBuf>,
    state: RwLock<State>,
}

struct State {
    policy: Arc<ChannelPolicy>,
    /// Digest of the file content last looked at (valid or not), so an unchanged file is
    /// neither parsed nor reported again.
    seen: Option<[u8; 32]>,
    last_reload: Option<i64>,
    error: Option<String>,
}

impl LivePolicy {
    /// The policy startup loaded (`path`: where it came from, `None` for the built-in one).
    pub fn new(path: Option<PathBuf>, policy: ChannelPolicy, now_unix: i64) -> Self {
        let seen = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .map(|bytes| Sha256::digest(bytes).into());
        Self {
            state: RwLock::new(State {
                policy: Arc::new(policy),
                seen,
                last_reload: path.as_ref().map(|_| now_unix),
                error: None,
            }),
            path,
        }
    }

    /// The policy in force. Cheap: one read lock and an `Arc` clone.
    pub fn current(&self) -> Arc<ChannelPolicy> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .policy
            .clone()
    }

    /// Re-reads the file: `Ok(true)` when a new policy is in force, `Ok(false)` when nothing
    /// changed, `Err` when the file is unreadable or invalid (the last good policy stays).
    pub fn reload(&self, now_unix: i64) -> Result<bool, PolicyError> {
        let Some(path) = self.path.as_deref() else {
            return Ok(false);
        };
        let digest: Option<[u8; 32]> = std::fs::read(path)
            .ok()
            .map(|bytes| Sha256::digest(bytes).into());
        let unchanged = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            digest.is_some() && digest == state.seen
        };
        if unchanged {
            return Ok(false);
        }
        let result = ChannelPolicy::load(path);
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.seen = digest;
        state.last_reload = Some(now_unix);
        match result {
            Ok(policy) => {
                state.policy = Arc::new(policy);
                state.error = None;
                tracing::info!(path = %path.display(), "channel policy reloaded");
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "channel policy not reloaded; the last good policy stays in force");
                state.error = Some(e.to_string());
                Err(e)
            }
        }
    }

    pub fn snapshot(&self) -> PolicySnapshot {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        PolicySnapshot {
            source: self
                .path
                .as_deref()
                .map_or_else(|| "builtin".to_owned(), |p: &Path| p.display().to_string()),
            last_reload: state.last_reload,
            reload_error: state.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_edit_keeps_the_last_good_policy_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("policy.toml");
        let builtin = include_str!("../../config/channel-policy.toml");
        std::fs::write(&path, builtin).expect("write");
        let live = LivePolicy::new(
            Some(path.clone()),
            ChannelPolicy::load(&path).expect("valid"),
            1,
        );
        assert!(!live.reload(2).expect("unchanged"));

        std::fs::write(&path, "not = [valid").expect("write");
        assert!(live.reload(3).is_err());
        assert_eq!(*live.current(), ChannelPolicy::builtin());
        let snapshot = live.snapshot();
        assert!(snapshot.reload_error.is_some());
        assert_eq!(snapshot.last_reload, Some(3));
        // The same bad content is not parsed or reported again.
        assert!(!live.reload(4).expect("seen"));

        let smaller = builtin.replace("[namespaces.chat]", "[namespaces.chat2]");
        std::fs::write(&path, smaller).expect("write");
        assert!(live.reload(5).expect("valid"));
        assert_ne!(*live.current(), ChannelPolicy::builtin());
        assert_eq!(live.snapshot().reload_error, None);
    }
}
