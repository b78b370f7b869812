//! Runs a source's `<rotate>` ([`crate::tail::rotation`]) beside its tailer: a pass every
//! [`Rotator::interval`], with "delivered" answered by the buffers of every route, so a
//! rotated file is removed only once each buffer has delivered (or set aside on disk)
//! everything it held when the file's last line was saved.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::route::Routes;
use crate::metrics::Metrics;
use crate::tail::rotation::Rotator;

/// Passes until `shutdown`.
pub(super) async fn run(
    mut rotator: Rotator,
    routes: Routes,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let every = rotator.interval();
    loop {
        let routes_now = routes.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let delivered_since = |ms: u64| {
                routes_now
                    .buffers()
                    .all(|b| b.oldest_undelivered_ms().is_none_or(|oldest| oldest > ms))
            };
            let report = rotator.pass(SystemTime::now(), &delivered_since);
            (rotator, report)
        });
        let (back, report) = match pass.await {
            Ok(done) => done,
            Err(e) => {
                // A panic in a pass must not end forwarding; rotation stops (reported).
                warn!(error = %e, "File rotation stopped after an internal error.");
                return;
            }
        };
        rotator = back;
        let add = |a: &std::sync::atomic::AtomicU64, n: usize| {
            a.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
        };
        add(&metrics.files_rotated, report.rotated);
        add(&metrics.rotated_files_removed, report.removed);
        add(&metrics.rotation_errors, report.errors);
        metrics.rotated_files_waiting.store(
            u64::try_from(report.waiting).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
