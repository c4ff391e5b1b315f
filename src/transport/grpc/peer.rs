//! One gRPC connection as the listener sees it: in the connection table (for the cap and for
//! eviction, as the HTTP listener's), idle since when, and what is rate-limited in its logs.
//!
//! Why eviction: a client that opens connections and sends nothing past the HTTP/2 preface
//! would otherwise fill `HTTP_MAX_CONNECTIONS` and lock Centrifugo out (it reconnects after
//! an idle GOAWAY and would find no room). At the cap the connection idle the longest is
//! closed instead; one with a call in flight never is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::log_limit::LogLimit;
use crate::transport::http::serve::table::Evictable;

/// One WARN of a kind at most this often across the listener; the ones in between are
/// counted in the next.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// A connection's state shared with the table.
pub struct Peer {
    /// `None` while a call is in flight.
    idle_since: Mutex<Option<Instant>>,
    evicted: AtomicBool,
    evicting: Notify,
}

impl Peer {
    pub fn new(now: Instant) -> Self {
        Self {
            idle_since: Mutex::new(Some(now)),
            evicted: AtomicBool::new(false),
            evicting: Notify::new(),
        }
    }

    fn set(&self, idle_since: Option<Instant>) {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = idle_since;
    }

    /// A call started on a connection that had none.
    pub fn busy(&self) {
        self.set(None);
    }

    /// The last call in flight ended at `now`.
    pub fn idle(&self, now: Instant) {
        self.set(Some(now));
    }

    /// Resolves once the table has chosen this connection to close.
    pub async fn evicted(&self) {
        self.evicting.notified().await;
    }
}

impl Evictable for Peer {
    fn waiting_since(&self) -> Option<Instant> {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        // A stored permit: the connection sees it even if it is not waiting right now.
        self.evicting.notify_one();
    }

    fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }
}

/// The WARNs a peer can provoke at will, each at most once per [`WARN_EVERY`] across the
/// listener (the metrics still count every event): one connection sending unauthenticated
/// calls in a loop wrote 38k lines in 5 s before.
pub struct Warnings {
    unauthenticated: Mutex<LogLimit>,
    resets: Mutex<LogLimit>,
}

impl Default for Warnings {
    fn default() -> Self {
        Self {
            unauthenticated: Mutex::new(LogLimit::new(WARN_EVERY)),
            resets: Mutex::new(LogLimit::new(WARN_EVERY)),
        }
    }
}

impl Warnings {
    fn admit(limit: &Mutex<LogLimit>) -> Option<u64> {
        limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(std::time::Instant::now())
    }

    /// `Some(held back since the last one)` when an unauthenticated call is to be logged.
    pub fn unauthenticated(&self) -> Option<u64> {
        Self::admit(&self.unauthenticated)
    }

    /// The same for a connection closed for resetting too many streams.
    pub fn resets(&self) -> Option<u64> {
        Self::admit(&self.resets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::http::serve::table::{Room, Table};
    use std::sync::Arc;

    #[test]
    fn the_table_evicts_the_longest_idle_peer_and_never_a_busy_one() {
        let start = Instant::now();
        let table: Table<Peer> = Table::default();
        let (older, newer, busy) = (
            Arc::new(Peer::new(start)),
            Arc::new(Peer::new(start + Duration::from_secs(1))),
            Arc::new(Peer::new(start)),
        );
        busy.busy();
        for (id, peer) in [(1, &busy), (2, &newer), (3, &older)] {
            table.add(id, peer.clone());
        }
        assert_eq!(table.make_room(3), Room::Evicted);
        assert!(older.is_evicted() && !newer.is_evicted() && !busy.is_evicted());
        assert_eq!(table.make_room(3), Room::Freeing);
        table.remove(3);
        // Idle again later than `newer`: `newer` is now the longest idle.
        busy.idle(start + Duration::from_secs(2));
        assert_eq!(table.make_room(2), Room::Evicted);
        assert!(newer.is_evicted());
        table.remove(2);
        busy.busy();
        assert_eq!(table.make_room(1), Room::Full);
    }

    #[test]
    fn each_warning_kind_is_limited_on_its_own() {
        let warnings = Warnings::default();
        assert_eq!(warnings.unauthenticated(), Some(0));
        assert_eq!(warnings.unauthenticated(), None);
        assert_eq!(warnings.resets(), Some(0));
        assert_eq!(warnings.resets(), None);
    }
}
