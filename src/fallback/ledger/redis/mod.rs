//! `FALLBACK_LEDGER=redis`: one atomic claim script per take on
//! `<prefix>fallback:used:<digest>`, so exactly one replica in the cluster wins a ticket,
//! across restarts.
//!
//! Each claim's value names its attempt (`<process id>:<attempt>`). A claim the caller was
//! told failed (`deny`, Redis slower than `REDIS_TIMEOUT_MS`) is released: a refusal mark
//! for that attempt stops it from landing later, and a landed one is deleted, so a ticket
//! whose connect was answered "unavailable" stays usable (`writeback`).
//!
//! While Redis does not answer, `FALLBACK_LEDGER_UNAVAILABLE` decides: `deny` fails closed,
//! `local` claims in process memory (once per process) and keeps the claim pending until it
//! is written back to Redis, pipelined, before Redis decides claims again. A pending claim
//! that finds the key held by another replica was used twice during the partition: a
//! conflict, counted, and summarised in one WARN per write-back.

mod durability;
mod writeback;

pub use self::durability::risks;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use self::durability::Risks;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::Script;
use tokio::sync::Notify;

use super::memory::ConsumedSet;
use super::{Claim, LedgerError};
use crate::fallback::config::{LedgerKind, OnUnavailable};
use crate::fallback::metrics::{FallbackMetrics, LedgerOp};
use crate::fallback::set::TicketSet;
use crate::fallback::TicketDigest;
use crate::redis_client::{CallError, RedisClient};

/// Keys are `<REDIS_KEY_PREFIX>fallback:used:<hex SHA-256 of the ticket>`.
const KEY_SUFFIX: &str = "fallback:used:";
/// A refused attempt's mark: `<REDIS_KEY_PREFIX>fallback:refused:<hex>:<attempt value>`.
const REFUSED_SUFFIX: &str = "fallback:refused:";
/// How long a refusal mark outlives the refused attempt: far longer than any claim can
/// travel, short enough to leave nothing behind.
const REFUSED_TTL_S: u64 = 3600;
/// EXISTS per pipelined round trip when counting: small enough for one `REDIS_TIMEOUT_MS`.
const COUNT_BATCH: usize = 256;
/// Keys a `SCAN` call visits (a hint to Redis): small replies, each well inside one
/// `REDIS_TIMEOUT_MS`.
const SCAN_PAGE: usize = 1000;

/// KEYS[1]: the ticket's key; KEYS[2]: this attempt's refusal mark. ARGV[1]: this attempt's
/// value; ARGV[2]: the TTL in seconds; ARGV[3]: this process's value prefix (`<id>:`).
/// 1: the ticket is this process's (claimed now, or by an earlier attempt of this process,
/// whose value it takes over so that attempt's release leaves it); 0: another process holds
/// it; -1: this attempt was refused to its caller and must not land.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local held = redis.call('GET', KEYS[1])
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
if string.sub(held, 1, #ARGV[3]) == ARGV[3] then
  if held ~= ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL') end
  return 1
end
return 0
";

/// KEYS[1]: the ticket's key; KEYS[2]: the refused attempt's mark. ARGV[1]: that attempt's
/// value; ARGV[2]: the mark's TTL. Marks the attempt refused (a claim of it arriving later
/// does not land) and deletes its claim if it already landed.
const RELEASE: &str = r"
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

#[derive(Clone)]
pub struct RedisLedger {
    inner: Arc<Inner>,
}

struct Inner {
    client: RedisClient,
    ttl_s: u64,
    on_unavailable: OnUnavailable,
    /// This process's value prefix in Redis: `<random id>:`.
    owner: String,
    /// Numbers this process's claim attempts.
    attempts: AtomicU64,
    claim: Script,
    release: Script,
    /// Consumed as far as this process knows: its own claims, keys found set, local claims.
    known: ConsumedSet,
    /// Claimed by this process (in Redis or locally): the per-process gate. A take wins only
    /// if it also adds the digest here, so a Redis win and a concurrent local claim (whose
    /// call timed out) cannot both be accepted.
    mine: ConsumedSet,
    /// Local claims not yet in Redis (a subset of `mine`, so bounded by the ticket set).
    pending: Mutex<HashSet<[u8; 32]>>,
    /// Attempts answered "unavailable" whose claim may still land: digest -> attempt value.
    /// One per ticket (a later refused attempt of the same ticket replaces the earlier,
    /// whose value the later claim would have taken over), so bounded by the ticket set.
    releases: Mutex<HashMap<[u8; 32], String>>,
    wake: Notify,
    metrics: FallbackMetrics,
    /// The marker last read; `None` before the first read.
    generation: Mutex<Option<String>>,
    /// What Redis last said about keeping data.
    risks: Mutex<Option<Risks>>,
    data_losses: AtomicU64,
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
                owner: format!("{}:", hex::encode(id)),
                attempts: AtomicU64::new(0),
                claim: Script::new(CLAIM),
                release: Script::new(RELEASE),
                known: ConsumedSet::default(),
                mine: ConsumedSet::default(),
                pending: Mutex::new(HashSet::new()),
                releases: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                metrics,
                generation: Mutex::new(None),
                risks: Mutex::new(None),
                data_losses: AtomicU64::new(0),
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
        lock(&self.inner.pending).len()
    }

    /// Refused attempts whose release has not reached Redis yet.
    pub fn releases_pending(&self) -> usize {
        lock(&self.inner.releases).len()
    }

    fn hex(digest: &TicketDigest) -> [u8; 64] {
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(digest.as_bytes(), &mut hex);
        hex
    }

    fn key(&self, digest: &TicketDigest) -> String {
        // Built in one buffer: this runs on every fallback connect.
        let hex = Self::hex(digest);
        // Hex digits are ASCII.
        let hex = std::str::from_utf8(&hex).unwrap_or_default();
        self.inner.client.key_of(&[KEY_SUFFIX, hex])
    }

    fn refused_key(&self, digest: &TicketDigest, attempt: &str) -> String {
        let hex = Self::hex(digest);
        let hex = std::str::from_utf8(&hex).unwrap_or_default();
        self.inner
            .client
            .key_of(&[REFUSED_SUFFIX, hex, ":", attempt])
    }

    /// A value no other attempt (of this process or another) uses.
    fn next_attempt(&self) -> String {
        let n = self.inner.attempts.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:x}", self.inner.owner)
    }

    /// Adds one claim-script invocation for `digest` as `attempt` to `pipe`.
    fn push_claim(&self, pipe: &mut redis::Pipeline, digest: &TicketDigest, attempt: &str) {
        pipe.cmd("EVALSHA")
            .arg(self.inner.claim.get_hash())
            .arg(2)
            .arg(self.key(digest))
            .arg(self.refused_key(digest, attempt))
            .arg(attempt)
            .arg(self.inner.ttl_s)
            .arg(self.inner.owner.as_str());
    }

    /// The claim script for one attempt: 1 ours, 0 another's, -1 refused.
    async fn run_claim(&self, digest: &TicketDigest, attempt: &str) -> Result<i64, CallError> {
        let (key, refused) = (self.key(digest), self.refused_key(digest, attempt));
        let inner = &self.inner;
        let (script, ttl, owner) = (&inner.claim, inner.ttl_s, inner.owner.as_str());
        let (key, refused) = (&key, &refused);
        inner
            .client
            .call(move |mut c| async move {
                script
                    .key(key)
                    .key(refused)
                    .arg(attempt)
                    .arg(ttl)
                    .arg(owner)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
    }

    pub async fn claim(&self, digest: &TicketDigest) -> Result<Claim, LedgerError> {
        let inner = &self.inner;
        if inner.known.contains(digest) {
            return Ok(Claim::AlreadyClaimed);
        }
        // Claims made locally are written back before Redis decides again: until then a
        // ticket claimed here during the outage could be won in Redis by another replica.
        if inner.on_unavailable == OnUnavailable::Local && self.pending() > 0 {
            return Ok(self.claim_locally(digest));
        }
        let attempt = self.next_attempt();
        match self.run_claim(digest, &attempt).await {
            Ok(1) => {
                inner.metrics.ledger_reachable.set(1);
                inner.known.insert(digest);
                Ok(if inner.mine.insert(digest) {
                    Claim::Won
                } else {
                    Claim::AlreadyClaimed
                })
            }
            Ok(held) => {
                inner.metrics.ledger_reachable.set(1);
                if held != 0 {
                    // A fresh attempt has no refusal mark: Redis holds a stale one.
                    tracing::debug!(held, "claim script: unexpected answer for a fresh attempt");
                }
                inner.known.insert(digest);
                Ok(Claim::AlreadyClaimed)
            }
            Err(e) => {
                inner
                    .metrics
                    .ledger_error(LedgerKind::Redis, LedgerOp::Claim);
                inner.metrics.ledger_reachable.set(0);
                match inner.on_unavailable {
                    OnUnavailable::Deny => {
                        // The claim may still land (Redis slow, the reply lost): released,
                        // so the caller's retry finds the ticket usable.
                        if !matches!(e, CallError::Down) {
                            self.release_later(digest, attempt);
                        }
                        Err(LedgerError::Unavailable)
                    }
                    // A claim of this attempt landing later holds this process's value,
                    // which the write-back recognises as its own.
                    OnUnavailable::Local => Ok(self.claim_locally(digest)),
                }
            }
        }
    }

    /// Claims in process memory, pending until written back to Redis.
    fn claim_locally(&self, digest: &TicketDigest) -> Claim {
        let inner = &self.inner;
        inner.known.insert(digest);
        if !inner.mine.insert(digest) {
            return Claim::AlreadyClaimed;
        }
        let pending = {
            let mut pending = lock(&inner.pending);
            pending.insert(*digest.as_bytes());
            pending.len()
        };
        inner.metrics.ledger_pending_claims.set(gauge(pending));
        inner.metrics.ledger_local_claims.inc();
        inner.wake.notify_one();
        Claim::Won
    }

    /// Tickets of `set` consumed by any replica. Redis is asked about every ticket not yet
    /// known consumed, in whichever way visits fewer keys: one pipelined `EXISTS` per such
    /// ticket, or a `SCAN` of the ledger's own keys. A pool is usually far larger than what
    /// has been consumed from it, so while Redis holds fewer keys than that (the usual case),
    /// a recount costs the ledger's size, not the pool's: a million-ticket pool is not a
    /// million `EXISTS` per replica on every reload tick. Keys found are remembered.
    pub async fn count_consumed(&self, set: &TicketSet) -> Result<usize, LedgerError> {
        let inner = &self.inner;
        let fail = |e: CallError| {
            inner
                .metrics
                .ledger_error(LedgerKind::Redis, LedgerOp::Count);
            inner.metrics.ledger_reachable.set(0);
            tracing::debug!(error = %e, "cannot count consumed fallback tickets in Redis");
            LedgerError::Unavailable
        };
        // Whether Redis can lose marks, and whether it did since the last tick (which
        // re-asserts what this process knows before anything is counted).
        self.check_risks().await;
        self.check_generation().await.map_err(fail)?;
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
        inner.metrics.ledger_reachable.set(1);
        Ok(inner.known.count_in(set))
    }

    /// `EXISTS` for every ticket of `set` not known consumed, `COUNT_BATCH` per round trip.
    async fn find_by_exists(&self, set: &TicketSet) -> Result<(), CallError> {
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
            let pipe = &pipe;
            let found: Vec<bool> = inner
                .client
                .call(move |mut c| async move { pipe.query_async(&mut c).await })
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
    async fn find_by_scan(&self, set: &TicketSet) -> Result<(), CallError> {
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
            let scan = &scan;
            let (next, keys): (u64, Vec<Vec<u8>>) = inner
                .client
                .call(move |mut c| async move { scan.query_async(&mut c).await })
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
}

/// A count as a gauge value (saturating: a set never holds 2^63 digests).
fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
