//! `at-forwarder run`: the pipeline under the operations endpoint, with reloads.
//!
//! SIGHUP, or a change of the configuration file (a ConfigMap update swaps its `..data`
//! symlink), reloads the configuration: a file that does not load is reported (ERROR) and
//! the running pipeline is kept; one that loads replaces it — the old pipeline stops as on
//! SIGTERM (positions saved, chunks sealed, without waiting for delivery) and the new one
//! starts on the same positions and buffers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use notify::Watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{self, Config, LoadOptions};

pub(crate) async fn run(path: &Path, mut config: Config, metrics_listen: SocketAddr) -> Result<()> {
    let shutdown = CancellationToken::new();
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
    let signals = crate::cli::listen_for_signals(shutdown.clone())?;
    let listen = config.system.http_port.map_or(metrics_listen, |port| {
        SocketAddr::from(([0, 0, 0, 0], port))
    });
    // Forwarding matters more than its metrics: a port in use is reported, not fatal.
    if let Err(e) =
        crate::ops::serve(listen, shutdown.clone(), std::sync::Arc::clone(&metrics)).await
    {
        error!("{e:#}; running without /metrics, /healthz and /readyz");
    }
    let (reload_tx, mut reload_rx) = mpsc::channel::<&'static str>(4);
    let _watcher = watch_config(path, reload_tx.clone());
    let hup = listen_for_hangup(reload_tx)?;
    let result = loop {
        let stop = CancellationToken::new();
        let mut pipeline = tokio::spawn(crate::pipeline::run(
            config.clone(),
            stop.clone(),
            std::sync::Arc::clone(&metrics),
        ));
        let next = loop {
            tokio::select! {
                () = shutdown.cancelled() => break None,
                result = &mut pipeline => break Some(Err(result.map_err(anyhow::Error::from).and_then(|r| r).err().unwrap_or_else(|| anyhow::anyhow!("the pipeline stopped")))),
                Some(why) = reload_rx.recv() => {
                    // Several events come with one ConfigMap update: let them settle.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while reload_rx.try_recv().is_ok() {}
                    match reload(path, &config, &metrics) {
                        Some(new) => {
                            info!(trigger = why, "Configuration changed; restarting the pipeline on the same positions and buffers.");
                            break Some(Ok(new));
                        }
                        None => continue,
                    }
                }
            }
        };
        match next {
            None => {
                stop.cancel();
                break pipeline.await.map_err(anyhow::Error::from).and_then(|r| r);
            }
            Some(Err(e)) => break Err(e),
            Some(Ok(new)) => {
                stop.cancel();
                if let Err(e) = pipeline.await.map_err(anyhow::Error::from).and_then(|r| r) {
                    break Err(e);
                }
                metrics.reloads.fetch_add(1, Ordering::Relaxed);
                config = new;
            }
        }
    };
    signals.abort();
    hup.abort();
    result
}

/// The new configuration when it loads and differs; `None` (with an ERROR) when it does
/// not load, and when nothing changed.
fn reload(path: &Path, current: &Config, metrics: &crate::metrics::Metrics) -> Option<Config> {
    match config::load(path, &LoadOptions::default()) {
        Ok(loaded) => {
            crate::cli::log_warnings(&loaded);
            (loaded.config != *current).then_some(loaded.config)
        }
        Err(e) => {
            metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
            error!(file = %path.display(), "Reload refused, the running configuration is kept:\n{e}");
            None
        }
    }
}

fn listen_for_hangup(tx: mpsc::Sender<&'static str>) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = tx.send("SIGHUP").await;
        }
    }))
}

/// Watches the configuration file's directory: editors and Kubernetes replace files by
/// rename, which a watch on the file itself would lose.
fn watch_config(path: &Path, tx: mpsc::Sender<&'static str>) -> Option<notify::RecommendedWatcher> {
    let dir: PathBuf = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = path.file_name()?.to_os_string();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == name || n == "..data"));
        if relevant {
            let _ = tx.try_send("file change");
        }
    })
    .ok()?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .ok()?;
    Some(watcher)
}
