//! The fallback pool: single-use tickets mounted from a Kubernetes Secret, accepted only
//! while identity-service has been unreachable for longer than the degraded window.
//!
//! The pool is two things:
//! - the **ticket set** (`set`): what the Secret lists, as SHA-256 digests, replaced whole by
//!   a reload (`reload`), so readers never see half a set;
//! - the **consumed ledger** (`ledger`): what has been used, per process (`memory`), per
//!   host across restarts (`file`) or per cluster (`redis`).
//!
//! Consumption is recorded in the ledger, never by deleting from the set, so a reload can
//! never bring a used ticket back. Digests only: a heap dump or a debug print never
//! reveals a usable ticket.
//!
//! # Layout
//! - `config`: the settings and their parse functions.
//! - `set`: loading the ticket set from a file or a directory.
//! - `ledger`: the three ledgers behind one interface.
//! - `reload`: the reload task (interval and SIGHUP), shared with the channel policy.
//! - `metrics`: the ledger and reload metrics.

pub mod config;
pub mod ledger;
pub mod metrics;
pub mod reload;
pub mod set;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use sha2::{Digest, Sha256};

use self::ledger::{Claim, Ledger};
use self::metrics::FallbackMetrics;
use self::reload::{ReloadFuture, ReloadResult, ReloadTarget, Reloadable};
use self::set::{Fingerprint, LoadError, TicketSet};
use crate::clock::Clock;

/// How the ticket set was found. Spelled as in `/health` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolStatus {
    /// `FALLBACK_TICKETS_PATH` is empty: no fallback path at all.
    Disabled,
    Loaded,
    /// The path does not exist (and no set was ever loaded).
    Missing,
    /// The path exists but could not be read (and no set was ever loaded).
    Unreadable,
    /// The set was read and holds no ticket.
    Empty,
}

impl PoolStatus {
    pub const ALL: [Self; 5] = [
        Self::Disabled,
        Self::Loaded,
        Self::Missing,
        Self::Unreadable,
        Self::Empty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Loaded => "loaded",
            Self::Missing => "missing",
            Self::Unreadable => "unreadable",
            Self::Empty => "empty",
        }
    }

    fn of(set: &TicketSet) -> Self {
        if set.is_empty() {
            Self::Empty
        } else {
            Self::Loaded
        }
    }
}

/// SHA-256 of a ticket. Its short hex form names a fallback user without revealing the ticket.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TicketDigest([u8; 32]);

impl TicketDigest {
    pub fn of(ticket: &[u8]) -> Self {
        Self(Sha256::digest(ticket).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// 64 hex digits (either case), as in a `sha256:` line or the ledger file.
    pub fn from_hex(hex_digits: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// First 12 hex digits: enough to tell connections apart in logs, useless to an attacker.
    pub fn short_hex(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Debug for TicketDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketDigest({}…)", self.short_hex())
    }
}

/// Result of `take`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// This call consumed the ticket.
    Taken { remaining: usize },
    /// Not in the current set.
    NotInPool,
    /// In the set, but already consumed (here, by another replica, or before a restart).
    Reused,
    /// The ledger could not record the claim: answer 503, never accept unrecorded.
    LedgerUnavailable,
}

/// `/health` `fallback_pool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSnapshot {
    /// Tickets in the set not consumed (by any replica for `redis`, one reload tick late).
    pub size: usize,
    pub status: &'static str,
    pub ledger: &'static str,
    pub ledger_reachable: bool,
    /// Times Redis was found to have lost the ledger's data since this process started.
    pub ledger_data_losses: u64,
    /// Short hash of the current set; null while no set was ever loaded.
    pub generation: Option<String>,
    /// Unix seconds of the last load or reload attempt; null when disabled.
    pub last_reload: Option<i64>,
    /// Why the last reload failed; null when it succeeded.
    pub reload_error: Option<String>,
}

/// Cheap-to-clone handle to the pool.
#[derive(Clone)]
pub struct TicketPool {
    inner: Arc<Inner>,
}

struct Inner {
    path: Option<PathBuf>,
    low_watermark: usize,
    ledger: Ledger,
    metrics: FallbackMetrics,
    clock: Clock,
    // std RwLock: readers clone the `Arc` of the set and let go; a reload swaps it whole.
    state: RwLock<State>,
    size: AtomicUsize,
    /// One reload at a time (the interval and SIGHUP can meet).
    reloading: tokio::sync::Mutex<()>,
}

struct State {
    set: Arc<TicketSet>,
    status: PoolStatus,
    generation: Option<String>,
    fingerprint: Option<Fingerprint>,
    last_reload: Option<i64>,
    reload_error: Option<String>,
}

impl TicketPool {
    /// Loads the set at `path` (`None`: the pool is disabled). Never fails: a missing or
    /// unreadable path is a status (and a WARN), because the service must still start and
    /// serve while identity-service is up. The size counts what this process knows consumed
    /// (the file ledger's file); the first reload round adds other replicas' claims.
    pub fn new(
        path: Option<PathBuf>,
        low_watermark: usize,
        ledger: Ledger,
        metrics: FallbackMetrics,
        clock: Clock,
    ) -> Self {
        let mut state = State {
            set: Arc::new(TicketSet::default()),
            status: PoolStatus::Disabled,
            generation: None,
            fingerprint: None,
            last_reload: None,
            reload_error: None,
        };
        if let Some(path) = &path {
            state.last_reload = Some(clock.unix_seconds());
            match set::load(path) {
                Ok(loaded) => {
                    state.status = PoolStatus::of(&loaded.set);
                    state.generation = Some(loaded.set.generation());
                    state.fingerprint = Some(loaded.fingerprint);
                    state.set = Arc::new(loaded.set);
                    if state.status == PoolStatus::Empty {
                        tracing::warn!(path = %path.display(), "fallback ticket set holds no ticket");
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), reason = %e, "fallback ticket set not loaded; the pool is empty");
                    state.status = e.status();
                    state.reload_error = Some(e.to_string());
                }
            }
        }
        let size = state.set.len() - ledger.count_known(&state.set);
        metrics
            .pool_last_reload
            .set(state.last_reload.unwrap_or_default());
        tracing::info!(
            status = state.status.as_str(),
            size,
            ledger = ledger.kind().as_str(),
            generation = state.generation.as_deref().unwrap_or(""),
            "fallback pool loaded"
        );
        if low_watermark > 0 && size < low_watermark && path.is_some() {
            tracing::warn!(
                size,
                low_watermark,
                "fallback pool starts below its low watermark"
            );
        }
        Self {
            inner: Arc::new(Inner {
                path,
                low_watermark,
                ledger,
                metrics,
                clock,
                state: RwLock::new(state),
                size: AtomicUsize::new(size),
                reloading: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn status(&self) -> PoolStatus {
        self.read().status
    }

    /// Tickets in the set not consumed.
    pub fn size(&self) -> usize {
        self.inner.size.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// Takes a ticket: not in the set -> `NotInPool` (no ledger call); known consumed ->
    /// `Reused`; otherwise one atomic claim in the ledger, accepted only if this call made it.
    pub async fn take(&self, digest: &TicketDigest) -> Take {
        let set = self.read().set.clone();
        if !set.contains(digest) {
            return Take::NotInPool;
        }
        let ledger = &self.inner.ledger;
        if ledger.known_consumed(digest) {
            return Take::Reused;
        }
        match ledger.claim(digest).await {
            Ok(Claim::Won) => {
                let before = self
                    .inner
                    .size
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                        Some(s.saturating_sub(1))
                    })
                    .unwrap_or_default();
                let remaining = before.saturating_sub(1);
                self.watch_low(before, remaining);
                Take::Taken { remaining }
            }
            Ok(Claim::AlreadyClaimed) => Take::Reused,
            // Logged and counted by the ledger, where the cause is known.
            Err(_) => Take::LedgerUnavailable,
        }
    }

    /// The `/health` view.
    pub fn snapshot(&self) -> PoolSnapshot {
        let state = self.read();
        PoolSnapshot {
            size: self.size(),
            status: state.status.as_str(),
            ledger: self.inner.ledger.kind().as_str(),
            ledger_reachable: self.inner.ledger.reachable(),
            ledger_data_losses: self.inner.ledger.data_losses(),
            generation: state.generation.clone(),
            last_reload: state.last_reload,
            reload_error: state.reload_error.clone(),
        }
    }

    /// Re-reads the path and replaces the set when its content changed. Readable content
    /// replaces it even when empty (how an operator revokes every ticket); a missing or
    /// unreadable path keeps the last good set and records the reason. A shared ledger's
    /// consumption is recounted on every call.
    pub async fn reload(&self) -> ReloadResult {
        let Some(path) = self.inner.path.clone() else {
            return ReloadResult::Unchanged;
        };
        let _one_at_a_time = self.inner.reloading.lock().await;
        let known = self.read().fingerprint;
        // Reading a million lines takes a while: off the runtime's workers.
        let read =
            tokio::task::spawn_blocking(move || -> Result<Option<set::Loaded>, LoadError> {
                if let Some(known) = known {
                    if set::fingerprint(&path)? == known {
                        return Ok(None);
                    }
                }
                set::load(&path).map(Some)
            })
            .await
            .unwrap_or_else(|_| Err(LoadError::Unreadable("the reload task failed".to_owned())));
        let now = self.inner.clock.unix_seconds();
        let result = self.apply(read, now);
        self.inner.metrics.pool_last_reload.set(now);
        if result == ReloadResult::Changed || self.inner.ledger.is_shared() {
            self.recount().await;
        }
        result
    }

    fn apply(&self, read: Result<Option<set::Loaded>, LoadError>, now: i64) -> ReloadResult {
        let mut state = self.write();
        state.last_reload = Some(now);
        match read {
            Ok(None) => {
                state.reload_error = None;
                ReloadResult::Unchanged
            }
            Ok(Some(loaded)) => {
                state.reload_error = None;
                state.fingerprint = Some(loaded.fingerprint);
                let generation = loaded.set.generation();
                let status = PoolStatus::of(&loaded.set);
                if state.generation.as_deref() == Some(generation.as_str())
                    && state.status == status
                {
                    return ReloadResult::Unchanged;
                }
                tracing::info!(
                    tickets = loaded.set.len(),
                    generation = %generation,
                    previous = state.generation.as_deref().unwrap_or(""),
                    "fallback ticket set replaced"
                );
                if status == PoolStatus::Empty {
                    tracing::warn!("fallback ticket set is now empty: every ticket is revoked");
                }
                state.status = status;
                state.generation = Some(generation);
                state.set = Arc::new(loaded.set);
                ReloadResult::Changed
            }
            Err(e) => {
                let reason = e.to_string();
                // WARN when the problem starts or changes, not every interval while it lasts.
                if state.reload_error.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(reason = %reason, "fallback ticket reload failed; keeping the last good set");
                }
                if state.generation.is_none() {
                    state.status = e.status();
                }
                state.reload_error = Some(reason);
                ReloadResult::Error
            }
        }
    }

    /// Recomputes the size from the ledger; on a ledger error the estimate stays.
    async fn recount(&self) {
        let set = self.read().set.clone();
        if let Ok(consumed) = self.inner.ledger.count_consumed(&set).await {
            let size = set.len().saturating_sub(consumed);
            let before = self.inner.size.swap(size, Ordering::Relaxed);
            self.watch_low(before, size);
        }
    }

    /// WARNs when the size crosses below the low watermark, once per crossing.
    fn watch_low(&self, before: usize, after: usize) {
        let low = self.inner.low_watermark;
        if low > 0 && before >= low && after < low {
            tracing::warn!(
                remaining = after,
                low_watermark = low,
                "fallback pool fell below its low watermark; rotate in fresh tickets"
            );
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Poisoning only means a panic mid-swap; the state is replaced field by field from
        // values computed before the lock, so it is still coherent enough to serve.
        self.inner
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Reloadable for TicketPool {
    fn target(&self) -> ReloadTarget {
        ReloadTarget::FallbackPool
    }

    fn reload(&self) -> ReloadFuture {
        let pool = self.clone();
        Box::pin(async move { TicketPool::reload(&pool).await })
    }
}

#[cfg(test)]
mod tests;
