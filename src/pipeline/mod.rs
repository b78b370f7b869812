//! Wiring and lifecycle: builds the stages a [`Config`] describes, runs them until the
//! `shutdown` token fires, then stops them in order (sources first, so that nothing read
//! is left behind; outputs last).
//!
//! The stages themselves (tail, buffer, output) arrive with their own issues; until then
//! `run` validates, reports what it would run, and waits for the signal to stop.

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;

/// Runs the pipeline of `config` until `shutdown` is cancelled (mini-redis style: the
/// caller owns the signal, so tests can stop it without one).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let tracker = TaskTracker::new();
    info!(
        config = %config.path.display(),
        sources = config.sources.len(),
        outputs = config.matches.len(),
        "at-forwarder started"
    );
    warn!("This build has no tail, buffer or output stage yet: the configuration is validated, nothing is read or sent.");
    shutdown.cancelled().await;
    info!("Shutdown requested, stopping stages.");
    tracker.close();
    tracker.wait().await;
    info!("at-forwarder stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, EvalEnv, LoadOptions};

    #[tokio::test]
    async fn returns_when_shutdown_is_cancelled() {
        let options = LoadOptions {
            strict: false,
            env: EvalEnv::fixed("h", &[]),
        };
        let loaded = load_str("<source>\n @type tail\n path /x/*.log\n tag t\n format json\n pos_file /tmp/p\n</source>\n<match t>\n @type stdout\n</match>\n", "t.conf".as_ref(), &options).unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(loaded.config, shutdown.clone()));
        shutdown.cancel();
        task.await
            .expect("the task does not panic")
            .expect("run ends cleanly");
    }
}
