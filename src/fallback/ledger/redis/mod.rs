//! `FALLBACK_LEDGER=redis`: one `SET <prefix>fallback:used:<digest> <replica> NX EX <ttl>`
//! per take, so exactly one replica in the cluster wins a ticket, across restarts.
//!
//! While Redis does not answer, `FALLBACK_LEDGER_UNAVAILABLE` decides: `deny` fails closed,
//! `local` claims in process memory (once per process) and keeps the claim pending until a
//! background task writes it to Redis. A pending claim that finds the key already set by
//! another replica was used twice during the partition: a conflict, counted and warned.
//!
//! The value is a random per-process id, so a claim whose reply was lost (the SET applied,
//! the answer timed out) is recognised as our own when it is written again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::memory::ConsumedSet;
use super::{Claim, LedgerError};
use crate::fallback::config::{LedgerKind, OnUnavailable};
use crate::fallback::metrics::{FallbackMetrics, LedgerOp};
use crate::fallback::set::TicketSet;
use crate::fallback::TicketDigest;
use crate::redis_client::{RedisClient, Streak};

/// Keys are `<REDIS_KEY_PREFIX>fallback:used:<hex SHA-256 of the ticket>`.
const KEY_SUFFIX: &str = "fallback:used:";
/// EXISTS per pipelined round trip when counting: small enough for one `REDIS_TIMEOUT_MS`.
const COUNT_BATCH: usize = 256;
/// Keys a `SCAN` call visits (a hint to Redis): small replies, each well inside one
/// `REDIS_TIMEOUT_MS`.
const SCAN_PAGE: usize = 1000;
/// Pending claims written per backfill round.
const BACKFILL_BATCH: usize = 256;
/// Pause between backfill rounds while claims are pending.
const BACKFILL_PAUSE: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct RedisLedger {
    inner: Arc<Inner>,
}

struct Inner {
    client: RedisClient,
    ttl_s: u64,
    on_unavailable: OnUnavailable,
    /// This process's mark in Redis.
    owner: String,
    /// Consumed as far as this process knows: its own claims, keys found set, local claims.
    known: ConsumedSet,
    /// Claimed by this process (in Redis or locally): the per-process gate. A take wins only
    /// if it also adds the digest here, so a Redis win and a concurrent local claim (whose
    /// call timed out) cannot both be accepted.
    mine: ConsumedSet,
    /// Local claims not yet in Redis (a subset of `mine`, so bounded by the ticket set).
    pending: Mutex<HashSet<[u8; 32]>>,
    wake: Notify,
    streak: Streak,
    metrics: FallbackMetrics,
}

/// What one backfill round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackfillReport {
    pub written: usize,
    pub conflicts: usize,
    /// Still pending (Redis stopped answering mid-round, or more than one batch).
    pub pending: usize,
}

impl RedisLedger {
    pub fn new(
        client: RedisClient,
        ttl: Duration,
        on_unavailable: OnUnavailable,
        metrics: FallbackMetrics,
    ) -> Self {
        let mut id = [0u8; 8];
        // Without OS randomness two replicas could share an id; the process id still
        // separates them on one host, and conflicts stay detectable across hosts mostly.
        if getrandom::fill(&mut id).is_err() {
            id[..4].copy_from_slice(&std::process::id().to_le_bytes());
        }
        Self {
            inner: Arc::new(Inner {
                client,
                ttl_s: ttl.as_secs().max(1),
                on_unavailable,
                owner: hex::encode(id),
                known: ConsumedSet::default(),
                mine: ConsumedSet::default(),
                pending: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                streak: Streak::default(),
                metrics,
            }),
        }
    }

    pub fn known(&self) -> &ConsumedSet {
        &self.inner.known
    }

    pub fn reachable(&self) -> bool {
        self.inner.client.reachable()
    }

    /// Local claims still waiting to be written to Redis.
    pub fn pending(&self) -> usize {
        self.lock_pending().len()
    }

    fn key(&self, digest: &TicketDigest) -> String {
        // Built in one buffer: this runs on every fallback connect.
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits, and hex digits are ASCII.
        let _ = hex::encode_to_slice(digest.as_bytes(), &mut hex);
        let hex = std::str::from_utf8(&hex).unwrap_or_default();
        self.inner.client.key_of(&[KEY_SUFFIX, hex])
    }

    /// `SET key owner NX EX ttl`: true when this call set it.
    async fn set_nx(&self, digest: &TicketDigest) -> Result<bool, crate::redis_client::CallError> {
        let mut set = redis::cmd("SET");
        set.arg(self.key(digest))
            .arg(self.inner.owner.as_str())
            .arg("NX")
            .arg("EX")
            .arg(self.inner.ttl_s);
        self.inner
            .client
            .call(|mut c| async move { set.query_async::<Value>(&mut c).await })
            .await
            .map(|v| v != Value::Nil)
    }

    pub async fn claim(&self, digest: &TicketDigest) -> Result<Claim, LedgerError> {
        let inner = &self.inner;
        if inner.known.contains(digest) {
            return Ok(Claim::AlreadyClaimed);
        }
        match self.set_nx(digest).await {
            Ok(set) => {
                self.answered();
                inner.known.insert(digest);
                Ok(if set && inner.mine.insert(digest) {
                    Claim::Won
                } else {
                    Claim::AlreadyClaimed
                })
            }
            Err(e) => {
                inner
                    .metrics
                    .ledger_error(LedgerKind::Redis, LedgerOp::Claim);
                inner.metrics.ledger_reachable.set(0);
                let first = inner.streak.failed();
                match inner.on_unavailable {
                    OnUnavailable::Deny => {
                        if first {
                            tracing::warn!(error = %e, "Redis does not answer; refusing fallback tickets (FALLBACK_LEDGER_UNAVAILABLE=deny)");
                        }
                        Err(LedgerError::Unavailable)
                    }
                    OnUnavailable::Local => {
                        if first {
                            tracing::warn!(error = %e, "Redis does not answer; claiming fallback tickets in this process until it does (FALLBACK_LEDGER_UNAVAILABLE=local)");
                        }
                        inner.known.insert(digest);
                        if !inner.mine.insert(digest) {
                            return Ok(Claim::AlreadyClaimed);
                        }
                        self.lock_pending().insert(*digest.as_bytes());
                        inner.metrics.ledger_local_claims.inc();
                        inner.wake.notify_one();
                        Ok(Claim::Won)
                    }
                }
            }
        }
    }

    fn answered(&self) {
        self.inner.metrics.ledger_reachable.set(1);
        if self.inner.streak.succeeded() {
            tracing::info!("Redis answers again; fallback claims go to Redis");
        }
    }

    /// Writes up to one batch of pending local claims to Redis.
    pub async fn backfill_once(&self) -> BackfillReport {
        let batch: Vec<TicketDigest> = self
            .lock_pending()
            .iter()
            .take(BACKFILL_BATCH)
            .map(|d| TicketDigest::from_bytes(*d))
            .collect();
        let mut report = BackfillReport::default();
        for digest in batch {
            match self.backfill_one(&digest).await {
                Ok(conflict) => {
                    self.lock_pending().remove(digest.as_bytes());
                    report.written += usize::from(!conflict);
                    report.conflicts += usize::from(conflict);
                }
                Err(()) => break,
            }
        }
        report.pending = self.pending();
        report
    }

    /// Ok(true) when another replica had claimed it.
    async fn backfill_one(&self, digest: &TicketDigest) -> Result<bool, ()> {
        let inner = &self.inner;
        let fail = |e: crate::redis_client::CallError| {
            inner
                .metrics
                .ledger_error(LedgerKind::Redis, LedgerOp::Backfill);
            tracing::debug!(error = %e, "backfill of local fallback claims paused: Redis does not answer");
        };
        if self.set_nx(digest).await.map_err(fail)? {
            self.answered();
            return Ok(false);
        }
        let key = self.key(digest);
        let holder: Option<String> = inner
            .client
            .call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
            .map_err(fail)?;
        self.answered();
        if holder.as_deref() == Some(inner.owner.as_str()) {
            // Our own earlier SET applied although its answer was lost.
            return Ok(false);
        }
        inner.metrics.ledger_conflicts.inc();
        tracing::warn!(
            ticket = %digest.short_hex(),
            "fallback ticket was claimed by another replica while Redis was unreachable: used twice"
        );
        Ok(true)
    }

    /// Runs until `stop`: while local claims are pending, writes them every second.
    pub fn spawn_backfill(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let ledger = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = ledger.inner.wake.notified() => {}
                }
                while ledger.pending() > 0 {
                    let report = tokio::select! {
                        () = stop.cancelled() => return,
                        report = ledger.backfill_once() => report,
                    };
                    if report.written + report.conflicts > 0 {
                        tracing::info!(
                            written = report.written,
                            conflicts = report.conflicts,
                            pending = report.pending,
                            "local fallback claims written to Redis"
                        );
                    }
                    if report.pending > 0 {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(BACKFILL_PAUSE) => {}
                        }
                    }
                }
            }
        })
    }

    /// Tickets of `set` consumed by any replica. Redis is asked about every ticket not yet
    /// known consumed, in whichever way visits fewer keys: one pipelined `EXISTS` per such
    /// ticket, or a `SCAN` of the ledger's own keys. A pool is usually far larger than what
    /// has been consumed from it, so while Redis holds fewer keys than that (the usual case),
    /// a recount costs the ledger's size, not the pool's: a million-ticket pool is not a
    /// million `EXISTS` per replica on every reload tick. Keys found are remembered.
    pub async fn count_consumed(&self, set: &TicketSet) -> Result<usize, LedgerError> {
        let inner = &self.inner;
        let fail = |e: crate::redis_client::CallError| {
            inner
                .metrics
                .ledger_error(LedgerKind::Redis, LedgerOp::Count);
            inner.metrics.ledger_reachable.set(0);
            tracing::debug!(error = %e, "cannot count consumed fallback tickets in Redis");
            LedgerError::Unavailable
        };
        let unknown = set.len() - inner.known.count_in(set);
        let keyspace: u64 = inner
            .client
            .call(|mut c| async move { redis::cmd("DBSIZE").query_async(&mut c).await })
            .await
            .map_err(fail)?;
        match count_by(unknown, keyspace) {
            CountBy::Exists => self.find_by_exists(set).await,
            CountBy::Scan => self.find_by_scan(set).await,
        }
        .map_err(fail)?;
        self.answered();
        Ok(inner.known.count_in(set))
    }

    /// `EXISTS` for every ticket of `set` not known consumed, `COUNT_BATCH` per round trip.
    async fn find_by_exists(&self, set: &TicketSet) -> Result<(), crate::redis_client::CallError> {
        let inner = &self.inner;
        let mut chunk = Vec::with_capacity(COUNT_BATCH);
        let mut digests = set.iter().peekable();
        while digests.peek().is_some() {
            chunk.clear();
            chunk.extend(digests.by_ref().take(COUNT_BATCH));
            let unknown = inner.known.unknown(&chunk);
            if unknown.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for d in &unknown {
                pipe.cmd("EXISTS").arg(self.key(d));
            }
            let found: Vec<bool> = inner
                .client
                .call(|mut c| async move { pipe.query_async(&mut c).await })
                .await?;
            for (d, exists) in unknown.iter().zip(found) {
                if exists {
                    inner.known.insert(d);
                }
            }
        }
        Ok(())
    }

    /// `SCAN` over this service's consumed marks, `SCAN_PAGE` keys visited per round trip;
    /// marks of tickets outside `set` (rotated out, not yet expired) are not remembered.
    async fn find_by_scan(&self, set: &TicketSet) -> Result<(), crate::redis_client::CallError> {
        let inner = &self.inner;
        let prefix = inner.client.key(KEY_SUFFIX);
        let pattern = format!("{}*", glob_escape(&prefix));
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_PAGE);
            let (next, keys): (u64, Vec<Vec<u8>>) = inner
                .client
                .call(|mut c| async move { scan.query_async(&mut c).await })
                .await?;
            for key in keys {
                let digest = key
                    .strip_prefix(prefix.as_bytes())
                    .and_then(TicketDigest::from_hex);
                if let Some(digest) = digest.filter(|d| set.contains(d)) {
                    inner.known.insert(&digest);
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// How a recount finds consumed tickets in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CountBy {
    /// One `EXISTS` per ticket not known consumed.
    Exists,
    /// A `SCAN` of the ledger's keys, which visits every key in the database.
    Scan,
}

/// Whichever visits fewer keys: `unknown` tickets to ask about, or `keyspace` keys to scan.
fn count_by(unknown: usize, keyspace: u64) -> CountBy {
    if keyspace < u64::try_from(unknown).unwrap_or(u64::MAX) {
        CountBy::Scan
    } else {
        CountBy::Exists
    }
}

/// `text` as a Redis glob that matches only itself: `REDIS_KEY_PREFIX` may hold `*`, `?`,
/// `[` or `\`.
fn glob_escape(text: &str) -> String {
    let mut glob = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            glob.push('\\');
        }
        glob.push(c);
    }
    glob
}

#[cfg(test)]
mod tests;
