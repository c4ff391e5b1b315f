//! The per-process ledger, and the digest set the other ledgers keep in memory too.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::Claim;
use crate::fallback::set::TicketSet;
use crate::fallback::TicketDigest;

/// Digests known consumed. A cheap-to-clone handle; inserting is the one locked step that
/// makes a claim single use within the process.
#[derive(Clone, Default)]
pub struct ConsumedSet {
    // std Mutex: one hash-set operation per lock, never held across `.await`.
    inner: Arc<Mutex<HashSet<[u8; 32]>>>,
}

impl ConsumedSet {
    /// True when this call added it (the claim is this caller's).
    pub fn insert(&self, digest: &TicketDigest) -> bool {
        self.lock().insert(*digest.as_bytes())
    }

    pub fn contains(&self, digest: &TicketDigest) -> bool {
        self.lock().contains(digest.as_bytes())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many tickets of `set` are in here.
    pub fn count_in(&self, set: &TicketSet) -> usize {
        let consumed = self.lock();
        // Walk the smaller side: usually the consumed set.
        if consumed.len() < set.len() {
            consumed
                .iter()
                .filter(|d| set.contains(&TicketDigest::from_bytes(**d)))
                .count()
        } else {
            set.iter()
                .filter(|d| consumed.contains(d.as_bytes()))
                .count()
        }
    }

    /// Every digest in here (a copy).
    pub fn digests(&self) -> Vec<TicketDigest> {
        self.lock()
            .iter()
            .map(|d| TicketDigest::from_bytes(*d))
            .collect()
    }

    /// Of `digests`, those not in here.
    pub fn unknown(&self, digests: &[TicketDigest]) -> Vec<TicketDigest> {
        let consumed = self.lock();
        digests
            .iter()
            .filter(|d| !consumed.contains(d.as_bytes()))
            .copied()
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<[u8; 32]>> {
        // A poisoned lock only means another thread panicked mid-insert; the set is intact.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `FALLBACK_LEDGER=memory`: once per process; a restart forgets.
#[derive(Clone, Default)]
pub struct MemoryLedger {
    consumed: ConsumedSet,
}

impl MemoryLedger {
    pub fn claim(&self, digest: &TicketDigest) -> Claim {
        if self.consumed.insert(digest) {
            Claim::Won
        } else {
            Claim::AlreadyClaimed
        }
    }

    pub fn consumed(&self) -> &ConsumedSet {
        &self.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_digests_of_the_set() {
        let consumed = ConsumedSet::default();
        for t in ["a", "b", "gone"] {
            assert!(consumed.insert(&TicketDigest::of(t.as_bytes())));
        }
        assert!(!consumed.insert(&TicketDigest::of(b"a")));
        let set = TicketSet::from_digests(
            ["a", "b", "c", "d", "e"]
                .iter()
                .map(|t| *TicketDigest::of(t.as_bytes()).as_bytes())
                .collect(),
        );
        assert_eq!(consumed.count_in(&set), 2);
        let small = TicketSet::from_digests(vec![*TicketDigest::of(b"a").as_bytes()]);
        assert_eq!(consumed.count_in(&small), 1);
    }
}
