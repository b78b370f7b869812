//! Wiring and lifecycle: builds the stages a [`Config`] describes, runs them until the
//! `shutdown` token fires, then stops them in order (sources first, so that nothing read
//! is left behind).
//!
//! Today a source's lines go: tail → event check → route by tag → `@type stdout`, or the
//! dead-letter store (invalid, unroutable, over-long). A batch's positions are saved only
//! after everything in it is written: stdout flushed, dead letters fsynced. The
//! `ibmactivitytracker` output needs the disk buffer and the output stage of the next
//! issues; a configuration that routes events to it is refused at start rather than
//! reading events it could not deliver.

use anyhow::{bail, Context, Result};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, Output, SourceKind};
use crate::event::dead_letter::DeadLetterStore;
use crate::tail::{run as tail_run, PositionStore, TailOptions, Tailer};

mod source;

/// Batches in flight between a tail thread and its worker.
const BATCHES_IN_FLIGHT: usize = 4;

/// Runs the pipeline of `config` until `shutdown` is cancelled (mini-redis style: the
/// caller owns the signal, so tests can stop it without one).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    if let Some(m) = config
        .matches
        .iter()
        .find(|m| matches!(m.output, Output::ActivityTracker(_)))
    {
        bail!(
            "<match {}> ({}:{}) sends to ibmactivitytracker, which this build cannot deliver to yet (the disk buffer and Activity Tracker output come next); \
             events stay in their files. Use @type stdout to try the pipeline.",
            m.patterns.as_str(),
            m.directive.location.file.display(),
            m.directive.location.line
        );
    }
    let state = config
        .state_dir()
        .context("no state directory: set <system> root_dir or a pos_file in a tail source")?;
    let dead_letters = std::sync::Arc::new(
        DeadLetterStore::open(&state)
            .with_context(|| format!("opening the dead-letter store in {}", state.display()))?,
    );
    let config = std::sync::Arc::new(config);
    let tracker = TaskTracker::new();
    let mut threads = Vec::new();
    for (index, source) in config.sources.iter().enumerate() {
        let SourceKind::Tail(tail) = &source.kind;
        let store = match &tail.pos_file {
            Some(pos_file) => {
                let dir = PositionStore::dir_for(pos_file);
                PositionStore::open(&dir)
                    .with_context(|| format!("opening the position store {}", dir.display()))?
            }
            None => {
                warn!(
                    source = index + 1,
                    "No pos_file: positions of this source are kept in memory only."
                );
                PositionStore::temporary().context("creating a temporary position store")?
            }
        };
        let tailer = Tailer::open(TailOptions::from_config(tail), store.clone())
            .context("loading positions")?;
        let (tx, rx) = tokio::sync::mpsc::channel(BATCHES_IN_FLIGHT);
        threads.push(
            tail_run::spawn(tailer, tail.refresh_interval, tx, shutdown.clone())
                .context("starting the tail thread")?,
        );
        let worker = source::Worker::new(
            std::sync::Arc::clone(&config),
            index,
            store,
            std::sync::Arc::clone(&dead_letters),
        );
        tracker.spawn(worker.run(rx));
    }
    info!(config = %config.path.display(), sources = config.sources.len(), outputs = config.matches.len(), state = %state.display(), "at-forwarder started");
    shutdown.cancelled().await;
    info!("Shutdown requested, stopping sources.");
    tracker.close();
    // Workers end when their tail thread stops and drops its sender.
    tracker.wait().await;
    for thread in threads {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    info!("at-forwarder stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, EvalEnv, LoadOptions};

    #[tokio::test]
    async fn returns_when_shutdown_is_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "<source>\n @type tail\n path {0}/*.log\n tag t\n format json\n pos_file {0}/p\n</source>\n<match t>\n @type stdout\n</match>\n",
            dir.path().display()
        );
        let options = LoadOptions {
            strict: false,
            env: EvalEnv::fixed("h", &[]),
        };
        let loaded = load_str(&text, "t.conf".as_ref(), &options).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(loaded.config, shutdown.clone()));
        shutdown.cancel();
        task.await
            .expect("the task does not panic")
            .expect("run ends cleanly");
    }
}
