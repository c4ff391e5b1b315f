//! The service's notion of time, injectable so that time-dependent decisions (the outage
//! window, expiry timestamps) are tested by moving a clock, not by sleeping.
//!
//! Only decisions read this clock. Timers that merely pace work (the probe interval, the
//! Validate deadline) use tokio's timers, which tests do not need to control.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: real time. `Some`: a frozen clock that moves only by `advance`.
    manual: Option<Arc<Manual>>,
}

#[derive(Debug)]
struct Manual {
    start: Instant,
    start_unix: Duration,
    offset_nanos: AtomicU64,
}

impl Clock {
    /// Real time.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock frozen at the current moment; it moves only when `advance` is called.
    pub fn manual() -> Self {
        Self {
            manual: Some(Arc::new(Manual {
                start: Instant::now(),
                start_unix: unix_now(),
                offset_nanos: AtomicU64::new(0),
            })),
        }
    }

    /// Moves a manual clock forward. No effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(m) = &self.manual {
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            m.offset_nanos.fetch_add(nanos, Ordering::SeqCst);
        }
    }

    /// Monotonic now, for measuring ages.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.start + m.offset(),
        }
    }

    /// Wall-clock Unix seconds, for `expire_at` values sent to Centrifugo.
    pub fn unix_seconds(&self) -> i64 {
        let since_epoch = match &self.manual {
            None => unix_now(),
            Some(m) => m.start_unix + m.offset(),
        };
        i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
    }
}

impl Manual {
    fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Ordering::SeqCst))
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual();
        let (t0, u0) = (clock.now(), clock.unix_seconds());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_secs(61));
        assert_eq!(clock.now() - t0, Duration::from_secs(61));
        assert_eq!(clock.unix_seconds() - u0, 61);
    }
}
