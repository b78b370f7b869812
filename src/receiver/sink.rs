//! Sink mode (`receiver --sink`): counts events and distinct ids, stores nothing. The
//! benchmarks' receiver: it shares the machine with the forwarder it measures, so it is
//! kept cheap (the checker's scanner reads the bodies; latencies go into a histogram,
//! not a list sorted on every poll).

use std::sync::Mutex;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::App;
use crate::event::time::Timestamp;

/// What the sink mode counted.
#[derive(Default)]
pub(super) struct SinkCounts {
    /// Events counted (replays of an Idempotency-Key excluded).
    events: u64,
    requests: u64,
    /// Requests whose `<service>\0<Idempotency-Key>` was seen before: answered, not counted.
    replays: u64,
    /// Times each event id was counted.
    ids: rustc_hash::FxHashMap<String, u32>,
    keys: std::collections::HashSet<String>,
    /// Delays from `eventTime` to receipt, when asked for.
    latencies: Option<Latencies>,
}

impl SinkCounts {
    pub(super) fn new(latency: bool) -> Self {
        SinkCounts {
            latencies: latency.then(Latencies::default),
            ..SinkCounts::default()
        }
    }
}

/// Delays counted per millisecond up to [`Latencies::EXACT_MS`]; longer ones in one
/// bucket, with the longest kept.
#[derive(Default)]
struct Latencies {
    per_ms: Vec<u64>,
    n: u64,
    max: u64,
}

impl Latencies {
    const EXACT_MS: usize = 1 << 16;

    fn record(&mut self, ms: u64) {
        if self.per_ms.is_empty() {
            self.per_ms = vec![0; Self::EXACT_MS + 1];
        }
        let bucket = usize::try_from(ms).map_or(Self::EXACT_MS, |b| b.min(Self::EXACT_MS));
        self.per_ms[bucket] += 1;
        self.n += 1;
        self.max = self.max.max(ms);
    }

    /// The delay below which the fraction `q` of them lie (the bucket of the
    /// `floor(n × q)`-th, counted from 0, as a sorted list would give).
    fn quantile(&self, q: f64) -> u64 {
        let rank = ((self.n as f64 * q) as u64).min(self.n.saturating_sub(1));
        let mut seen = 0;
        for (ms, count) in self.per_ms.iter().enumerate() {
            seen += count;
            if seen > rank {
                return if ms == Self::EXACT_MS {
                    self.max
                } else {
                    ms as u64
                };
            }
        }
        0
    }
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow, default)]
    payload: Option<Inner<'a>>,
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Inner<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, rename = "eventTime")]
    event_time: Option<std::borrow::Cow<'a, str>>,
}

/// Counts a request's events and ids, skipping everything else in the body. A request
/// whose Idempotency-Key was seen before is a replay (the wire contract: the endpoint
/// answers it without storing again): counted as such, its events not.
pub(super) fn count_only(sink: &Mutex<SinkCounts>, key: Option<String>, body: &[u8]) -> Response {
    // The checker's scanner first: serde_json skipping the bytes one at a time made this
    // receiver cost as much CPU as the forwarder it measures.
    let fast = std::str::from_utf8(body)
        .ok()
        .and_then(crate::event::ids_and_times);
    let events = match fast {
        Some(events) => events,
        None => match serde_json::from_slice::<Vec<IdOnly<'_>>>(body) {
            Ok(v) => v
                .into_iter()
                .map(|e| match e.payload {
                    Some(p) => (p.id.or(e.id), p.event_time),
                    None => (e.id, None),
                })
                .collect(),
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("the body must be a JSON array of events: {e}"),
                )
                    .into_response()
            }
        },
    };
    let mut counts = sink
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    counts.requests += 1;
    if let Some(key) = key {
        if !counts.keys.insert(key) {
            counts.replays += 1;
            return StatusCode::OK.into_response();
        }
    }
    counts.events += events.len() as u64;
    let now = Timestamp::from(SystemTime::now());
    for (id, time) in events {
        if let (Some(latencies), Some(t)) = (&mut counts.latencies, time) {
            if let Ok(t) = crate::event::time::parse(&t) {
                let ms = (now.secs - t.secs) * 1000
                    + (i64::from(now.nanos) - i64::from(t.nanos)) / 1_000_000;
                latencies.record(u64::try_from(ms).unwrap_or(0));
            }
        }
        if let Some(id) = id {
            match counts.ids.get_mut(id.as_ref()) {
                Some(n) => *n += 1,
                None => {
                    counts.ids.insert(id.into_owned(), 1);
                }
            }
        }
    }
    StatusCode::OK.into_response()
}

/// `GET /sink`: the counts, and the latency percentiles when recorded.
pub(super) async fn counts(State(app): State<App>) -> Response {
    match &app.sink {
        Some(sink) => {
            let c = sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut body = serde_json::json!({"events": c.events, "distinct": c.ids.len(), "requests": c.requests, "replays": c.replays});
            if let Some(l) = &c.latencies {
                body["latency_ms"] = serde_json::json!({"n": l.n, "p50": l.quantile(0.5), "p99": l.quantile(0.99), "max": l.max});
            }
            Json(body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not in sink mode").into_response(),
    }
}

/// `GET /sink/ids`: `{"<id>": times counted, …}`, for checks by id.
pub(super) async fn ids(State(app): State<App>) -> Response {
    match &app.sink {
        Some(sink) => {
            let c = sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Json(&c.ids).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not in sink mode").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::Latencies;

    #[test]
    fn percentiles_are_those_of_the_sorted_delays() {
        let delays = [5u64, 1, 9, 3, 3, 70_000, 2, 8, 4, 6];
        let mut l = Latencies::default();
        for d in delays {
            l.record(d);
        }
        let mut sorted = delays.to_vec();
        sorted.sort_unstable();
        for q in [0.0, 0.5, 0.9, 0.99] {
            let at = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
            assert_eq!(l.quantile(q), sorted[at], "q {q}");
        }
        assert_eq!(l.max, 70_000);
        assert_eq!(Latencies::default().quantile(0.5), 0);
    }
}
