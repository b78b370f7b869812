//! What a send's outcome does to a taken chunk: delivered (removed), retried later,
//! split in two, discarded, or moved to the backup directory.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::{chunk, now_ms, remove_quietly, Meta, Queued, State, Store};
use crate::buffer::records::Records;
use crate::buffer::retry::Next;
use crate::buffer::Outcome;

impl Store {
    /// Applies a send's outcome to a taken chunk.
    pub(in crate::buffer) fn finish(
        &self,
        id: &str,
        outcome: &Outcome,
        now: Instant,
    ) -> io::Result<()> {
        let mut s = self.lock();
        let Some(q) = s.queue.get(id).cloned() else {
            return Ok(());
        };
        match outcome {
            Outcome::Delivered => {
                s.queue.remove(id);
                s.total = s.total.saturating_sub(q.bytes);
                s.counters.delivered += 1;
                *s.delivered_by_key.entry(q.key.clone()).or_default() += q.records;
                if let Some(failures) = s.retry_reports.delivered(&q.key) {
                    info!(key = %q.key, failed_attempts = failures, "Delivering again.");
                }
                if q.resident.is_some() {
                    s.memory = s.memory.saturating_sub(q.bytes);
                    return Ok(());
                }
                drop(s);
                remove_quietly(&self.chunk_path(id));
                remove_quietly(&self.meta_path(id));
            }
            // Splitting is done by the caller with the records in hand.
            Outcome::Split => s.queue.get_mut(id).expect("present above").in_flight = false,
            Outcome::Reject { reason } => {
                error!(chunk = %id, key = %q.key, %reason, "Chunk rejected for good; moved to the backup directory.");
                self.backup_locked(&mut s, id, reason);
            }
            Outcome::Retry { after, reason } => {
                s.counters.retries += 1;
                let attempts = q.attempts + 1;
                let first = q.first_failure.unwrap_or((now, now_ms()));
                match self.policy.next(
                    attempts,
                    now.saturating_duration_since(first.0),
                    *after,
                    fastrand::f64(),
                ) {
                    Next::RetryIn(delay) => {
                        let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                        match s.retry_reports.failed(&q.key, now) {
                            Some(not_logged) => {
                                warn!(chunk = %id, key = %q.key, attempts, retry_in_ms, %reason, failures_not_logged = not_logged, "Send failed; will retry (logged once a minute per key at most).")
                            }
                            None => {
                                debug!(chunk = %id, key = %q.key, attempts, retry_in_ms, %reason, "Send failed; will retry.")
                            }
                        }
                        let entry = s.queue.get_mut(id).expect("present above");
                        entry.attempts = attempts;
                        entry.first_failure = Some(first);
                        // The policy caps delays at a day; saturating all the same.
                        entry.next_attempt = now.checked_add(delay).unwrap_or(now);
                        entry.in_flight = false;
                        let meta = Meta {
                            attempts,
                            first_failure_ms: Some(first.1),
                            next_attempt_ms: Some(now_ms().saturating_add(
                                u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            )),
                            ..Meta::sealed(&q.key, q.created_ms, q.records, q.bytes)
                        };
                        drop(s);
                        // A chunk still in memory (it could not be spilled) has no file
                        // for its `.meta` to describe.
                        if q.resident.is_none() {
                            chunk::write_meta(&self.meta_path(id), &meta)?;
                        }
                    }
                    Next::GiveUp => {
                        error!(chunk = %id, key = %q.key, attempts, %reason, "Retries exhausted; chunk moved to the backup directory.");
                        self.backup_locked(
                            &mut s,
                            id,
                            &format!("retries exhausted after {attempts} attempts: {reason}"),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Replaces a chunk by two holding its halves (an endpoint said the request was too
    /// large); the halves keep its place in the queue.
    pub(in crate::buffer) fn split(&self, id: &str, records: &Records) -> io::Result<()> {
        let Some(q) = self.lock().queue.get(id).cloned() else {
            return Ok(());
        };
        let mid = records.len() / 2;
        let mut halves = Vec::new();
        for (suffix, part) in [("a", 0..mid), ("b", mid..records.len())] {
            let half_id = format!("{id}{suffix}");
            let count = part.len() as u64;
            let path = self.chunk_path(&half_id);
            let bytes = chunk::write_whole(&path, &q.key, q.created_ms, records.range(part))?;
            let meta = Meta {
                attempts: q.attempts,
                ..Meta::sealed(&q.key, q.created_ms, count, bytes)
            };
            chunk::write_meta(&self.meta_path(&half_id), &meta)?;
            halves.push((half_id, bytes, count));
        }
        let mut s = self.lock();
        s.queue.remove(id);
        s.total = s.total.saturating_sub(q.bytes);
        if q.resident.is_some() {
            s.memory = s.memory.saturating_sub(q.bytes);
        }
        for (half_id, bytes, n) in halves {
            s.total += bytes;
            s.queue.insert(
                half_id,
                Queued {
                    bytes,
                    records: n,
                    first_failure: None,
                    next_attempt: Instant::now(),
                    in_flight: false,
                    resident: None,
                    ..q.clone()
                },
            );
        }
        drop(s);
        remove_quietly(&self.chunk_path(id));
        remove_quietly(&self.meta_path(id));
        Ok(())
    }

    /// Removes a chunk whose only record was dead-lettered.
    pub(in crate::buffer) fn discard(&self, id: &str) {
        let mut s = self.lock();
        if let Some(q) = s.queue.remove(id) {
            s.total = s.total.saturating_sub(q.bytes);
            if q.resident.is_some() {
                s.memory = s.memory.saturating_sub(q.bytes);
                return;
            }
        }
        drop(s);
        remove_quietly(&self.chunk_path(id));
        remove_quietly(&self.meta_path(id));
    }

    pub(super) fn backup_locked(&self, s: &mut State, id: &str, reason: &str) {
        // A chunk in memory is written to disk first; if that fails it stays queued.
        if self.spill_locked(s, id).is_err()
            || s.queue.get(id).is_some_and(|q| q.resident.is_some())
        {
            if let Some(q) = s.queue.get_mut(id) {
                q.in_flight = false;
            }
            return;
        }
        let Some(q) = s.queue.remove(id) else { return };
        s.total = s.total.saturating_sub(q.bytes);
        s.counters.backed_up += 1;
        let meta = Meta {
            attempts: q.attempts,
            first_failure_ms: q.first_failure.map(|f| f.1),
            backup_reason: Some(reason.to_string()),
            ..Meta::sealed(&q.key, q.created_ms, q.records, q.bytes)
        };
        let moved = fs::rename(
            self.chunk_path(id),
            self.dirs.backup.join(format!("{id}.chunk")),
        )
        .and_then(|()| chunk::write_meta(&self.dirs.backup.join(format!("{id}.meta")), &meta))
        .and_then(|()| chunk::sync_dir(&self.dirs.backup));
        remove_quietly(&self.meta_path(id));
        if let Err(e) = moved {
            error!(chunk = %id, error = %e, "Could not move a chunk to the backup directory; it stays in chunks/ and will be sent again after a restart.");
        }
    }
}

/// How often a failing key's retries are logged at WARN.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Per key: when a failed send was last logged at WARN, and the failures since.
#[derive(Debug, Default)]
pub(super) struct RetryReports {
    keys: HashMap<String, Report>,
}

#[derive(Debug)]
struct Report {
    logged: Instant,
    not_logged: u64,
    failures: u64,
}

impl RetryReports {
    /// Notes a failed send of `key`; `Some(failures not logged since the last line)` when
    /// this one is to be logged: the first, then one a minute at most.
    fn failed(&mut self, key: &str, now: Instant) -> Option<u64> {
        let Some(r) = self.keys.get_mut(key) else {
            self.keys.insert(
                key.to_string(),
                Report {
                    logged: now,
                    not_logged: 0,
                    failures: 1,
                },
            );
            return Some(0);
        };
        r.failures += 1;
        if now.saturating_duration_since(r.logged) < REPORT_EVERY {
            r.not_logged += 1;
            return None;
        }
        r.logged = now;
        Some(std::mem::take(&mut r.not_logged))
    }

    /// Notes a delivery of `key`; `Some(failures)` when it had been failing.
    fn delivered(&mut self, key: &str) -> Option<u64> {
        self.keys.remove(key).map(|r| r.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_key_is_logged_at_once_then_once_a_minute_with_a_count() {
        let mut reports = RetryReports::default();
        let t0 = Instant::now();
        assert_eq!(reports.failed("svc", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(reports.failed("svc", t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(reports.failed("other", t0), Some(0), "per key");
        assert_eq!(reports.failed("svc", t0 + REPORT_EVERY), Some(5));
        assert_eq!(reports.delivered("svc"), Some(7));
        assert_eq!(reports.delivered("svc"), None);
        assert_eq!(
            reports.failed("svc", t0 + REPORT_EVERY),
            Some(0),
            "a new failure is news"
        );
    }
}
