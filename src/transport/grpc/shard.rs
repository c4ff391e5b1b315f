//! Where gRPC connections run: a few single-threaded runtimes ("shards"), each on its own
//! thread with its own identity-service client, instead of the main runtime's workers.
//!
//! Why: Centrifugo multiplexes every proxy call of a node over one HTTP/2 connection, whose
//! calls run in one task (see `serve`). On the main runtime that task sits on one worker
//! while the identity client's tasks (tonic's buffer, hyper's connection) wake the other
//! worker for every call, and those hand-offs between threads cost the gRPC path about a
//! tenth more CPU per call than an HTTP call, whose sixteen connections keep both workers
//! busy (docs/benchmarks.md). On a shard a connection, its calls and the identity client
//! they use share one thread: nothing is handed across. Connections are spread over the
//! shards in turn, one shard per core, so several Centrifugo nodes still use every core.
//!
//! Everything else a call touches (the outage detector, pool, ledger, limiter, metrics,
//! secrets) is shared with the HTTP transport, so both give the same decisions. Dropping
//! `Shards` stops the runtimes, which drops whatever still runs on them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// One shard's way in: where to spawn a connection, and what it serves with (the gRPC
/// proxy, built on the shard).
pub struct Shard<T> {
    pub handle: Handle,
    pub state: Arc<T>,
}

impl<T> Clone for Shard<T> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            state: self.state.clone(),
        }
    }
}

/// The running shards.
pub struct Shards<T> {
    shards: Vec<Shard<T>>,
    next: AtomicUsize,
    /// Dropped (or sent) to stop each shard's runtime.
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl<T: Send + Sync + 'static> Shards<T> {
    /// Starts `count` shards (at least one). `make_state` runs inside each shard's runtime,
    /// so an identity client it builds spawns its tasks there.
    pub fn start<F>(count: usize, make_state: F) -> Result<Self, String>
    where
        F: Fn() -> Result<T, String> + Send + Sync + 'static,
    {
        let make_state = Arc::new(make_state);
        // The shards trace and log where the thread that starts them does: the global
        // subscriber in the service, a test's own subscriber in a test.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let mut shards = Self {
            shards: Vec::new(),
            next: AtomicUsize::new(0),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for index in 0..count.max(1) {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let make_state = make_state.clone();
            let dispatch = dispatch.clone();
            let thread = std::thread::Builder::new()
                .name(format!("grpc-shard-{index}"))
                .spawn(move || {
                    let _traced = tracing::dispatcher::set_default(&dispatch);
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("cannot start a runtime: {e}")));
                            return;
                        }
                    };
                    let state = {
                        let _inside = runtime.enter();
                        make_state()
                    };
                    let shard = state.map(|state| Shard {
                        handle: runtime.handle().clone(),
                        state: Arc::new(state),
                    });
                    let started = shard.is_ok();
                    let _ = ready_tx.send(shard);
                    if started {
                        // The shard's tasks run while this waits; a dropped sender stops it too.
                        let _ = runtime.block_on(stop_rx);
                    }
                })
                .map_err(|e| format!("cannot start a gRPC thread: {e}"))?;
            shards.threads.push(thread);
            shards.stops.push(stop_tx);
            let shard = ready_rx
                .recv()
                .map_err(|_| "a gRPC thread stopped while starting".to_owned())??;
            shards.shards.push(shard);
        }
        Ok(shards)
    }

    /// The shard for the next connection, in turn.
    pub fn next(&self) -> Shard<T> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        self.shards[index].clone()
    }

    /// How many shards run (one thread each).
    pub fn count(&self) -> usize {
        self.shards.len()
    }
}

impl<T> Drop for Shards<T> {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        // Handles keep nothing alive; the runtimes stop as their threads return.
        self.shards.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// What a shard's state saw when it was made.
    struct Made {
        thread: Option<String>,
        in_runtime: bool,
        /// Set when the state is dropped, which happens when its runtime's thread ends.
        dropped: Arc<AtomicBool>,
    }

    impl Drop for Made {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn each_shard_is_made_on_its_own_thread_and_runtime_and_runs_what_it_is_given() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let shards = Shards::start(2, move || {
            Ok(Made {
                thread: std::thread::current().name().map(str::to_owned),
                in_runtime: Handle::try_current().is_ok(),
                dropped: flag.clone(),
            })
        })
        .expect("started");
        assert_eq!(shards.count(), 2);
        let (a, b, c) = (shards.next(), shards.next(), shards.next());
        assert_eq!(a.state.thread.as_deref(), Some("grpc-shard-0"));
        assert_eq!(b.state.thread.as_deref(), Some("grpc-shard-1"));
        assert!(
            Arc::ptr_eq(&a.state, &c.state),
            "connections go to the shards in turn"
        );
        assert!(a.state.in_runtime && b.state.in_runtime);

        let (tx, rx) = std::sync::mpsc::channel();
        b.handle.spawn(async move {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        let ran_on = rx.recv().expect("the task ran");
        assert_eq!(ran_on.as_deref(), Some("grpc-shard-1"));

        drop((a, b, c));
        drop(shards);
        assert!(dropped.load(Ordering::SeqCst), "the shards' threads ended");
    }

    #[test]
    fn a_failing_shard_fails_the_start() {
        let error = Shards::<()>::start(2, || Err("no identity client".to_owned()))
            .err()
            .expect("refused");
        assert_eq!(error, "no identity client");
    }
}
