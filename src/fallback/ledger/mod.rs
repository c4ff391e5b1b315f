//! The consumed ledger: which tickets have been used. One setting (`FALLBACK_LEDGER`) picks
//! where that is recorded; the pool sees one interface.
//!
//! Every ledger answers a claim the same way: `Won` for exactly one caller per ticket (per
//! process for `memory`, per host for `file`, per cluster for `redis`), `AlreadyClaimed` for
//! every other, or an error the caller answers with 503.

mod file;
mod memory;
mod redis;

pub use self::file::FileLedger;
pub use self::memory::{ConsumedSet, MemoryLedger};
pub use self::redis::{risks as redis_risks, RedisLedger};

use super::config::{LedgerConfig, LedgerKind};
use super::metrics::FallbackMetrics;
use super::set::TicketSet;
use super::TicketDigest;
use crate::redis_client::RedisClient;

/// The answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This call made the claim: the ticket is accepted.
    Won,
    /// Someone claimed it before (this process, another replica, or before a restart).
    AlreadyClaimed,
}

/// A ledger that could not record or answer. Logged and counted where it happens.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("FALLBACK_LEDGER_PATH: cannot open: {0}")]
    Open(std::io::ErrorKind),
    #[error("the ledger file write failed: {0}")]
    Write(std::io::ErrorKind),
    #[error("Redis did not answer")]
    Unavailable,
    #[error("REDIS_URL is required for the redis ledger")]
    NoRedis,
}

/// One interface over the three ledgers. A cheap-to-clone handle.
#[derive(Clone)]
pub enum Ledger {
    Memory(MemoryLedger),
    File(FileLedger),
    Redis(RedisLedger),
}

impl Ledger {
    /// Builds the configured ledger. `redis` is the process's one client (see
    /// `crate::redis_client`), required for the `redis` ledger. The file ledger is read here.
    pub fn build(
        config: &LedgerConfig,
        redis: Option<RedisClient>,
        metrics: &FallbackMetrics,
    ) -> Result<Self, LedgerError> {
        let ledger = match config.kind {
            LedgerKind::Memory => Self::Memory(MemoryLedger::default()),
            LedgerKind::File => {
                let path = config
                    .path
                    .as_deref()
                    .ok_or(LedgerError::Open(std::io::ErrorKind::NotFound))?;
                Self::File(FileLedger::open(path, metrics.clone())?)
            }
            LedgerKind::Redis => Self::Redis(RedisLedger::new(
                redis.ok_or(LedgerError::NoRedis)?,
                config.ttl,
                config.on_unavailable,
                metrics.clone(),
            )),
        };
        metrics
            .ledger_reachable
            .set(i64::from(ledger.kind() != LedgerKind::Redis));
        Ok(ledger)
    }

    pub fn kind(&self) -> LedgerKind {
        match self {
            Self::Memory(_) => LedgerKind::Memory,
            Self::File(_) => LedgerKind::File,
            Self::Redis(_) => LedgerKind::Redis,
        }
    }

    /// What this process knows consumed, without asking anyone.
    fn known(&self) -> &ConsumedSet {
        match self {
            Self::Memory(l) => l.consumed(),
            Self::File(l) => l.consumed(),
            Self::Redis(l) => l.known(),
        }
    }

    /// Known consumed without asking anyone: the fast path for a reused ticket.
    pub fn known_consumed(&self, digest: &TicketDigest) -> bool {
        self.known().contains(digest)
    }

    /// Claims `digest`, one atomic step.
    pub async fn claim(&self, digest: &TicketDigest) -> Result<Claim, LedgerError> {
        match self {
            Self::Memory(l) => Ok(l.claim(digest)),
            Self::File(l) => l.claim(digest).await,
            Self::Redis(l) => l.claim(digest).await,
        }
    }

    /// How many tickets of `set` are consumed, as far as this process knows.
    pub fn count_known(&self, set: &TicketSet) -> usize {
        self.known().count_in(set)
    }

    /// How many tickets of `set` are consumed by anyone: for `redis` this asks Redis about
    /// every ticket not yet known consumed.
    pub async fn count_consumed(&self, set: &TicketSet) -> Result<usize, LedgerError> {
        match self {
            Self::Redis(l) => l.count_consumed(set).await,
            _ => Ok(self.count_known(set)),
        }
    }

    /// Starts the background work the ledger needs (the `redis` ledger's backfill of local
    /// claims), stopping on `stop`. `None` for ledgers without any.
    pub fn spawn_background(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        match self {
            Self::Redis(l) => Some(l.spawn_backfill(stop)),
            _ => None,
        }
    }

    /// Whether the counts must be refreshed on every reload tick, not only on a change.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    /// Times Redis was found to have lost the ledger's data (0 for the other ledgers).
    pub fn data_losses(&self) -> u64 {
        match self {
            Self::Redis(l) => l.data_losses(),
            _ => 0,
        }
    }

    /// Whether the ledger answers: memory always; file when the last write succeeded;
    /// redis when the last call got an answer.
    pub fn reachable(&self) -> bool {
        match self {
            Self::Memory(_) => true,
            Self::File(l) => l.healthy(),
            Self::Redis(l) => l.reachable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fallback::config::OnUnavailable;
    use crate::redis_client::testing;
    use std::sync::Arc;
    use std::time::Duration;

    /// 64 concurrent claims of `digest`, spread over `replicas`: how many won.
    async fn wins_of_64(replicas: &[Ledger], digest: TicketDigest) -> usize {
        let barrier = Arc::new(tokio::sync::Barrier::new(64));
        let tasks: Vec<_> = (0..64)
            .map(|n| {
                let (ledger, barrier) = (replicas[n % replicas.len()].clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    ledger.claim(&digest).await.expect("claim")
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            wins += usize::from(task.await.expect("task") == Claim::Won);
        }
        wins
    }

    /// Exactly one of 64 concurrent claims wins, and later claims are refused.
    async fn exactly_one_of_64_wins(ledger: Ledger) {
        let digest = TicketDigest::of(b"contended");
        assert_eq!(wins_of_64(std::slice::from_ref(&ledger), digest).await, 1);
        assert!(ledger.known_consumed(&digest));
        assert_eq!(
            ledger.claim(&digest).await.expect("claim"),
            Claim::AlreadyClaimed
        );
    }

    fn metrics() -> FallbackMetrics {
        FallbackMetrics::new(&prometheus::Registry::new())
    }

    fn redis_replica(prefix: &str) -> Ledger {
        Ledger::Redis(RedisLedger::new(
            testing::client(&testing::shared_url(), prefix),
            Duration::from_secs(86_400),
            OnUnavailable::Deny,
            metrics(),
        ))
    }

    #[test]
    fn build_needs_a_client_for_redis_and_a_path_for_file() {
        let m = metrics();
        let redis = LedgerConfig {
            kind: LedgerKind::Redis,
            ..LedgerConfig::default()
        };
        assert!(matches!(
            Ledger::build(&redis, None, &m),
            Err(LedgerError::NoRedis)
        ));
        let file = LedgerConfig {
            kind: LedgerKind::File,
            ..LedgerConfig::default()
        };
        assert!(matches!(
            Ledger::build(&file, None, &m),
            Err(LedgerError::Open(_))
        ));
        let memory = Ledger::build(&LedgerConfig::default(), None, &m).expect("memory");
        assert_eq!(memory.kind(), LedgerKind::Memory);
        assert!(memory.reachable());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_single_use_under_concurrency() {
        exactly_one_of_64_wins(Ledger::Memory(MemoryLedger::default())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn file_single_use_under_concurrency() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = FileLedger::open(&dir.path().join("ledger"), metrics()).expect("open");
        exactly_one_of_64_wins(Ledger::File(ledger)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_single_use_under_concurrency_across_replicas() {
        let prefix = testing::unique_prefix("single-use");
        // Three replicas: three clients, three ledgers, one Redis.
        let replicas: Vec<Ledger> = (0..3).map(|_| redis_replica(&prefix)).collect();
        let digest = TicketDigest::of(b"contended-cluster");
        assert_eq!(wins_of_64(&replicas, digest).await, 1);
        // A restarted replica (a fresh ledger) still sees it consumed.
        let restarted = redis_replica(&prefix);
        assert_eq!(
            restarted.claim(&digest).await.expect("claim"),
            Claim::AlreadyClaimed
        );
        exactly_one_of_64_wins(restarted).await;
    }
}
