//! The breaker in front of Redis, shared by the fallback ledger and the publish limiter.
//!
//! Closed (Redis answers): every call goes to Redis. One failed call opens it: from then on
//! calls fail at once, so the callers decide locally (`FALLBACK_LEDGER_UNAVAILABLE`, the
//! per-replica limiter) instead of each waiting out `REDIS_TIMEOUT_MS`, and a single probe
//! asks Redis once per `PROBE_INTERVAL` until it answers, which closes the breaker again.
//!
//! The state is a pair of atomics: the request path reads one `Relaxed` flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::log_limit::LogLimit;

/// How often the probe asks a Redis that does not answer: also the longest Redis stays
/// unused after it answers again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// A Redis flapping near the timeout opens and closes the breaker many times a minute; the
/// WARN that it stopped answering is written at most once per this interval.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Breaker {
    /// Closed: calls go to Redis.
    closed: AtomicBool,
    /// A probe task is running (at most one).
    probing: AtomicBool,
    /// Woken when the breaker closes, for the work that waits for Redis (the backfill).
    on_close: Notify,
    /// Limits the "Redis does not answer" WARN across flaps.
    warn: Mutex<LogLimit>,
    /// Whether the opening of the current streak was logged at WARN (its close then is too).
    warned: AtomicBool,
}

/// What a caller of `open` must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// This failure opened the breaker (it was closed).
    pub now: bool,
    /// Start the probe task: none is running.
    pub start_probe: bool,
    /// Log the opening at WARN: Some(openings held back since the last WARN).
    pub warn: Option<u64>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            closed: AtomicBool::new(true),
            probing: AtomicBool::new(false),
            on_close: Notify::new(),
            warn: Mutex::new(LogLimit::new(WARN_EVERY)),
            warned: AtomicBool::new(false),
        }
    }
}

impl Breaker {
    /// Whether calls go to Redis.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// A call failed (or a probe did).
    pub fn open(&self, now: Instant) -> Opened {
        let opened = self.closed.swap(false, Ordering::AcqRel);
        let start_probe = !self.probing.swap(true, Ordering::AcqRel);
        let warn = if opened {
            self.warn
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(now)
        } else {
            None
        };
        if opened {
            self.warned.store(warn.is_some(), Ordering::Relaxed);
        }
        Opened {
            now: opened,
            start_probe,
            warn,
        }
    }

    /// A call (or the probe) got an answer. True when this closed the breaker and its
    /// opening was logged at WARN (so the close is worth an INFO).
    pub fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.on_close.notify_waiters();
        self.warned.swap(false, Ordering::Relaxed)
    }

    /// The probe task ends (Redis answered, or the client is gone).
    pub fn probe_done(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// Waits until the breaker is closed.
    pub async fn closed(&self) {
        loop {
            let notified = self.on_close.notified();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_opens_one_probe_starts_and_an_answer_closes() {
        let b = Breaker::default();
        let t = Instant::now();
        assert!(b.is_closed());
        let first = b.open(t);
        assert_eq!(
            first,
            Opened {
                now: true,
                start_probe: true,
                warn: Some(0)
            }
        );
        assert!(!b.is_closed());
        // Further failures while open: no second probe, no log.
        assert_eq!(
            b.open(t),
            Opened {
                now: false,
                start_probe: false,
                warn: None
            }
        );
        assert!(b.close(), "the close of a warned opening is logged");
        assert!(!b.close(), "closing twice logs once");
        assert!(b.is_closed());
    }

    #[test]
    fn flapping_warns_once_per_interval() {
        let b = Breaker::default();
        let t = Instant::now();
        assert_eq!(b.open(t).warn, Some(0));
        b.probe_done();
        assert!(b.close());
        for n in 1..=5u64 {
            let o = b.open(t + Duration::from_secs(n));
            assert!(o.now && o.start_probe);
            assert_eq!(o.warn, None, "flap {n} is not logged");
            b.probe_done();
            assert!(!b.close(), "nor is its end");
        }
        assert_eq!(b.open(t + WARN_EVERY).warn, Some(5));
    }

    #[tokio::test]
    async fn waiters_wake_when_it_closes() {
        let b = std::sync::Arc::new(Breaker::default());
        b.open(Instant::now());
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        b.close();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
    }
}
