//! Running an application: both listeners until a shutdown signal, then the drain the way
//! Kubernetes expects (readiness 503 at once, keep serving through the drain delay, stop
//! accepting, finish in-flight work within the shutdown timeout, cut what is left).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use super::Application;
use crate::transport::http::{self, serve::serve};

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGTERM: readiness 503 at once, keep serving for `SHUTDOWN_DRAIN_DELAY_MS` so
    /// endpoints can be updated, then stop accepting and finish in-flight requests.
    Drain,
    /// SIGINT (an interactive Ctrl-C): the same without the delay.
    Immediate,
}

impl Application {
    /// Serves until `shutdown` resolves, then drains and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = Shutdown> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            metrics_listener,
            grpc,
            state,
            serve_limits,
            serve_metrics,
            drain_delay,
            _probe,
            background,
            _secret_watcher,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let readiness = state.readiness.clone();
        let sequence = async move {
            let kind = shutdown.await;
            readiness.begin_shutdown();
            if kind == Shutdown::Drain && !drain_delay.is_zero() {
                tracing::info!(
                    drain_ms = u64::try_from(drain_delay.as_millis()).unwrap_or(u64::MAX),
                    "shutdown: readiness is 503; still serving while endpoints update"
                );
                tokio::time::sleep(drain_delay).await;
            }
            tracing::info!("shutdown: no new connections; finishing in-flight requests");
            let _ = stop_tx.send(true);
        };
        tokio::spawn(sequence);

        let metrics_server = metrics_listener.map(|listener| {
            let router = http::metrics_router(state.clone());
            let stop = stopped(stop_rx.clone());
            tokio::spawn(serve(
                listener,
                router,
                serve_limits,
                serve_metrics.clone(),
                stop,
            ))
        });
        let grpc_server = grpc.map(|server| {
            if let Ok(addr) = server.local_addr() {
                tracing::info!(%addr, shards = server.shards(), "gRPC proxy listening");
            }
            let stop = stopped(stop_rx.clone());
            let task = tokio::spawn(server.run(stop));
            tokio::spawn(bounded_grpc_shutdown(
                task,
                stop_rx.clone(),
                serve_limits.shutdown_timeout,
            ))
        });
        let with_metrics = metrics_server.is_none();
        tracing::info!(
            addr = %listener.local_addr()?,
            auth = state.auth.mode().as_str(),
            pool_status = state.service.pool().status().as_str(),
            pool_size = state.service.pool().size(),
            "realtime-service listening"
        );
        let mut cut = serve(
            listener,
            http::router(state, with_metrics),
            serve_limits,
            serve_metrics,
            stopped(stop_rx),
        )
        .await;
        if let Some(server) = metrics_server {
            cut += server.await.map_err(std::io::Error::other)?;
        }
        if let Some(server) = grpc_server {
            server.await.map_err(std::io::Error::other)??;
        }
        background.shut_down().await;
        if cut > 0 {
            tracing::warn!(
                cut,
                "shutdown: {cut} connections were still busy after SHUTDOWN_TIMEOUT_MS and were cut"
            );
        } else {
            tracing::info!("shutdown: all requests finished");
        }
        Ok(())
    }
}

/// Waits for the gRPC server to finish its in-flight calls, at most `timeout` after the stop
/// signal; then cuts it (a stalled call would otherwise hold shutdown forever).
async fn bounded_grpc_shutdown(
    mut task: tokio::task::JoinHandle<()>,
    stop: watch::Receiver<bool>,
    timeout: Duration,
) -> std::io::Result<()> {
    let deadline = async {
        stopped(stop).await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        result = &mut task => result.map_err(std::io::Error::other),
        () = deadline => {
            task.abort();
            tracing::warn!("shutdown: gRPC calls were still in flight after SHUTDOWN_TIMEOUT_MS and were cut");
            Ok(())
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// SIGTERM drains; SIGINT stops at once.
pub async fn shutdown_signal() -> Shutdown {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C can stop us; wait for that instead.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = terminate => Shutdown::Drain,
        _ = tokio::signal::ctrl_c() => Shutdown::Immediate,
    }
}
