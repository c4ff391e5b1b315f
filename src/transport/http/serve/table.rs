//! The connections open on one listener. A connection stays listed until its socket is
//! closed, so the cap counts descriptors actually held, and when the table is full the one
//! that has waited longest without a request in flight can be chosen to make room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus::IntGauge;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::conn::Activity;
#[cfg(test)]
use super::conn::Phase;

/// The open connections, by id, for the cap and for eviction. A connection stays in it until
/// its socket is closed, so its size is the number of descriptors held.
#[derive(Clone, Default)]
pub(super) struct Table(Arc<TableInner>);

#[derive(Default)]
struct TableInner {
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    /// Signalled each time a connection closes.
    freed: Notify,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Room {
    Free,
    /// The longest-waiting connection was just told to close; its slot follows shortly.
    Evicted,
    /// A connection told to close earlier has not closed yet; its slot follows shortly.
    Freeing,
    /// Every connection is serving a request.
    Full,
}

impl Table {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.0.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn insert(&self, id: u64) -> Arc<Activity> {
        let activity = Arc::new(Activity::new(Instant::now()));
        self.open().insert(id, activity.clone());
        activity
    }

    pub(super) fn remove(&self, id: u64) {
        self.open().remove(&id);
        self.0.freed.notify_one();
    }

    pub(super) fn has_room(&self, max: usize) -> bool {
        self.open().len() < max
    }

    /// Resolves after some connection has closed (possibly before this was called).
    pub(super) async fn freed(&self) {
        self.0.freed.notified().await;
    }

    /// Makes room for one more connection under `max`. The scan is linear, but only runs
    /// while the table is full.
    pub(super) fn make_room(&self, max: usize) -> Room {
        let open = self.open();
        if open.len() < max {
            return Room::Free;
        }
        if open.values().any(|activity| activity.is_evicted()) {
            return Room::Freeing;
        }
        let oldest = open
            .values()
            .filter_map(|activity| Some((activity.phase().waiting_since()?, activity)))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, activity)) => {
                activity.evict();
                Room::Evicted
            }
            None => Room::Full,
        }
    }

    #[cfg(test)]
    pub(super) fn count(&self, matches: impl Fn(Phase) -> bool) -> usize {
        self.open()
            .values()
            .filter(|activity| matches(*activity.phase()))
            .count()
    }
}

/// Held by a connection task: leaving the table and the gauge happens however it ends.
pub(super) struct Open {
    pub(super) table: Table,
    pub(super) id: u64,
    pub(super) gauge: IntGauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.table.remove(self.id);
        self.gauge.dec();
    }
}
