//! The Redis ledger's work off the request path: releasing attempts whose caller was told
//! "unavailable", and writing back, pipelined, the claims made locally while Redis did not
//! answer. One task does both, waiting on the client's breaker while Redis is away.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{lock, RedisLedger, REFUSED_TTL_S, RELEASE};
use crate::fallback::config::LedgerKind;
use crate::fallback::metrics::LedgerOp;
use crate::fallback::TicketDigest;
use crate::redis_client::CallError;

/// Claim scripts per pipelined round trip when writing back: 10k local claims are ten
/// round trips.
const WRITE_BATCH: usize = 1000;
/// Conflicting tickets named (by digest prefix) in a write-back's summary line.
const CONFLICTS_NAMED: usize = 16;
/// Pause after a round that made no progress although Redis answered.
const STALL_PAUSE: Duration = Duration::from_secs(1);

/// What one write-back round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackfillReport {
    /// Local claims now in Redis as this process's.
    pub written: usize,
    /// Local claims another replica had made in Redis too: the ticket was used twice.
    pub conflicts: usize,
    /// The first of those conflicts (at most `CONFLICTS_NAMED`), for the summary line.
    pub named: [Option<TicketDigest>; CONFLICTS_NAMED],
    /// Refused attempts released.
    pub released: usize,
    /// Local claims still pending (Redis stopped answering mid-round).
    pub pending: usize,
}

impl RedisLedger {
    /// Remembers that `attempt`'s caller was told "unavailable", and releases it at once, on
    /// the connection the claim went out on: Redis runs the release right behind the claim
    /// (or before it, and the refusal mark stops the claim). The task retries a failure.
    pub(super) fn release_later(&self, digest: &TicketDigest, attempt: String) {
        lock(&self.inner.releases).insert(*digest.as_bytes(), attempt);
        let (ledger, digest) = (self.clone(), *digest);
        tokio::spawn(async move {
            if ledger.release_now(&[digest]).await.is_err() {
                ledger.inner.wake.notify_one();
            }
        });
    }

    /// Releases the pending refused attempts of `digests`, in one pipeline; a release that
    /// reached Redis is forgotten.
    async fn release_now(&self, digests: &[TicketDigest]) -> Result<usize, CallError> {
        let inner = &self.inner;
        let batch: Vec<(TicketDigest, String)> = {
            let releases = lock(&inner.releases);
            digests
                .iter()
                .filter_map(|d| releases.get(d.as_bytes()).map(|a| (*d, a.clone())))
                .collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(RELEASE).ignore();
        for (digest, attempt) in &batch {
            pipe.cmd("EVALSHA")
                .arg(inner.release.get_hash())
                .arg(2)
                .arg(self.key(digest))
                .arg(self.refused_key(digest, attempt))
                .arg(attempt.as_str())
                .arg(REFUSED_TTL_S)
                .ignore();
        }
        let pipe = &pipe;
        inner
            .client
            .call_through(move |mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await?;
        let mut releases = lock(&inner.releases);
        for (digest, attempt) in &batch {
            // A newer refused attempt of the same ticket may have replaced this one.
            if releases.get(digest.as_bytes()) == Some(attempt) {
                releases.remove(digest.as_bytes());
            }
        }
        Ok(batch.len())
    }

    /// One round: every pending release, then every pending local claim, `WRITE_BATCH`
    /// claim scripts per round trip. Stops at the first round trip that fails.
    pub async fn backfill_once(&self) -> BackfillReport {
        let inner = &self.inner;
        let mut report = BackfillReport::default();
        let refused: Vec<TicketDigest> = lock(&inner.releases)
            .keys()
            .map(|d| TicketDigest::from_bytes(*d))
            .collect();
        for chunk in refused.chunks(WRITE_BATCH) {
            match self.release_now(chunk).await {
                Ok(n) => report.released += n,
                Err(_) => {
                    inner
                        .metrics
                        .ledger_error(LedgerKind::Redis, LedgerOp::Backfill);
                    report.pending = self.pending();
                    return report;
                }
            }
        }
        let pending: Vec<TicketDigest> = lock(&inner.pending)
            .iter()
            .map(|d| TicketDigest::from_bytes(*d))
            .collect();
        for chunk in pending.chunks(WRITE_BATCH) {
            match self.write_back(chunk, &mut report).await {
                Ok(()) => {}
                Err(e) => {
                    inner
                        .metrics
                        .ledger_error(LedgerKind::Redis, LedgerOp::Backfill);
                    tracing::debug!(error = %e, "write-back of local fallback claims paused");
                    break;
                }
            }
        }
        report.pending = self.pending();
        report
    }

    /// Claims `chunk` in Redis in one pipeline, counting into `report`.
    async fn write_back(
        &self,
        chunk: &[TicketDigest],
        report: &mut BackfillReport,
    ) -> Result<(), CallError> {
        let inner = &self.inner;
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(super::CLAIM).ignore();
        for digest in chunk {
            self.push_claim(&mut pipe, digest, &self.next_attempt());
        }
        let pipe = &pipe;
        let answers: Vec<i64> = inner
            .client
            .call(move |mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        let mut pending = lock(&inner.pending);
        for (digest, answer) in chunk.iter().zip(answers) {
            match answer {
                1 => report.written += 1,
                0 => {
                    report.note_conflict(*digest);
                    inner.metrics.ledger_conflicts.inc();
                }
                // A fresh attempt is never refused; left pending for the next round.
                _ => continue,
            }
            pending.remove(digest.as_bytes());
        }
        inner
            .metrics
            .ledger_pending_claims
            .set(super::gauge(pending.len()));
        Ok(())
    }

    /// Runs until `stop`: releases refused attempts and writes back local claims as soon as
    /// Redis answers, and logs one summary per write-back.
    pub fn spawn_backfill(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let ledger = self.clone();
        tokio::spawn(async move {
            let mut streak = BackfillReport::default();
            loop {
                if ledger.pending() + ledger.releases_pending() == 0 {
                    streak.log_summary();
                    streak = BackfillReport::default();
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = ledger.inner.wake.notified() => continue,
                    }
                }
                // The breaker's probe finds out when Redis answers again.
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = ledger.inner.client.until_available() => {}
                }
                let report = tokio::select! {
                    () = stop.cancelled() => return,
                    report = ledger.backfill_once() => report,
                };
                streak.add(&report);
                let progress = report.written + report.conflicts + report.released > 0;
                if !progress && ledger.inner.client.available() {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(STALL_PAUSE) => {}
                    }
                }
            }
        })
    }
}

impl BackfillReport {
    fn note_conflict(&mut self, digest: TicketDigest) {
        if let Some(slot) = self.named.get_mut(self.conflicts) {
            *slot = Some(digest);
        }
        self.conflicts += 1;
    }

    /// Adds a round's counts to a streak's.
    fn add(&mut self, round: &Self) {
        self.written += round.written;
        self.released += round.released;
        for digest in round.named.iter().take(round.conflicts).flatten() {
            self.note_conflict(*digest);
        }
        // Conflicts beyond the named ones.
        self.conflicts += round.conflicts.saturating_sub(CONFLICTS_NAMED);
    }

    /// One line per write-back streak, never one per ticket.
    fn log_summary(&self) {
        if self.conflicts > 0 {
            let named: Vec<String> = self.named.iter().flatten().map(|d| d.short_hex()).collect();
            tracing::warn!(
                written = self.written,
                conflicts = self.conflicts,
                tickets = named.join(","),
                "local fallback claims written back to Redis; some tickets had also been claimed by another replica while Redis did not answer: used twice"
            );
        } else if self.written > 0 {
            tracing::info!(
                written = self.written,
                "local fallback claims written back to Redis"
            );
        }
    }
}
