//! The destinations of a pipeline: for each `<match>` (and each `<store>` of a
//! `@type copy`), its buffer opened, its metrics registered and its delivery engine
//! started with the sink of its output type; `@type stdout` is written by the workers.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::route::Route;
use crate::buffer::{self, Buffer};
use crate::config::{BufferConfig, Output};
use crate::event::dead_letter::{DeadLetter, DeadLetterStore};
use crate::event::Reason;
use crate::metrics::{BufferCounts, BufferSample, Metrics, Registration};

/// What starting a destination needs from the pipeline.
pub(super) struct Starting<'a> {
    pub metrics: &'a Arc<Metrics>,
    pub registrations: &'a mut Vec<Registration>,
    pub senders: &'a TaskTracker,
    pub stop: &'a CancellationToken,
    pub dead_letters: &'a Arc<DeadLetterStore>,
    pub health: &'a Arc<crate::health::Registry>,
    pub hostname: &'a str,
}

impl Starting<'_> {
    /// Starts destination `id`: `output` (not a copy) with `buffer`; `name` names its log
    /// span, `metrics_label` its series; its stage is `output:<id + 1>`.
    pub(super) fn start(
        &mut self,
        id: usize,
        output: &Output,
        buffer: Option<&BufferConfig>,
        name: &str,
        metrics_label: &str,
    ) -> Result<Route> {
        let Some(b) = buffer.filter(|_| {
            matches!(
                output,
                Output::ActivityTracker(_) | Output::Http(_) | Output::CloudLogs(_)
            )
        }) else {
            return Ok(Route::Stdout);
        };
        let buf = Buffer::open(b.options.clone())
            .with_context(|| format!("opening the buffer {}", b.options.path.display()))?;
        self.registrations
            .push(register_buffer_metrics(self.metrics, metrics_label, &buf));
        let threads = usize::try_from(b.flush_thread_count).unwrap_or(1);
        let heartbeat = self.health.register(&format!("output:{}", id + 1));
        let span = super::plugin_span(name);
        // Dead letters name the destination (a copy's store among others).
        let (refused, stop) = (refused_alone(self.dead_letters, name), self.stop.clone());
        let metrics = Arc::clone(self.metrics);
        let per_body = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        match output {
            Output::ActivityTracker(at) => {
                let sink = Arc::new(crate::output::at::AtSink::new(at, metrics)?);
                buf.lay_out_bodies(per_body(at.max_events_per_request));
                let run =
                    buffer::deliver(Arc::clone(&buf), sink, threads, refused, stop, heartbeat);
                self.senders.spawn(run.instrument(span));
            }
            Output::Http(http) => {
                let sink = Arc::new(crate::output::http::HttpSink::new(http, metrics)?);
                if http.json_array {
                    buf.lay_out_bodies(per_body(http.max_events_per_request));
                }
                let run =
                    buffer::deliver(Arc::clone(&buf), sink, threads, refused, stop, heartbeat);
                self.senders.spawn(run.instrument(span));
            }
            Output::CloudLogs(logs) => {
                let sink = Arc::new(crate::output::cloud_logs::CloudLogsSink::new(
                    logs,
                    self.hostname,
                    metrics,
                )?);
                let run =
                    buffer::deliver(Arc::clone(&buf), sink, threads, refused, stop, heartbeat);
                self.senders.spawn(run.instrument(span));
            }
            // Filtered out above: written by the workers, or expanded into stores.
            Output::Stdout | Output::Copy(_) => {}
        }
        Ok(Route::Buffered {
            buffer: buf,
            flush_at_shutdown: b.flush_at_shutdown,
        })
    }
}

/// What a buffer's sender does with a single event the endpoint refuses: a dead letter.
fn refused_alone(
    dead_letters: &Arc<DeadLetterStore>,
    destination: &str,
) -> buffer::engine::DeadLetterFn {
    let dl = Arc::clone(dead_letters);
    let destination = destination.to_string();
    Arc::new(move |taken, record| {
        let letter = DeadLetter::new(
            Reason::RejectedByEndpoint,
            format!(
                "{destination}: the endpoint refused this event alone (chunk {}, service {})",
                taken.id, taken.key
            ),
            std::path::Path::new("(buffer)"),
            0,
            record,
        );
        if let Err(e) = dl.append(&[letter]) {
            tracing::error!(error = %e, "Could not write a dead letter; the event stays in its chunk's backup.");
        }
    })
}

/// Reports a buffer's sizes, chunk states, counters and oldest event's age, read at
/// scrape time, until the registration drops (when this pipeline instance ends).
fn register_buffer_metrics(
    metrics: &Arc<Metrics>,
    label: &str,
    buffer: &Arc<Buffer>,
) -> Registration {
    let b = Arc::clone(buffer);
    metrics.register_output(
        label,
        Box::new(move || {
            let (bytes, queued, open) = b.sizes();
            let c = b.counters();
            BufferSample {
                bytes,
                memory: b.memory(),
                open: open as u64,
                queued: queued as u64,
                in_flight: b.in_flight() as u64,
                oldest_age_s: b.oldest_age().map_or(0, |a| a.as_secs()),
                counts: BufferCounts {
                    delivered: c.delivered,
                    retries: c.retries,
                    backed_up: c.backed_up,
                    quarantined: c.quarantined,
                    spilled: c.spilled,
                },
                services: b.by_key(),
            }
        }),
    )
}
