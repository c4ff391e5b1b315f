//! The background probe: while a failure streak is open, call identity-service with an empty
//! ticket every `IDENTITY_PROBE_INTERVAL_MS`, so recovery (or a deepening outage) is seen
//! even when no client is connecting. An empty ticket consumes nothing.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::Gateway;

/// Aborts the probe task when dropped, so it lives exactly as long as the application.
pub struct ProbeGuard(JoinHandle<()>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn spawn(gateway: Gateway, interval: Duration) -> ProbeGuard {
    ProbeGuard(tokio::spawn(async move {
        loop {
            // Idle (no timer at all) until a request sees the first failure.
            gateway.detector().wait_for_streak().await;
            tokio::time::sleep(interval).await;
            if gateway.detector().streak_open() {
                gateway.probe().await;
            }
        }
    }))
}
