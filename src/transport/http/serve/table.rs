//! The connections open on one listener. A connection stays listed until its socket is
//! closed, so the cap counts descriptors actually held, and when the table is full the one
//! that has waited longest without a request in flight can be chosen to make room. The gRPC
//! listener keeps its connections in one too, with its own idea of waiting (`Evictable`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus::IntGauge;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::conn::Activity;
#[cfg(test)]
use super::conn::Phase;

/// What the table needs to know of a connection to choose one to close.
pub(crate) trait Evictable {
    /// Since when it has been waiting with nothing in flight; `None` while serving.
    fn waiting_since(&self) -> Option<Instant>;
    /// Tells it to close.
    fn evict(&self);
    fn is_evicted(&self) -> bool;
}

/// The open connections, by id, for the cap and for eviction. A connection stays in it until
/// its socket is closed, so its size is the number of descriptors held.
pub(crate) struct Table<A = Activity>(Arc<TableInner<A>>);

impl<A> Clone for Table<A> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<A> Default for Table<A> {
    fn default() -> Self {
        Self(Arc::new(TableInner {
            open: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        }))
    }
}

struct TableInner<A> {
    open: Mutex<HashMap<u64, Arc<A>>>,
    /// Signalled each time a connection closes.
    freed: Notify,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Room {
    Free,
    /// The longest-waiting connection was just told to close; its slot follows shortly.
    Evicted,
    /// A connection told to close earlier has not closed yet; its slot follows shortly.
    Freeing,
    /// Every connection is serving a request.
    Full,
}

impl Table<Activity> {
    pub(super) fn insert(&self, id: u64) -> Arc<Activity> {
        let activity = Arc::new(Activity::new(Instant::now()));
        self.add(id, activity.clone());
        activity
    }
}

impl<A: Evictable> Table<A> {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, Arc<A>>> {
        self.0.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn add(&self, id: u64, connection: Arc<A>) {
        self.open().insert(id, connection);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.open().remove(&id);
        self.0.freed.notify_one();
    }

    pub(crate) fn has_room(&self, max: usize) -> bool {
        self.open().len() < max
    }

    /// Resolves after some connection has closed (possibly before this was called).
    pub(crate) async fn freed(&self) {
        self.0.freed.notified().await;
    }

    /// Makes room for one more connection under `max`. The scan is linear, but only runs
    /// while the table is full.
    pub(crate) fn make_room(&self, max: usize) -> Room {
        let open = self.open();
        if open.len() < max {
            return Room::Free;
        }
        if open.values().any(|activity| activity.is_evicted()) {
            return Room::Freeing;
        }
        let oldest = open
            .values()
            .filter_map(|activity| Some((activity.waiting_since()?, activity)))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, activity)) => {
                activity.evict();
                Room::Evicted
            }
            None => Room::Full,
        }
    }
}

impl Table<Activity> {
    #[cfg(test)]
    pub(super) fn count(&self, matches: impl Fn(Phase) -> bool) -> usize {
        self.open()
            .values()
            .filter(|activity| matches(*activity.phase()))
            .count()
    }
}

/// Held by a connection task: leaving the table (and the gauge, if any) happens however it
/// ends.
pub(crate) struct Open<A: Evictable = Activity> {
    pub(crate) table: Table<A>,
    pub(crate) id: u64,
    pub(crate) gauge: Option<IntGauge>,
}

impl<A: Evictable> Drop for Open<A> {
    fn drop(&mut self) {
        self.table.remove(self.id);
        if let Some(gauge) = &self.gauge {
            gauge.dec();
        }
    }
}
