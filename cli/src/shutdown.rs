//! Waits for the signal that asks a server process to stop gracefully.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves on SIGINT or SIGTERM.
pub async fn requested() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
