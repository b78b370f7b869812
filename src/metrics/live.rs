//! What a running pipeline reports at scrape time: its outputs' buffers and its sources'
//! tail gauges. Each is registered for the life of one pipeline instance and unregistered
//! when its [`Registration`] drops (a reload builds new ones), so a scrape shows each series
//! once; the counters of an instance that ended are carried over to the next one with the
//! same labels, so counters keep counting across reloads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{lock, Metrics};

/// One output's buffer as sampled at a scrape.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BufferSample {
    /// Bytes of chunks (on disk or held in memory).
    pub bytes: u64,
    /// Bytes of chunks held in memory only.
    pub memory: u64,
    /// Chunks open, queued (sealed), and being sent.
    pub open: u64,
    /// Chunks sealed and waiting to be sent.
    pub queued: u64,
    /// Chunks being sent.
    pub in_flight: u64,
    /// Age of the oldest event not yet delivered, in seconds.
    pub oldest_age_s: u64,
    /// Counters since the buffer was opened.
    pub counts: BufferCounts,
    /// Per service: events delivered since the buffer was opened, and events waiting.
    pub services: BTreeMap<String, (u64, u64)>,
}

/// Counters of one buffer, added up across pipeline instances.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BufferCounts {
    /// Chunks accepted by the endpoint.
    pub delivered: u64,
    /// Failed send attempts.
    pub retries: u64,
    /// Chunks moved to backup/.
    pub backed_up: u64,
    /// Damaged records or files set aside.
    pub quarantined: u64,
    /// Chunks held in memory that were written to disk.
    pub spilled: u64,
}

impl BufferCounts {
    fn plus(self, o: BufferCounts) -> BufferCounts {
        BufferCounts {
            delivered: self.delivered + o.delivered,
            retries: self.retries + o.retries,
            backed_up: self.backed_up + o.backed_up,
            quarantined: self.quarantined + o.quarantined,
            spilled: self.spilled + o.spilled,
        }
    }
}

/// Reads a buffer's state at a scrape.
pub type Sampler = Box<dyn Fn() -> BufferSample + Send + Sync>;

/// Writes a plain-text report on request (the positions of a source, for `GET /positions`).
pub type Report = Arc<dyn Fn() -> String + Send + Sync>;

/// The gauges and counters one tail source updates as it reads.
#[derive(Debug, Default)]
pub struct SourceGauges {
    /// Files being followed.
    pub files_tracked: AtomicU64,
    /// Bytes of lines read.
    pub bytes_read: AtomicU64,
    /// Lines read.
    pub lines_read: AtomicU64,
    lag: Mutex<BTreeMap<String, u64>>,
}

impl SourceGauges {
    /// Replaces the unread bytes of this source's files.
    pub fn set_lag(&self, lag: impl IntoIterator<Item = (String, u64)>) {
        *lock(&self.lag) = lag.into_iter().collect();
    }
}

#[derive(Default)]
pub(super) struct Live {
    next_id: u64,
    outputs: Vec<(u64, String, Sampler)>,
    sources: Vec<(u64, Arc<SourceGauges>)>,
    /// Position reports, one per source.
    positions: Vec<(u64, Report)>,
    /// Counters of instances that ended, by output label.
    carried: BTreeMap<String, BufferCounts>,
    /// Events delivered by instances that ended, by output label and service.
    carried_services: BTreeMap<(String, String), u64>,
    /// Lines and bytes read by sources that ended.
    carried_read: (u64, u64),
}

/// Unregisters what it stands for when dropped.
#[must_use = "what was registered is unregistered when this drops"]
pub struct Registration {
    metrics: Arc<Metrics>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = lock(&self.metrics.live);
        let id = self.id;
        if let Some(i) = live.outputs.iter().position(|(o, ..)| *o == id) {
            let (_, label, sampler) = live.outputs.remove(i);
            let last = sampler();
            for (service, (delivered, _)) in last.services {
                *(live.carried_services)
                    .entry((label.clone(), service))
                    .or_default() += delivered;
            }
            let carried = live.carried.entry(label).or_default();
            *carried = carried.plus(last.counts);
        }
        live.positions.retain(|(p, _)| *p != id);
        if let Some(i) = live.sources.iter().position(|(s, _)| *s == id) {
            let (_, gauges) = live.sources.remove(i);
            live.carried_read.0 += gauges.lines_read.load(Ordering::Relaxed);
            live.carried_read.1 += gauges.bytes_read.load(Ordering::Relaxed);
        }
    }
}

impl Metrics {
    /// Reports an output's buffer, labelled `output`, until the registration drops.
    pub fn register_output(self: &Arc<Self>, output: &str, sampler: Sampler) -> Registration {
        let mut live = lock(&self.live);
        live.next_id += 1;
        let id = live.next_id;
        live.outputs.push((id, output.to_string(), sampler));
        Registration {
            metrics: Arc::clone(self),
            id,
        }
    }

    /// Gauges for one tail source, reported until the registration drops.
    pub fn register_source(self: &Arc<Self>) -> (Arc<SourceGauges>, Registration) {
        let gauges = Arc::new(SourceGauges::default());
        let mut live = lock(&self.live);
        live.next_id += 1;
        let id = live.next_id;
        live.sources.push((id, Arc::clone(&gauges)));
        let registration = Registration {
            metrics: Arc::clone(self),
            id,
        };
        (gauges, registration)
    }

    /// A source's position report, served at `GET /positions` until the registration
    /// drops.
    pub fn register_positions(self: &Arc<Self>, report: Report) -> Registration {
        let mut live = lock(&self.live);
        live.next_id += 1;
        let id = live.next_id;
        live.positions.push((id, report));
        Registration {
            metrics: Arc::clone(self),
            id,
        }
    }

    /// The position reports, in source order.
    pub(super) fn position_reports(&self) -> Vec<Report> {
        lock(&self.live)
            .positions
            .iter()
            .map(|(_, r)| Arc::clone(r))
            .collect()
    }

    /// Appends the sources' and outputs' series, each family once.
    pub(super) fn render_live(&self, out: &mut String) {
        use std::fmt::Write;
        let live = lock(&self.live);
        let sum = |f: fn(&SourceGauges) -> &AtomicU64| -> u64 {
            live.sources
                .iter()
                .map(|(_, g)| f(g).load(Ordering::Relaxed))
                .sum()
        };
        super::gauge(
            out,
            "at_forwarder_files_tracked",
            "Files being followed.",
            sum(|g| &g.files_tracked),
        );
        super::counter(
            out,
            "at_forwarder_read_bytes_total",
            "Bytes of lines read.",
            live.carried_read.1 + sum(|g| &g.bytes_read),
        );
        super::counter(
            out,
            "at_forwarder_read_lines_total",
            "Lines read.",
            live.carried_read.0 + sum(|g| &g.lines_read),
        );
        let mut lag = BTreeMap::new();
        for (_, g) in &live.sources {
            lag.extend(lock(&g.lag).iter().map(|(k, v)| (k.clone(), *v)));
        }
        super::labelled(
            out,
            "at_forwarder_file_lag_bytes",
            "gauge",
            "Bytes not yet read, per followed file.",
            "path",
            &lag,
        );
        let samples: Vec<(String, BufferSample)> = (live.outputs.iter())
            .map(|(_, label, sampler)| {
                let mut s = sampler();
                s.counts = s
                    .counts
                    .plus(live.carried.get(label).copied().unwrap_or_default());
                for ((output, service), delivered) in &live.carried_services {
                    if output == label {
                        s.services.entry(service.clone()).or_default().0 += delivered;
                    }
                }
                (super::escape(label), s)
            })
            .collect();
        type Family = (
            &'static str,
            &'static str,
            &'static str,
            fn(&BufferSample) -> u64,
        );
        let families: [Family; 8] = [
            ("at_forwarder_buffer_bytes", "gauge", "Bytes of chunks in the buffer (on disk or held in memory), per output.", |s| s.bytes),
            ("at_forwarder_buffer_memory_bytes", "gauge", "Bytes of chunks held in memory only, per output.", |s| s.memory),
            ("at_forwarder_chunks_spilled_total", "counter", "Chunks held in memory that were written to disk (a failed attempt, memory full, shutdown).", |s| s.counts.spilled),
            ("at_forwarder_chunks_delivered_total", "counter", "Chunks accepted by the endpoint.", |s| s.counts.delivered),
            ("at_forwarder_retries_total", "counter", "Failed send attempts.", |s| s.counts.retries),
            ("at_forwarder_chunks_backed_up_total", "counter", "Chunks moved to backup/ (rejected, retries exhausted, dropped).", |s| s.counts.backed_up),
            ("at_forwarder_chunks_quarantined_total", "counter", "Damaged records or files set aside.", |s| s.counts.quarantined),
            ("at_forwarder_oldest_undelivered_age_seconds", "gauge", "Age of the oldest event not yet delivered.", |s| s.oldest_age_s),
        ];
        if samples.is_empty() {
            return;
        }
        for (name, kind, help, value) in families {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for (label, s) in &samples {
                let _ = writeln!(out, "{name}{{output=\"{label}\"}} {}", value(s));
            }
        }
        type PerService = (
            &'static str,
            &'static str,
            &'static str,
            fn(&(u64, u64)) -> u64,
        );
        let per_service: [PerService; 2] = [
            (
                "at_forwarder_service_events_delivered_total",
                "counter",
                "Events accepted by the endpoint, per output and service.",
                |c| c.0,
            ),
            (
                "at_forwarder_service_events_waiting",
                "gauge",
                "Events in the buffer (open, queued or being sent), per output and service.",
                |c| c.1,
            ),
        ];
        for (name, kind, help, value) in per_service {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
            for (label, s) in &samples {
                for (service, counts) in &s.services {
                    let service = super::escape(service);
                    let _ = writeln!(
                        out,
                        "{name}{{output=\"{label}\",service=\"{service}\"}} {}",
                        value(counts)
                    );
                }
            }
        }
        let name = "at_forwarder_buffer_chunks";
        let _ = write!(
            out,
            "# HELP {name} Chunks by state, per output.\n# TYPE {name} gauge\n"
        );
        for (label, s) in &samples {
            for (state, n) in [
                ("open", s.open),
                ("queued", s.queued),
                ("in_flight", s.in_flight),
            ] {
                let _ = writeln!(out, "{name}{{output=\"{label}\",state=\"{state}\"}} {n}");
            }
        }
    }
}
