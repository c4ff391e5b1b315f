//! Whether Redis kept the ledger. A generation marker (`<prefix>fallback:generation`, no TTL,
//! set once by whichever replica comes first) is read on every reload tick: a marker that
//! vanished or changed means Redis lost data (a restart without persistence, a failover to a
//! replica that was behind, a flush, eviction). The replica then counts it, logs one ERROR,
//! and writes every claim it still knows back to Redis, so the only claims lost are those no
//! running replica knows. Each tick also asks Redis (`INFO`, `CONFIG GET save`, where the
//! ACL allows) whether it can lose marks at all: an evicting `maxmemory-policy`, or no
//! persistence, is a gauge and a WARN when it appears.

use std::sync::atomic::Ordering;

use super::{lock, RedisLedger};
use crate::fallback::metrics::RedisRisk;
use crate::fallback::TicketDigest;
use crate::redis_client::{CallError, RedisClient};

/// The marker's key suffix.
const MARKER_SUFFIX: &str = "fallback:generation";
/// Known claims re-asserted per pipelined round trip.
const REASSERT_BATCH: usize = 1000;

/// What Redis says about keeping data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Risks {
    /// The `maxmemory-policy` when it can evict consumed marks (anything but `noeviction`:
    /// the marks carry a TTL, so `volatile-*` policies evict them too).
    pub eviction: Option<String>,
    /// Neither AOF nor RDB snapshots (RDB unknown when `CONFIG` is refused: AOF decides).
    pub no_persistence: bool,
}

impl Risks {
    /// One line per risk, for the log and `check-config`.
    pub fn warnings(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(policy) = &self.eviction {
            lines.push(format!("the Redis holding the fallback ledger may evict consumed marks (maxmemory-policy {policy}, not noeviction): used tickets can become valid again"));
        }
        if self.no_persistence {
            lines.push("the Redis holding the fallback ledger has no persistence (no AOF, no RDB snapshots): a restart makes used tickets valid again".to_owned());
        }
        lines
    }
}

/// Asks Redis (`INFO memory persistence`, `CONFIG GET save`) whether it can lose marks;
/// `None` when it refuses `INFO` (a managed service, a strict ACL) or does not answer.
pub async fn risks(client: &RedisClient) -> Option<Risks> {
    let info: String = client
        .call_optional(|mut c| async move {
            redis::cmd("INFO")
                .arg("memory")
                .arg("persistence")
                .query_async(&mut c)
                .await
        })
        .await
        .ok()?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let aof = field("aof_enabled") == Some("1");
    let rdb = client
        .call_optional(|mut c| async move {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("save")
                .query_async::<Vec<String>>(&mut c)
                .await
        })
        .await
        .ok()
        .map(|pair| pair.get(1).is_some_and(|v| !v.trim().is_empty()));
    Some(Risks {
        eviction: field("maxmemory_policy")
            .filter(|p| *p != "noeviction")
            .map(str::to_owned),
        no_persistence: !aof && rdb != Some(true),
    })
}

impl RedisLedger {
    /// Reads (or first writes) the marker; on a change, reports the loss and re-asserts.
    pub(super) async fn check_generation(&self) -> Result<(), CallError> {
        let inner = &self.inner;
        let key = inner.client.key(MARKER_SUFFIX);
        // A value never written before: a marker this process wrote, lost and written again
        // must not look unchanged.
        let candidate = self.next_attempt();
        let (key, mut pipe) = (&key, redis::pipe());
        pipe.cmd("SET")
            .arg(key)
            .arg(candidate.as_str())
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(key);
        let pipe = &pipe;
        let (current,): (Option<String>,) = inner
            .client
            .call(move |mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        let current = current.unwrap_or_default();
        let lost = {
            let mut seen = lock(&inner.generation);
            let lost = seen.as_ref().is_some_and(|s| *s != current);
            *seen = Some(current);
            lost
        };
        if lost {
            self.data_lost().await;
        }
        Ok(())
    }

    /// Reports a loss and writes every claim this process knows back to Redis.
    async fn data_lost(&self) {
        let inner = &self.inner;
        inner.metrics.ledger_data_losses.inc();
        inner.data_losses.fetch_add(1, Ordering::Relaxed);
        let known = inner.known.digests();
        tracing::error!(
            reasserted = known.len(),
            "Redis lost the fallback ledger's data (a restart without persistence, a failover to a replica that was behind, a flush or eviction): re-asserting the claims this replica knows; claims known to no running replica are lost"
        );
        for chunk in known.chunks(REASSERT_BATCH) {
            if let Err(e) = self.reassert(chunk).await {
                tracing::warn!(error = %e, "re-asserting known fallback claims stopped: Redis does not answer; the next tick checks again");
                // The marker is read again next tick; forgetting it makes that tick re-assert.
                *lock(&inner.generation) = None;
                return;
            }
        }
    }

    /// `SET NX` of each digest's mark with this process's value: a claim another replica
    /// re-asserted first stays theirs, and nothing counts as a conflict.
    async fn reassert(&self, chunk: &[TicketDigest]) -> Result<(), CallError> {
        let inner = &self.inner;
        let value = format!("{}reasserted", inner.owner);
        let mut pipe = redis::pipe();
        for digest in chunk {
            pipe.cmd("SET")
                .arg(self.key(digest))
                .arg(value.as_str())
                .arg("NX")
                .arg("EX")
                .arg(inner.ttl_s)
                .ignore();
        }
        let pipe = &pipe;
        inner
            .client
            .call(move |mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    /// Asks Redis whether it can lose marks; sets the gauge and WARNs when a risk appears.
    pub(super) async fn check_risks(&self) -> Option<Risks> {
        let inner = &self.inner;
        let risks = risks(&inner.client).await?;
        {
            let mut last = lock(&inner.risks);
            if last.as_ref() != Some(&risks) {
                for warning in risks.warnings() {
                    tracing::warn!("{warning}");
                }
                *last = Some(risks.clone());
            }
        }
        for (risk, on) in [
            (RedisRisk::Eviction, risks.eviction.is_some()),
            (RedisRisk::NoPersistence, risks.no_persistence),
        ] {
            inner
                .metrics
                .ledger_redis_risk
                .with_label_values(&[risk.as_str()])
                .set(i64::from(on));
        }
        Some(risks)
    }

    /// Times this process found Redis had lost the ledger's data.
    pub fn data_losses(&self) -> u64 {
        self.inner.data_losses.load(Ordering::Relaxed)
    }
}
