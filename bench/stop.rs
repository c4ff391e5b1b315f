//! Shared by the benchmark's long-running helpers (`bench_identity`, `passthrough`):
//! waiting for the signal that stops them. Included with `#[path]`, not a target itself.

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers the default disposition (terminate) still ends us.
        _ => std::future::pending::<()>().await,
    }
}
