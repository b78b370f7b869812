//! `at-forwarder run`: the operations endpoint, the signals, and the supervised pipeline.

use std::process::ExitCode;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{load, runtime};
use crate::config;

pub(super) fn run(path: &std::path::Path, metrics_listen: std::net::SocketAddr) -> ExitCode {
    let loaded = match load(path, false) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    loaded.log_warnings();
    // Before anything is opened: a second instance must not touch the first one's state.
    let _instance = match crate::pipeline::instance::lock(&loaded.config) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime().and_then(|rt| rt.block_on(run_daemon(path, loaded.config, metrics_listen))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("at-forwarder failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The operations endpoint, the signals, and the supervised pipeline.
async fn run_daemon(
    path: &std::path::Path,
    config: config::Config,
    metrics_listen: std::net::SocketAddr,
) -> Result<()> {
    let shutdown = CancellationToken::new();
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
    let signals = listen_for_signals(shutdown.clone())?;
    let (hangups, hangups_rx) = tokio::sync::mpsc::channel(4);
    let hup = listen_for_hangups(hangups)?;
    let listen = config.system.http_port.map_or(metrics_listen, |port| {
        std::net::SocketAddr::from(([0, 0, 0, 0], port))
    });
    // Forwarding matters more than its metrics: a port in use is reported, not fatal.
    if let Err(e) =
        crate::metrics::endpoint::serve(listen, shutdown.clone(), std::sync::Arc::clone(&metrics))
            .await
    {
        tracing::error!("{e:#}; running without /metrics, /healthz and /readyz");
    }
    let result =
        crate::pipeline::supervisor::supervise(path, config, metrics, shutdown, hangups_rx).await;
    signals.abort();
    hup.abort();
    result
}

/// Sends a reload request on each SIGHUP.
fn listen_for_hangups(tx: tokio::sync::mpsc::Sender<()>) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = tx.send(()).await;
        }
    }))
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub(super) fn listen_for_signals(
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "Signal received, shutting down.");
        shutdown.cancel();
        // A second signal ends the process at once: an operator who asks twice does not
        // wait for a stuck stage or a flush. Positions stay as last saved (durable), so
        // nothing is lost; what was read after them is read again.
        let again = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        warn!(
            signal = again,
            "Second signal: exiting now; positions stay as last saved."
        );
        #[allow(clippy::exit)] // the point of a second signal
        std::process::exit(130);
    }))
}
