//! Process-wide counters and gauges, rendered in the Prometheus text format for the
//! operations endpoint. Stages update them as they work; values owned by a stage (buffer
//! sizes, the oldest event's age) are read at scrape time through collectors.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// A scrape-time reader: appends its lines to the exposition.
pub type Collector = Box<dyn Fn(&mut String) + Send + Sync>;

/// The metrics of this process.
#[derive(Default)]
pub struct Metrics {
    /// Files being followed.
    pub files_tracked: AtomicU64,
    /// Bytes of lines read.
    pub bytes_read: AtomicU64,
    /// Lines read.
    pub lines_read: AtomicU64,
    /// Events accepted and handed to an output.
    pub events_emitted: AtomicU64,
    /// Requests to Activity Tracker by status (0: no answer).
    requests: Mutex<BTreeMap<u16, u64>>,
    /// Events refused by the event check, by reason.
    invalid: Mutex<BTreeMap<&'static str, u64>>,
    /// Events written to the dead-letter store, by reason.
    dead_lettered: Mutex<BTreeMap<&'static str, u64>>,
    /// Failed writes to the dead-letter store (each one retried).
    pub dead_letter_write_errors: AtomicU64,
    /// Dead-letter records removed to keep the store under `dead_letter_limit_size`.
    pub dead_letters_dropped: AtomicU64,
    /// Operations endpoint connections closed unanswered (too many open).
    pub ops_connections_evicted: AtomicU64,
    /// 1 per stage stalled (see [`crate::health`]), 0 per stage alive.
    stalled: Mutex<BTreeMap<String, u64>>,
    /// Unread bytes per followed file.
    lag: Mutex<BTreeMap<String, u64>>,
    /// Secret (re)loads.
    pub secret_reloads: AtomicU64,
    /// Configuration reloads that took effect, and that failed.
    pub reloads: AtomicU64,
    /// Failed reloads (the running pipeline was kept).
    pub reload_failures: AtomicU64,
    /// Start-up finished: configuration loaded, positions loaded, buffers open.
    pub ready: AtomicBool,
    collectors: Mutex<Vec<Collector>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The metrics of this process.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
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

    /// Replaces the unread bytes of the followed files.
    pub fn set_lag(&self, lag: impl IntoIterator<Item = (String, u64)>) {
        *lock(&self.lag) = lag.into_iter().collect();
    }

    /// Adds a scrape-time collector.
    pub fn collect(&self, collector: Collector) {
        lock(&self.collectors).push(collector);
    }

    /// Removes every collector (a reload registers them again).
    pub fn clear_collectors(&self) {
        lock(&self.collectors).clear();
    }

    /// The exposition, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(&mut out, "at_forwarder_up", "1 while the process runs.", 1);
        gauge(
            &mut out,
            "at_forwarder_ready",
            "1 once start-up finished (configuration, positions, buffers).",
            u64::from(self.ready.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "at_forwarder_files_tracked",
            "Files being followed.",
            load(&self.files_tracked),
        );
        counter(
            &mut out,
            "at_forwarder_read_bytes_total",
            "Bytes of lines read.",
            load(&self.bytes_read),
        );
        counter(
            &mut out,
            "at_forwarder_read_lines_total",
            "Lines read.",
            load(&self.lines_read),
        );
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
        labelled(
            &mut out,
            "at_forwarder_file_lag_bytes",
            "gauge",
            "Bytes not yet read, per followed file.",
            "path",
            &lock(&self.lag),
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
        for c in lock(&self.collectors).iter() {
            c(&mut out);
        }
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
        let escaped = k
            .as_ref()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(out, "{name}{{{label}=\"{escaped}\"}} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.lines_read.fetch_add(3, Ordering::Relaxed);
        m.request(200);
        m.request(503);
        m.invalid("invalid_json");
        m.set_lag([("/var/log/at/\"x\".log".to_string(), 42)]);
        m.collect(Box::new(|out| {
            gauge(out, "at_forwarder_test", "A test.", 7)
        }));
        let text = m.render();
        assert!(text.contains("at_forwarder_read_lines_total 3\n"));
        assert!(text.contains("at_forwarder_requests_total{code=\"503\"} 1\n"));
        assert!(text.contains("at_forwarder_events_invalid_total{reason=\"invalid_json\"} 1\n"));
        assert!(
            text.contains("at_forwarder_file_lag_bytes{path=\"/var/log/at/\\\"x\\\".log\"} 42\n")
        );
        assert!(text.contains("# TYPE at_forwarder_test gauge\nat_forwarder_test 7\n"));
    }
}
