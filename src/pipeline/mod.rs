//! Wiring and lifecycle: builds the stages a [`Config`] describes, runs them until the
//! `shutdown` token fires, then stops them in order.
//!
//! Per tail source: a tail thread → a worker that checks events, routes them by tag and
//! writes them to their output — a disk [`Buffer`] per `ibmactivitytracker` match (drained
//! by a delivery engine), or standard output — and dead-letters what cannot be forwarded.
//! Positions are saved once the records read before them are delivered or durable
//! (`checkpoint/`).
//!
//! Stopping: the tail threads stop reading; workers write what they hold, write the chunks
//! still in memory to disk, wait (up to 10 s) for those being sent, and save positions;
//! open chunks are sealed; with `flush_at_shutdown`, delivery goes on until the
//! buffers are empty or [`FLUSH_DEADLINE`] passes (below Kubernetes' 30 s grace period);
//! then senders stop, leaving whatever is left safe on disk for the next start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing::{error, info, warn};

use crate::config::{Config, Output, SourceKind};
use crate::event::dead_letter::DeadLetterStore;
use crate::metrics::{Metrics, Registration};
use crate::tail::{run as tail_run, PositionStore, Tailer};

mod checkpoint;
mod destination;
pub mod instance;
mod requeue;
mod rotation;
mod route;
pub mod supervisor;
mod worker;

use checkpoint::Checkpointer;
use route::Routes;

/// Batches in flight between a tail thread and its worker.
const BATCHES_IN_FLIGHT: usize = 2;
/// How long `flush_at_shutdown` may take.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(25);
/// How long stopping waits for the sources and their tail threads.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Runs the pipeline of `config` until `shutdown` is cancelled (mini-redis style: the
/// caller owns the signal, so tests can stop it without one), reporting to `metrics`
/// what this instance owns for as long as it runs.
pub async fn run(
    mut config: Config,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<()> {
    let state = config
        .state_dir()
        .context("no state directory: set <system> root_dir or a pos_file in a tail source")?;
    requeue::add_source(&mut config, &state)?;
    let dead_letters = Arc::new(
        DeadLetterStore::open_with_limit(
            &state,
            config.system.dead_letter_limit_size,
            Arc::clone(&metrics),
        )
        .with_context(|| format!("opening the dead-letter store in {}", state.display()))?,
    );
    let config = Arc::new(config);
    let health = crate::health::Registry::new(config.system.stall_timeout, Arc::clone(&metrics));
    let watchdog_stop = CancellationToken::new();
    let watchdog = tokio::spawn(Arc::clone(&health).watch(watchdog_stop.clone()));
    // Stops the watchdog on every way out of this function, early errors included.
    let _watchdog_guard = watchdog_stop.clone().drop_guard();
    let senders_stop = CancellationToken::new();
    let senders = TaskTracker::new();
    // This instance's series in the metrics: gone when it ends (a reload registers anew).
    let mut registrations = Vec::new();
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let mut starting = destination::Starting {
        metrics: &metrics,
        registrations: &mut registrations,
        senders: &senders,
        stop: &senders_stop,
        dead_letters: &dead_letters,
        health: &health,
        hostname: &hostname,
    };
    let (mut destinations, mut targets) = (Vec::new(), Vec::new());
    for (index, m) in config.matches.iter().enumerate() {
        let name = m.directive.plugin_id("match", index);
        let outputs: Vec<(&Output, Option<&crate::config::BufferConfig>, String)> = match &m.output
        {
            Output::Copy(stores) => (stores.iter().enumerate())
                .map(|(i, st)| {
                    (
                        &st.output,
                        st.buffer.as_ref(),
                        format!("{name}.store{}", i + 1),
                    )
                })
                .collect(),
            other => vec![(other, m.buffer.as_ref(), name)],
        };
        let mut ids = Vec::new();
        for (output, buffer, label) in outputs {
            let id = destinations.len();
            let metrics_label = format!("{id}:{}", m.patterns.as_str());
            destinations.push(starting.start(id, output, buffer, &label, &metrics_label)?);
            ids.push(id);
        }
        targets.push(ids);
    }
    let routes = Routes::new(destinations, targets);
    let filters = Arc::new(
        crate::event::filter::Filters::compile(&config, &hostname)
            .context("compiling the filters")?,
    );
    let sources = TaskTracker::new();
    let mut threads = Vec::new();
    for (index, source) in config.sources.iter().enumerate() {
        let SourceKind::Tail(tail) = &source.kind;
        let span = plugin_span(&source.directive.plugin_id("source", index));
        let store = match &tail.options.pos_file {
            Some(pos_file) => {
                let Some(store) =
                    open_positions(&PositionStore::dir_for(pos_file), &shutdown).await?
                else {
                    return Ok(());
                };
                store
            }
            None => {
                warn!(
                    source = index + 1,
                    "No pos_file: positions of this source are kept in memory only."
                );
                PositionStore::temporary().context("creating a temporary position store")?
            }
        };
        // After the buffers recovered (and fsynced their chunks) above, before the tailer
        // loads positions: what the previous process made safe downstream counts as saved.
        let checkpointer = Checkpointer::open(
            store.clone(),
            tail.options.pos_file.as_deref(),
            routes.clone(),
            commit_interval(&config),
            health.register(&format!("commit:{}", index + 1)),
        )?;
        registrations.push(register_positions(&metrics, index, &tail.options, &store));
        if let Some(rotation) = &tail.rotation {
            let rotator = crate::tail::rotation::Rotator::new(
                rotation.clone(),
                &tail.options.paths,
                &tail.options.exclude_paths,
                store.clone(),
            );
            senders.spawn(
                rotation::run(
                    rotator,
                    routes.clone(),
                    Arc::clone(&metrics),
                    shutdown.clone(),
                )
                .instrument(span.clone()),
            );
        }
        let mut tailer = Tailer::open(tail.options.clone(), store).context("loading positions")?;
        let (gauges, registration) = metrics.register_source();
        tailer.report_to(gauges);
        registrations.push(registration);
        let (tx, rx) = tokio::sync::mpsc::channel(BATCHES_IN_FLIGHT);
        // The tail thread takes the span it is started in.
        threads.push(
            span.in_scope(|| {
                tail_run::spawn(
                    tailer,
                    tail.options.refresh_interval,
                    tx,
                    shutdown.clone(),
                    health.register(&format!("tail:{}", index + 1)),
                )
            })
            .context("starting the tail thread")?,
        );
        let worker = worker::Worker::new(
            Arc::clone(&config),
            index,
            Arc::clone(&dead_letters),
            routes.clone(),
            checkpointer,
            worker::Reporting {
                heartbeat: health.register(&format!("source:{}", index + 1)),
                metrics: Arc::clone(&metrics),
                filters: Arc::clone(&filters),
            },
        );
        sources.spawn(worker.run(rx).instrument(span));
    }
    info!(config = %config.path.display(), sources = config.sources.len(), outputs = config.matches.len(), state = %state.display(), "at-forwarder started");
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    shutdown.cancelled().await;
    metrics
        .ready
        .store(false, std::sync::atomic::Ordering::Relaxed);
    info!("Shutdown requested: stopping sources, then flushing.");
    sources.close();
    // A stuck stage must not hold the process: past the deadline, shutdown goes on
    // (positions stay as last saved; what follows them is read again at the next start).
    if tokio::time::timeout(STOP_DEADLINE, sources.wait())
        .await
        .is_err()
    {
        error!(deadline_s = STOP_DEADLINE.as_secs(), "A source did not stop in time; stopping without it (its positions stay as last saved).");
    }
    for thread in threads {
        let joined = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(STOP_DEADLINE, joined).await.is_err() {
            error!(
                deadline_s = STOP_DEADLINE.as_secs(),
                "A tail thread did not stop in time; stopping without it."
            );
        }
    }
    flush(&routes).await;
    senders_stop.cancel();
    senders.close();
    senders.wait().await;
    watchdog_stop.cancel();
    let _ = watchdog.await;
    info!("at-forwarder stopped");
    Ok(())
}

/// The span a plugin's tasks run in: `@log_level` filters by it (`[plugin{id=…}]=level`).
/// At ERROR so that it exists whatever the process's level is.
fn plugin_span(id: &str) -> tracing::Span {
    tracing::error_span!("plugin", id = %id)
}

/// Opens a position store, waiting while another process holds it (a previous instance
/// still stopping): start-up, and readiness, wait rather than fail. `None` on shutdown.
async fn open_positions(
    dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> Result<Option<PositionStore>> {
    let mut warned = false;
    loop {
        let d = dir.to_path_buf();
        match tokio::task::spawn_blocking(move || PositionStore::open_or_recover(&d)).await? {
            Ok(store) => return Ok(Some(store)),
            Err(crate::tail::positions::PositionsError::Locked { .. }) => {
                if !warned {
                    warn!(dir = %dir.display(), "The position store is held by another process; waiting for it.");
                    warned = true;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("opening the position store {}", dir.display()))
            }
        }
    }
}

/// How long released positions may wait for a group commit: the smallest
/// `flush_interval` of the outputs, at most a minute.
fn commit_interval(config: &Config) -> Duration {
    (config.matches.iter())
        .filter_map(|m| m.buffer.as_ref())
        .map(|b| b.options.flush_interval)
        .min()
        .unwrap_or(Duration::ZERO)
        .min(Duration::from_secs(60))
}

/// Serves source `index`'s positions at `GET /positions` (so `at-forwarder positions`
/// works while the store is held), until the registration drops.
fn register_positions(
    metrics: &Arc<Metrics>,
    index: usize,
    opts: &crate::tail::TailOptions,
    store: &PositionStore,
) -> Registration {
    let (opts, store) = (opts.clone(), store.clone());
    metrics.register_positions(Arc::new(move || {
        let table = crate::tail::report::positions(&opts, &store).map_or_else(
            |e| format!("error: {e}\n"),
            |rows| crate::tail::report::table(&rows),
        );
        let place = opts.pos_file.as_ref().map_or_else(
            || "positions in memory".to_string(),
            |p| PositionStore::dir_for(p).display().to_string(),
        );
        format!("source #{} ({place}):\n{table}", index + 1)
    }))
}

/// Seals every open chunk; for buffers with `flush_at_shutdown`, waits until no chunk
/// can still be sent (those waiting for a retry or a token are on disk already), or the
/// deadline passes.
async fn flush(routes: &Routes) {
    for b in routes.buffers() {
        let b = Arc::clone(b);
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || b.seal_due(Instant::now(), true)).await
        {
            warn!(error = %e, "Could not seal open chunks at shutdown; they are sealed at the next start.");
        }
    }
    let deadline = Instant::now() + FLUSH_DEADLINE;
    for (b, flush_at_shutdown) in routes.flushed() {
        while flush_at_shutdown && b.flushable() > 0 && Instant::now() < deadline {
            b.wait_for_space(Duration::from_millis(100)).await;
        }
        let (bytes, queued, _) = b.sizes();
        if queued > 0 {
            info!(
                chunks = queued,
                bytes, "Chunks left in the buffer; they are sent after the next start."
            );
        }
    }
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
        let task = tokio::spawn(run(loaded.config, shutdown.clone(), Arc::default()));
        shutdown.cancel();
        task.await
            .expect("the task does not panic")
            .expect("run ends cleanly");
    }
}
