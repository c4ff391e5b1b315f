//! "At most one log line per interval": for failures that can repeat thousands of times a
//! second (accept errors, a full connection table, a collector that is down), so the warning
//! channel shows each problem without flooding, with a count of what was held back.

use std::time::{Duration, Instant};

/// "At most one per interval": which events to report, and how many were held back since
/// the last one reported.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// An event at `now`: `Some(held back before it)` when it is to be reported.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_interval_with_the_count_held_back() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut limit = LogLimit::new(Duration::from_secs(30));
        assert_eq!(limit.admit(at(0)), Some(0));
        assert_eq!(limit.admit(at(1)), None);
        assert_eq!(limit.admit(at(29_999)), None);
        assert_eq!(limit.admit(at(30_000)), Some(2));
        assert_eq!(limit.admit(at(30_001)), None);
        assert_eq!(limit.admit(at(90_000)), Some(1));
    }
}
