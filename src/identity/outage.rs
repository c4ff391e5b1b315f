//! The outage detector: tracks the current unbroken streak of failed identity-service calls
//! and says when it has lasted longer than the degraded window.
//!
//! Only unreachability feeds a streak (see `outcome`); any answer ends it. While degraded,
//! exactly one request at a time may still call identity-service (the "slot"), so recovery
//! is noticed on the next real call without making every caller wait out the deadline.
//!
//! After a failed call the slot stays closed for [`SLOT_SPACING`]: when identity-service
//! refuses connections at once, "one at a time" alone meant a new connection attempt per
//! request, about a thousand a second per replica, which cost a sixth of the service's CPU
//! in degraded mode and would meet a recovering identity-service as a thundering herd.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::clock::Clock;

/// How long the slot stays closed after a failed call while degraded: at most ten request
/// calls a second, and recovery noticed at most this much later.
pub const SLOT_SPACING: Duration = Duration::from_millis(100);

/// What `/health`, metrics and the connect decision see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutageSnapshot {
    pub degraded: bool,
    pub consecutive_failures: u64,
    /// Time since the first failure of the current streak; `None` without a streak.
    pub age: Option<Duration>,
}

/// Cheap-to-clone handle.
#[derive(Clone)]
pub struct OutageDetector {
    inner: Arc<Inner>,
}

struct Inner {
    window: Duration,
    clock: Clock,
    // std Mutex: every critical section is a few field updates, never across `.await`.
    state: Mutex<State>,
    /// Whether a failure streak is open; the background probe waits on it.
    streak_open: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    streak_started: Option<Instant>,
    failures: u64,
    slot_taken: bool,
    /// While degraded: no slot before this (set by a failed call).
    next_slot: Option<Instant>,
    /// Set once the degraded transition has been logged, so it is logged once per outage.
    announced: bool,
}

/// Degraded when the streak is strictly older than the window.
pub fn is_past_window(streak_started: Option<Instant>, now: Instant, window: Duration) -> bool {
    streak_started.is_some_and(|start| now.saturating_duration_since(start) > window)
}

/// Held by the one request allowed to call identity-service while degraded.
pub struct Slot {
    detector: Option<OutageDetector>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(detector) = &self.detector {
            detector.lock().slot_taken = false;
        }
    }
}

impl OutageDetector {
    pub fn new(window: Duration, clock: Clock) -> Self {
        let (streak_open, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                window,
                clock,
                state: Mutex::new(State::default()),
                streak_open,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// May this request call identity-service? `None`: degraded and the slot is taken, so go
    /// straight to the fallback decision.
    pub fn admit(&self) -> Option<Slot> {
        let now = self.inner.clock.now();
        let mut state = self.lock();
        if !is_past_window(state.streak_started, now, self.inner.window) {
            return Some(Slot { detector: None });
        }
        if state.slot_taken || state.next_slot.is_some_and(|next| now < next) {
            return None;
        }
        state.slot_taken = true;
        Some(Slot {
            detector: Some(self.clone()),
        })
    }

    /// Records a finished call: `reached` is false only for unreachability.
    pub fn record(&self, reached: bool) {
        let now = self.inner.clock.now();
        let mut state = self.lock();
        if reached {
            state.next_slot = None;
            if let Some(start) = state.streak_started.take() {
                tracing::info!(
                    outage_seconds = now.saturating_duration_since(start).as_secs_f64(),
                    failures = state.failures,
                    "identity-service answered again; failure streak closed"
                );
                state.failures = 0;
                state.announced = false;
                drop(state);
                self.inner.streak_open.send_replace(false);
            }
            return;
        }
        state.failures += 1;
        if is_past_window(state.streak_started, now, self.inner.window) {
            state.next_slot = Some(now + SLOT_SPACING);
        }
        if state.streak_started.is_none() {
            state.streak_started = Some(now);
            tracing::warn!("identity-service unreachable; failure streak opened");
            drop(state);
            self.inner.streak_open.send_replace(true);
        }
    }

    pub fn snapshot(&self) -> OutageSnapshot {
        let now = self.inner.clock.now();
        let mut state = self.lock();
        let degraded = is_past_window(state.streak_started, now, self.inner.window);
        if degraded && !state.announced {
            state.announced = true;
            tracing::warn!(
                window_ms = u64::try_from(self.inner.window.as_millis()).unwrap_or(u64::MAX),
                failures = state.failures,
                "identity-service outage passed the degraded window; fallback pool tickets are now accepted"
            );
        }
        OutageSnapshot {
            degraded,
            consecutive_failures: state.failures,
            age: state
                .streak_started
                .map(|start| now.saturating_duration_since(start)),
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.snapshot().degraded
    }

    /// Whether a failure streak is open (degraded or not yet).
    pub fn streak_open(&self) -> bool {
        *self.inner.streak_open.borrow()
    }

    /// Resolves when a failure streak is open.
    pub async fn wait_for_streak(&self) {
        let mut rx = self.inner.streak_open.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|open| *open).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(5);

    fn detector() -> (OutageDetector, Clock) {
        let clock = Clock::manual();
        (OutageDetector::new(WINDOW, clock.clone()), clock)
    }

    #[test]
    fn window_boundary_is_strict() {
        let start = Instant::now();
        assert!(!is_past_window(None, start, WINDOW));
        assert!(!is_past_window(Some(start), start + WINDOW, WINDOW));
        assert!(is_past_window(
            Some(start),
            start + WINDOW + Duration::from_millis(1),
            WINDOW
        ));
    }

    #[test]
    fn age_counts_from_the_first_failure_of_the_streak() {
        let (d, clock) = detector();
        d.record(false);
        clock.advance(Duration::from_secs(4));
        d.record(false);
        clock.advance(Duration::from_secs(1));
        assert!(!d.is_degraded(), "exactly the window is not past it");
        clock.advance(Duration::from_millis(1));
        let snap = d.snapshot();
        assert!(snap.degraded);
        assert_eq!(snap.consecutive_failures, 2);
    }

    #[test]
    fn any_answer_resets_the_streak() {
        let (d, clock) = detector();
        d.record(false);
        clock.advance(Duration::from_secs(6));
        assert!(d.is_degraded());
        d.record(true);
        let snap = d.snapshot();
        assert!(!snap.degraded && snap.consecutive_failures == 0 && snap.age.is_none());
        assert!(!d.streak_open());
        // A new streak starts its own clock.
        d.record(false);
        clock.advance(Duration::from_secs(2));
        assert!(!d.is_degraded());
    }

    #[test]
    fn a_failed_call_while_degraded_closes_the_slot_for_the_spacing_an_answer_opens_it() {
        let (d, clock) = detector();
        d.record(false);
        clock.advance(WINDOW + Duration::from_millis(1));
        let slot = d.admit().expect("the first caller gets the slot");
        d.record(false);
        drop(slot);
        assert!(d.admit().is_none(), "closed right after a failure");
        clock.advance(SLOT_SPACING - Duration::from_millis(1));
        assert!(d.admit().is_none(), "still closed within the spacing");
        clock.advance(Duration::from_millis(1));
        let slot = d.admit().expect("open once the spacing has passed");
        drop(slot);
        // Before the window a failure spaces nothing: every caller still calls.
        d.record(true);
        d.record(false);
        assert!(d.admit().is_some() && d.admit().is_some());
    }

    #[test]
    fn while_degraded_one_request_holds_the_slot() {
        let (d, clock) = detector();
        assert!(
            d.admit().is_some() && d.admit().is_some(),
            "healthy: everyone calls"
        );
        d.record(false);
        clock.advance(Duration::from_secs(6));
        let slot = d.admit().expect("first request gets the slot");
        assert!(d.admit().is_none(), "second request bypasses");
        drop(slot);
        assert!(d.admit().is_some(), "slot released");
    }

    #[tokio::test]
    async fn wait_for_streak_resolves_once_a_failure_is_recorded() {
        let (d, _clock) = detector();
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait_for_streak().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        d.record(false);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
