//! Live reloads: every `FALLBACK_RELOAD_INTERVAL_S` and on demand (SIGHUP), each registered
//! target reloads itself. The fallback ticket set is one target; the channel policy file is
//! registered the same way through `hook`, so both follow one interval and one signal.
//!
//! One task runs the rounds, one at a time, and stops on its `CancellationToken`. Triggers
//! that arrive during a round coalesce into one more round.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::metrics::FallbackMetrics;

/// How a reload went (`realtime_fallback_reloads_total{result}`,
/// `realtime_channel_policy_reloads_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// New content replaced the old.
    Changed,
    /// The content is what is already loaded.
    Unchanged,
    /// Missing, unreadable or invalid: the last good version stays.
    Error,
}

impl ReloadResult {
    pub const ALL: [Self; 3] = [Self::Changed, Self::Unchanged, Self::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Changed => "changed",
            Self::Unchanged => "unchanged",
            Self::Error => "error",
        }
    }
}

/// What is reloaded: picks the metric a round's result is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTarget {
    FallbackPool,
    ChannelPolicy,
}

pub type ReloadFuture = Pin<Box<dyn Future<Output = ReloadResult> + Send>>;

/// Something the reload task refreshes. Implementations report how it went and keep their
/// last good state on error.
pub trait Reloadable: Send + Sync + 'static {
    fn target(&self) -> ReloadTarget;
    fn reload(&self) -> ReloadFuture;
}

/// A synchronous reload (say, re-reading and swapping the channel policy) as a target.
pub fn hook<F>(target: ReloadTarget, reload: F) -> Arc<dyn Reloadable>
where
    F: Fn() -> ReloadResult + Send + Sync + 'static,
{
    Arc::new(Hook { target, reload })
}

struct Hook<F> {
    target: ReloadTarget,
    reload: F,
}

impl<F> Reloadable for Hook<F>
where
    F: Fn() -> ReloadResult + Send + Sync + 'static,
{
    fn target(&self) -> ReloadTarget {
        self.target
    }

    fn reload(&self) -> ReloadFuture {
        let result = (self.reload)();
        Box::pin(std::future::ready(result))
    }
}

/// Handle to the reload task: trigger a round (SIGHUP) or wait for one (tests, admin).
#[derive(Clone)]
pub struct ReloadHandle {
    trigger: Arc<Notify>,
    started: Arc<AtomicU64>,
    finished: watch::Receiver<u64>,
}

impl ReloadHandle {
    /// Asks for a round as soon as the current one (if any) is over.
    pub fn trigger(&self) {
        self.trigger.notify_one();
    }

    /// Triggers a round and waits until a round that started after this call has finished.
    /// Returns at once if the task has stopped.
    pub async fn reload_now(&self) {
        let target = self.started.load(Ordering::SeqCst) + 1;
        self.trigger();
        let mut finished = self.finished.clone();
        let _ = finished.wait_for(|done| *done >= target).await;
    }
}

/// Spawns the reload task: one round at once (so a shared ledger's counts are fresh from
/// the start), then one every `interval` (`None`: only when triggered), until `stop`.
pub fn spawn(
    interval: Option<Duration>,
    targets: Vec<Arc<dyn Reloadable>>,
    metrics: FallbackMetrics,
    stop: CancellationToken,
) -> (ReloadHandle, tokio::task::JoinHandle<()>) {
    let trigger = Arc::new(Notify::new());
    let started = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = watch::channel(0u64);
    let handle = ReloadHandle {
        trigger: trigger.clone(),
        started: started.clone(),
        finished: done_rx,
    };
    let task = tokio::spawn(async move {
        let mut ticker = interval.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = trigger.notified() => {}
                    _ = async {
                        match ticker.as_mut() {
                            Some(t) => t.tick().await,
                            None => std::future::pending().await,
                        }
                    } => {}
                }
            }
            first = false;
            let round = started.fetch_add(1, Ordering::SeqCst) + 1;
            for target in &targets {
                let result = tokio::select! {
                    () = stop.cancelled() => return,
                    result = target.reload() => result,
                };
                metrics.reload(target.target(), result);
            }
            let _ = done_tx.send(round);
        }
    });
    (handle, task)
}

/// Triggers a round on every SIGHUP until `stop`.
pub fn spawn_sighup(
    handle: ReloadHandle,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = hangups.recv() => match got {
                    Some(()) => {
                        tracing::info!("SIGHUP: reloading the fallback tickets and the channel policy");
                        handle.trigger();
                    }
                    None => return,
                },
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn rounds_run_at_start_and_on_trigger_and_stop_on_the_token() {
        let registry = prometheus::Registry::new();
        let metrics = FallbackMetrics::new(&registry);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let policy = hook(ReloadTarget::ChannelPolicy, move || {
            if counted.fetch_add(1, Ordering::SeqCst) == 1 {
                ReloadResult::Error
            } else {
                ReloadResult::Unchanged
            }
        });
        let stop = CancellationToken::new();
        let (handle, task) = spawn(None, vec![policy], metrics.clone(), stop.clone());
        handle.reload_now().await;
        handle.reload_now().await;
        assert!(calls.load(Ordering::SeqCst) >= 2);
        assert_eq!(
            metrics.policy_reloads.with_label_values(&["error"]).get(),
            1
        );
        stop.cancel();
        task.await.expect("stops");
        // A stopped task never blocks a caller.
        handle.reload_now().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_interval_drives_rounds() {
        let metrics = FallbackMetrics::new(&prometheus::Registry::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let target = hook(ReloadTarget::FallbackPool, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            ReloadResult::Changed
        });
        let stop = CancellationToken::new();
        let (_handle, task) = spawn(
            Some(Duration::from_secs(30)),
            vec![target],
            metrics.clone(),
            stop.clone(),
        );
        // Paused time: sleeping advances the clock once every task is idle.
        tokio::time::sleep(Duration::from_secs(95)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 4, "at start, 30, 60, 90 s");
        assert_eq!(
            metrics.pool_reloads.with_label_values(&["changed"]).get(),
            4
        );
        stop.cancel();
        task.await.expect("stops");
    }
}
