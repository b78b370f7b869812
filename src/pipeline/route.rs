//! Where each `<match>`'s events go, resolved once per pipeline instance: one [`Route`]
//! value per match, so the stages that sort, write and checkpoint hold one list instead of
//! vectors indexed together with `config.matches`. (Filters and `@type copy` are to become
//! routes of their own.)

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

/// The routes of a pipeline, by match index.
#[derive(Debug, Clone, Default)]
pub(super) struct Routes(Arc<[Route]>);

impl Routes {
    pub(super) fn new(routes: Vec<Route>) -> Self {
        Routes(routes.into())
    }

    /// The route of match `index`.
    pub(super) fn get(&self, index: usize) -> &Route {
        &self.0[index]
    }

    /// Matches, by index.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The buffer of match `index`, if it has one.
    pub(super) fn buffer(&self, index: usize) -> Option<&Arc<Buffer>> {
        match self.0.get(index)? {
            Route::Buffered { buffer, .. } => Some(buffer),
            Route::Stdout => None,
        }
    }

    /// Every buffer, in match order.
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
