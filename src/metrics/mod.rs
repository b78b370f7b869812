//! The process's counters and gauges, rendered in the Prometheus text format for the
//! operations endpoint. One [`Metrics`] is made at start and handed down (no global): the
//! stages update its counters as they work, and what a pipeline instance owns (buffer
//! sizes, the oldest event's age, its sources' files) is registered for that instance's
//! life and read at scrape time (see [`live`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

pub mod endpoint;
pub mod live;

pub use live::{BufferCounts, BufferSample, Registration, SourceGauges};

/// The metrics of this process.
#[derive(Default)]
pub struct Metrics {
    /// Events accepted and handed to an output.
    pub events_emitted: AtomicU64,
    /// Requests to Activity Tracker by status (0: no answer).
    requests: Mutex<BTreeMap<u16, u64>>,
    /// Events refused by the event check, by reason.
    invalid: Mutex<BTreeMap<&'static str, u64>>,
    /// Events written to the dead-letter store, by reason.
    dead_lettered: Mutex<BTreeMap<&'static str, u64>>,
    /// Events dropped by a `<filter>`, by filter name.
    filtered: Mutex<BTreeMap<String, u64>>,
    /// Failed writes to the dead-letter store (each one retried).
    pub dead_letter_write_errors: AtomicU64,
    /// Dead-letter records removed to keep the store under `dead_letter_limit_size`.
    pub dead_letters_dropped: AtomicU64,
    /// Operations endpoint connections closed unanswered (too many open).
    pub ops_connections_evicted: AtomicU64,
    /// 1 per stage stalled (see [`crate::health`]), 0 per stage alive.
    stalled: Mutex<BTreeMap<String, u64>>,
    /// Secret (re)loads.
    pub secret_reloads: AtomicU64,
    /// Configuration reloads that took effect, and that failed.
    pub reloads: AtomicU64,
    /// Failed reloads (the running pipeline was kept).
    pub reload_failures: AtomicU64,
    /// Events whose `eventTime` had no UTC offset, read as UTC.
    pub times_without_offset: AtomicU64,
    /// Files renamed by `<rotate>`.
    pub files_rotated: AtomicU64,
    /// Rotated copies removed by `<rotate>`.
    pub rotated_files_removed: AtomicU64,
    /// Renames or removals by `<rotate>` that failed.
    pub rotation_errors: AtomicU64,
    /// Rotated copies beyond `keep` waiting to be read or delivered (last pass).
    pub rotated_files_waiting: AtomicU64,
    /// Start-up finished: configuration loaded, positions loaded, buffers open.
    pub ready: AtomicBool,
    /// What the running pipeline instance registered.
    live: Mutex<live::Live>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Counts a request answered with `status` (0 when there was no answer).
    pub fn request(&self, status: u16) {
        *lock(&self.requests).entry(status).or_default() += 1;
    }

    /// Counts an event refused for `reason`.
    pub fn invalid(&self, reason: &'static str) {
        *lock(&self.invalid).entry(reason).or_default() += 1;
    }

    /// Counts events dead-lettered for `reason`.
    pub fn dead_lettered(&self, reason: &'static str, n: u64) {
        *lock(&self.dead_lettered).entry(reason).or_default() += n;
    }

    /// Counts `n` events dropped by the filter `name`.
    pub fn filtered(&self, name: &str, n: u64) {
        *lock(&self.filtered).entry(name.to_string()).or_default() += n;
    }

    /// Counts a failed write to the dead-letter store.
    pub fn dead_letter_write_error(&self) {
        self.dead_letter_write_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Sets whether `stage` is stalled.
    pub fn set_stalled(&self, stage: &str, stalled: bool) {
        lock(&self.stalled).insert(stage.to_string(), u64::from(stalled));
    }

    /// Forgets a stage (its pipeline stopped).
    pub fn forget_stage(&self, stage: &str) {
        lock(&self.stalled).remove(stage);
    }

    /// Whether any stage is stalled: the health probes answer 503.
    pub fn any_stalled(&self) -> bool {
        lock(&self.stalled).values().any(|v| *v > 0)
    }

    /// The exposition, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(&mut out, "at_forwarder_up", "1 while the process runs.", 1);
        let _ = write!(
            out,
            "# HELP at_forwarder_build_info The running build.\n# TYPE at_forwarder_build_info gauge\nat_forwarder_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        gauge(
            &mut out,
            "at_forwarder_ready",
            "1 once start-up finished (configuration, positions, buffers).",
            u64::from(self.ready.load(Ordering::Relaxed)),
        );
        self.render_live(&mut out);
        counter(
            &mut out,
            "at_forwarder_events_emitted_total",
            "Events accepted and handed to an output.",
            load(&self.events_emitted),
        );
        labelled(
            &mut out,
            "at_forwarder_events_invalid_total",
            "counter",
            "Events refused by the event check, by reason.",
            "reason",
            &lock(&self.invalid),
        );
        labelled(
            &mut out,
            "at_forwarder_dead_letters_total",
            "counter",
            "Events written to the dead-letter store, by reason.",
            "reason",
            &lock(&self.dead_lettered),
        );
        labelled(
            &mut out,
            "at_forwarder_events_filtered_total",
            "counter",
            "Events dropped by a <filter>, by filter (@id, else filter.N).",
            "filter",
            &lock(&self.filtered),
        );
        let requests: BTreeMap<String, u64> = lock(&self.requests)
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        labelled(
            &mut out,
            "at_forwarder_requests_total",
            "counter",
            "Requests to Activity Tracker by status code (0: no answer).",
            "code",
            &requests,
        );
        labelled(
            &mut out,
            "at_forwarder_stage_stalled",
            "gauge",
            "1 while a stage has had work without progress for longer than stall_timeout.",
            "stage",
            &lock(&self.stalled),
        );
        counter(
            &mut out,
            "at_forwarder_dead_letter_write_errors_total",
            "Failed writes to the dead-letter store (the source pauses and retries).",
            load(&self.dead_letter_write_errors),
        );
        counter(
            &mut out,
            "at_forwarder_dead_letters_dropped_total",
            "Dead-letter records removed, oldest first, to stay under dead_letter_limit_size.",
            load(&self.dead_letters_dropped),
        );
        counter(
            &mut out,
            "at_forwarder_ops_connections_evicted_total",
            "Operations endpoint connections closed unanswered because too many were open.",
            load(&self.ops_connections_evicted),
        );
        counter(
            &mut out,
            "at_forwarder_events_time_without_offset_total",
            "Events whose eventTime had no UTC offset, read as UTC (lenient check).",
            load(&self.times_without_offset),
        );
        counter(
            &mut out,
            "at_forwarder_files_rotated_total",
            "Files renamed by <rotate>.",
            load(&self.files_rotated),
        );
        counter(
            &mut out,
            "at_forwarder_rotated_files_removed_total",
            "Rotated files removed by <rotate>, each once every line of it was delivered.",
            load(&self.rotated_files_removed),
        );
        counter(
            &mut out,
            "at_forwarder_rotation_errors_total",
            "Renames or removals by <rotate> that failed (WARN once per file).",
            load(&self.rotation_errors),
        );
        gauge(
            &mut out,
            "at_forwarder_rotated_files_waiting",
            "Rotated files beyond keep, kept until read and delivered.",
            load(&self.rotated_files_waiting),
        );
        counter(
            &mut out,
            "at_forwarder_secret_reloads_total",
            "Times the Activity Tracker Secret was read.",
            load(&self.secret_reloads),
        );
        counter(
            &mut out,
            "at_forwarder_config_reloads_total",
            "Configuration reloads that took effect.",
            load(&self.reloads),
        );
        counter(
            &mut out,
            "at_forwarder_config_reload_failures_total",
            "Reloads refused; the running pipeline was kept.",
            load(&self.reload_failures),
        );
        out
    }
}

/// Writes one gauge.
pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
    );
}

/// Writes a metric with one label.
pub fn labelled<K: AsRef<str>>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: &BTreeMap<K, u64>,
) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    for (k, v) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(k.as_ref()));
    }
}

/// A label value as the text format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    fn sample(delivered: u64) -> BufferSample {
        BufferSample {
            bytes: 10,
            counts: BufferCounts {
                delivered,
                ..BufferCounts::default()
            },
            ..BufferSample::default()
        }
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Arc::new(Metrics::default());
        let (gauges, _source) = m.register_source();
        gauges.lines_read.fetch_add(3, Ordering::Relaxed);
        gauges.set_lag([("/var/log/at/\"x\".log".to_string(), 42)]);
        m.request(200);
        m.request(503);
        m.invalid("invalid_json");
        let text = m.render();
        assert!(text.contains("at_forwarder_read_lines_total 3\n"));
        assert!(text.contains("at_forwarder_requests_total{code=\"503\"} 1\n"));
        assert!(text.contains("at_forwarder_events_invalid_total{reason=\"invalid_json\"} 1\n"));
        assert!(
            text.contains("at_forwarder_file_lag_bytes{path=\"/var/log/at/\\\"x\\\".log\"} 42\n")
        );
        assert!(text.contains("at_forwarder_build_info{version=\""));
    }

    /// Each series once per scrape, whatever the number of pipeline instances before.
    fn series(text: &str) -> Vec<&str> {
        let mut names: Vec<&str> = (text.lines())
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(name, _)| name))
            .collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn a_new_pipeline_instance_replaces_the_old_series_and_counters_carry_on() {
        let m = Arc::new(Metrics::default());
        let first = m.register_output(
            "0:at.**",
            Box::new(|| BufferSample {
                services: [("svc".to_string(), (40, 1))].into(),
                ..sample(5)
            }),
        );
        let (gauges, source) = m.register_source();
        gauges.lines_read.fetch_add(7, Ordering::Relaxed);
        let before = series(&m.render()).len();
        drop((first, source));
        let _second = m.register_output("0:at.**", Box::new(|| sample(2)));
        let (_gauges, _source) = m.register_source();
        let text = m.render();
        let names = series(&text);
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names, unique, "a series shown twice");
        assert_eq!(names.len(), before);
        assert!(text.contains("at_forwarder_chunks_delivered_total{output=\"0:at.**\"} 7\n"));
        assert!(text.contains("at_forwarder_read_lines_total 7\n"));
        assert!(text.contains(
            "at_forwarder_service_events_delivered_total{output=\"0:at.**\",service=\"svc\"} 40\n"
        ));
        assert_eq!(text.matches("# TYPE at_forwarder_buffer_bytes").count(), 1);
    }
}
