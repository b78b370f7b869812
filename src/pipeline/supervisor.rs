//! The daemon's life: the pipeline under reloads.
//!
//! A reload request — SIGHUP, delivered by the caller on `hangups`, or a change of the
//! configuration file (a ConfigMap update swaps its `..data` symlink), seen by a watch on
//! its directory — reloads the configuration: a file that does not load is reported
//! (ERROR) and the running pipeline is kept; one that loads unchanged is reported (INFO)
//! and kept; one that differs replaces it — the old pipeline stops as on SIGTERM
//! (positions saved, chunks sealed, without waiting for delivery) and the new one starts
//! on the same positions and buffers. Signals are the caller's: `shutdown` and `hangups`
//! come in as a token and a channel, so tests drive reloads in-process.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use notify::Watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{self, Config, LoadOptions};
use crate::metrics::Metrics;

/// Runs the pipeline of `config` (loaded from `path`) until `shutdown`, restarting it on
/// each reload that changes it.
pub async fn supervise(
    path: &Path,
    mut config: Config,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    mut hangups: mpsc::Receiver<()>,
) -> Result<()> {
    let (changes_tx, mut changes) = mpsc::channel::<()>(4);
    let _watcher = watch_config(path, changes_tx);
    loop {
        let stop = CancellationToken::new();
        let mut pipeline = tokio::spawn(super::run(
            config.clone(),
            stop.clone(),
            Arc::clone(&metrics),
        ));
        let next = loop {
            let why = tokio::select! {
                () = shutdown.cancelled() => break None,
                result = &mut pipeline => {
                    let e = result.map_err(anyhow::Error::from).and_then(|r| r).err();
                    break Some(Err(e.unwrap_or_else(|| anyhow::anyhow!("the pipeline stopped"))));
                }
                Some(()) = hangups.recv() => "SIGHUP",
                Some(()) = changes.recv() => "file change",
            };
            // Several events come with one ConfigMap update: let them settle.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while changes.try_recv().is_ok() || hangups.try_recv().is_ok() {}
            if let Some(new) = reload(path, &config, &metrics, why) {
                break Some(Ok(new));
            }
        };
        match next {
            None => {
                stop.cancel();
                return pipeline.await.map_err(anyhow::Error::from).and_then(|r| r);
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(new)) => {
                stop.cancel();
                pipeline
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r)?;
                metrics.reloads.fetch_add(1, Ordering::Relaxed);
                config = new;
            }
        }
    }
}

/// The new configuration when it loads and differs; `None` when it does not load (ERROR,
/// counted) and when nothing changed (INFO).
fn reload(path: &Path, current: &Config, metrics: &Metrics, why: &str) -> Option<Config> {
    match config::load(path, &LoadOptions::default()) {
        Ok(loaded) => {
            loaded.log_warnings();
            if loaded.config == *current {
                info!(trigger = why, file = %path.display(), "Configuration unchanged; nothing to reload.");
                return None;
            }
            info!(
                trigger = why,
                "Configuration changed; restarting the pipeline on the same positions and buffers."
            );
            Some(loaded.config)
        }
        Err(e) => {
            metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
            error!(file = %path.display(), "Reload refused, the running configuration is kept:\n{e}");
            None
        }
    }
}

/// Watches the configuration file's directory: editors and Kubernetes replace files by
/// rename, which a watch on the file itself would lose.
fn watch_config(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
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
            let _ = tx.try_send(());
        }
    })
    .ok()?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .ok()?;
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn conf(dir: &Path, extra: &str) -> String {
        format!(
            "<source>\n @type tail\n path {0}/*.log\n tag t\n format json\n pos_file {0}/p\n{extra}</source>\n<match t>\n @type stdout\n</match>\n",
            dir.display()
        )
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reloads_on_hangup_and_file_change_keep_a_good_pipeline_and_stop_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("at.conf");
        std::fs::write(&path, conf(dir.path(), "")).unwrap();
        let config = config::load(&path, &LoadOptions::default()).unwrap().config;
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let (hangups, hangups_rx) = mpsc::channel(4);
        let task = tokio::spawn({
            let (path, metrics, shutdown) = (path.clone(), Arc::clone(&metrics), shutdown.clone());
            async move { supervise(&path, config, metrics, shutdown, hangups_rx).await }
        });
        let reloads = || metrics.reloads.load(Ordering::Relaxed);
        let failures = || metrics.reload_failures.load(Ordering::Relaxed);

        // A changed file, then a SIGHUP: one reload.
        std::fs::write(&path, conf(dir.path(), " rotate_wait 7\n")).unwrap();
        hangups.send(()).await.unwrap();
        until("the reload", || reloads() == 1).await;
        // A broken file, seen by the watch alone: refused, the pipeline kept.
        std::fs::write(&path, "<source>\n").unwrap();
        until("the refusal", || failures() == 1).await;
        assert!(!task.is_finished(), "a refused reload keeps the pipeline");
        // The running configuration again (no reload), then another change (one more).
        std::fs::write(&path, conf(dir.path(), " rotate_wait 7\n")).unwrap();
        hangups.send(()).await.unwrap();
        std::fs::write(&path, conf(dir.path(), " rotate_wait 8\n")).unwrap();
        until("the second reload", || reloads() >= 2).await;
        shutdown.cancel();
        task.await.unwrap().unwrap();
        assert_eq!((reloads(), failures()), (2, 1));
    }
}
