//! Where each `<match>`'s events go, resolved once per pipeline instance: one [`Route`]
//! per destination — a `<match>`, or each `<store>` of a `@type copy` — and, per match,
//! the destinations it sends to. Groups, marks and the checkpoint speak of destinations;
//! only the sort stage turns a match into its destinations.

use std::sync::Arc;

use crate::buffer::Buffer;

/// The destination of one `<match>`.
#[derive(Debug)]
pub(super) enum Route {
    /// `@type stdout`: each event written as it is, one per line.
    Stdout,
    /// A buffered output: appended to its buffer, sent by its delivery engine.
    Buffered {
        buffer: Arc<Buffer>,
        /// `flush_at_shutdown`: delivery goes on at shutdown until the buffer is empty.
        flush_at_shutdown: bool,
    },
}

/// The destinations of a pipeline, and each match's.
#[derive(Debug, Clone, Default)]
pub(super) struct Routes(Arc<[Route]>, Arc<[Vec<usize>]>);

impl Routes {
    /// `routes` by destination id; `targets[m]`: the destinations of match `m`.
    pub(super) fn new(routes: Vec<Route>, targets: Vec<Vec<usize>>) -> Self {
        Routes(routes.into(), targets.into())
    }

    /// The destinations of match `index` (one, or a copy's stores).
    pub(super) fn targets(&self, index: usize) -> &[usize] {
        self.1.get(index).map_or(&[], Vec::as_slice)
    }

    /// The route of destination `index`.
    pub(super) fn get(&self, index: usize) -> &Route {
        &self.0[index]
    }

    /// Destinations, by id.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The buffer of destination `index`, if it has one.
    pub(super) fn buffer(&self, index: usize) -> Option<&Arc<Buffer>> {
        match self.0.get(index)? {
            Route::Buffered { buffer, .. } => Some(buffer),
            Route::Stdout => None,
        }
    }

    /// Every buffer, in destination order.
    pub(super) fn buffers(&self) -> impl Iterator<Item = &Arc<Buffer>> + '_ {
        (0..self.len()).filter_map(|i| self.buffer(i))
    }

    /// Every buffer, with its `flush_at_shutdown`.
    pub(super) fn flushed(&self) -> impl Iterator<Item = (&Arc<Buffer>, bool)> + '_ {
        self.0.iter().filter_map(|r| match r {
            Route::Buffered {
                buffer,
                flush_at_shutdown,
            } => Some((buffer, *flush_at_shutdown)),
            Route::Stdout => None,
        })
    }
}
