//! A request held in flight on purpose, for tests of anything that bounds requests (the
//! connection cap here, the in-flight limit in `limits`): a test can then act while a request
//! is known to be in the handler, without sleeping and hoping.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

type Held = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// Its handler reports when it runs, then answers `done` once the gate opens.
pub struct Gate {
    entered_tx: mpsc::UnboundedSender<()>,
    entered: mpsc::UnboundedReceiver<()>,
    open: watch::Sender<bool>,
}

impl Gate {
    pub fn new() -> Self {
        let (entered_tx, entered) = mpsc::unbounded_channel();
        Self {
            entered_tx,
            entered,
            open: watch::channel(false).0,
        }
    }

    pub fn handler(&self) -> impl Fn() -> Held + Clone + Send + Sync + 'static {
        let entered = self.entered_tx.clone();
        let open = self.open.subscribe();
        move || {
            let entered = entered.clone();
            let mut open = open.clone();
            Box::pin(async move {
                let _ = entered.send(());
                let _ = open.wait_for(|open| *open).await;
                "done"
            })
        }
    }

    /// Waits until one more request reached the handler (20 s at most, against hangs).
    pub async fn entered(&mut self) {
        let entered = tokio::time::timeout(Duration::from_secs(20), self.entered.recv());
        assert!(matches!(entered.await, Ok(Some(()))), "handler never ran");
    }

    /// Lets every held request, and any later one, answer.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Opens the gate from elsewhere (`send_replace(true)`).
    pub fn opener(&self) -> watch::Sender<bool> {
        self.open.clone()
    }
}
