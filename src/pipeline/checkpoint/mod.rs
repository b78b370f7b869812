//! When a tail position is saved: the one home of the delivery guarantee.
//!
//! # The invariant
//!
//! A saved position never runs ahead of a line that is neither delivered nor durable:
//! every line before it was written to stdout, dead-lettered, or appended to the buffer of
//! *every* destination it was routed to and there delivered, or fsynced. So a restart,
//! whatever stopped the process, reads on from a saved position and loses nothing.
//!
//! # How
//!
//! A worker hands each batch it has written to the [`Checkpointer`] ([`Checkpointer::hold`])
//! with, per file, the buffers' receipts for the appends that held its lines. Its positions wait (`waiting.rs`: per file,
//! for the chunks of that file's own lines) until each buffer reports that what was
//! appended before the mark has left memory — delivered, or written to a chunk file.
//! Released positions are then
//! 1. written to the **journal** (`<pos_file>.ahead`, `journal.rs`; page cache, no fsync), and
//! 2. saved by a **group commit**, at most `flush_interval` (the smallest of the
//!    outputs', ≤ 60 s) later or sooner when a buffer has `sync_bytes` unsynced: the
//!    buffers are fsynced first — open chunks and chunks that just filled up
//!    ([`Buffer::sync`]) — and only if every fsync succeeded are the positions written to
//!    the position store (sled, flushed with fsync).
//!
//! At start-up ([`Checkpointer::open`], after the buffers recovered and fsynced what they
//! found) the journal of this boot is applied: what the previous process had made safe
//! downstream counts as saved.
//!
//! # Crash cases, and the duplicates each can cause (never a loss)
//!
//! - **The process dies** (`kill -9`, OOM, panic): the page cache survives, so chunk files
//!   and the journal do. The next start resumes from the journal; lines read after it
//!   (held in memory chunks, not delivered) are read again. A record delivered before the
//!   crash is not appended again, and a chunk *being sent* at the crash is put together
//!   again from them and re-sent under its own id (the buffer's sent journal,
//!   `buffer/sent.rs`). Duplicates: such a chunk when the endpoint ignores
//!   Idempotency-Key, or when not all of its lines came back (a file deleted meanwhile).
//! - **The machine dies** (power loss, kernel panic): unsynced data and the journal are
//!   gone (the journal records its boot id and is ignored after a reboot). The saved
//!   positions cover only fsynced or delivered lines. Duplicates: what was delivered since
//!   the last group commit (up to `flush_interval`) is read and sent again.
//! - **An fsync fails** in a group commit: nothing is saved by it (ERROR); a later commit
//!   covers those positions once fsyncs succeed, or the lines are read again after a
//!   restart.
//! - **A copytruncate copy being read**: the copy's start and the truncated original's
//!   new start are saved together, before either file's later positions, so a crash
//!   never leaves the original's new start saved with nothing pointing to the copy's
//!   unread lines. Duplicates: the lines of both read before the crash.
//! - **A clean stop**: workers write chunks still in memory to disk, wait up to
//!   [`SAFE_DEADLINE`] for chunks being sent, and save every position: no duplicates.
//! - **A journal that cannot be written**: it is turned off (WARN); a process crash then
//!   re-sends what was read after the last save.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{error, info, warn};

use crate::health::Heartbeat;
use crate::tail::{Position, PositionStore};

use super::route::Routes;

mod journal;
mod waiting;

pub(super) use waiting::{Mark, Written};

use journal::JournalFile;
use waiting::Waiting;

/// How long the end of a source waits for chunks being sent to be delivered or written
/// to disk, so that its positions can be saved; after it, their lines are read again at
/// the next start.
const SAFE_DEADLINE: Duration = Duration::from_secs(10);

/// Holds one source's positions until they are safe, and saves them (see the module doc).
pub(super) struct Checkpointer {
    store: PositionStore,
    /// Where each `<match>` writes (its buffer, if any).
    routes: Routes,
    /// How long released positions may wait for a group commit.
    interval: Duration,
    journal: Mutex<Journal>,
    state: Mutex<State>,
    heartbeat: Heartbeat,
}

/// Positions released and not yet saved, and the file that records them for a restart.
struct Journal {
    file: Option<JournalFile>,
    unsaved: Vec<Position>,
}

struct State {
    waiting: Waiting,
    /// Released, for the next group commit.
    pending: Vec<Position>,
    pending_since: Option<Instant>,
    commits: Option<UnboundedSender<Vec<Position>>>,
    committer: Option<tokio::task::JoinHandle<()>>,
}

impl Checkpointer {
    /// The checkpointer of a source whose positions live in `store` (and whose journal
    /// beside `pos_file`, when positions are kept on disk); applies the journal the
    /// previous process left in this boot. Call it after the buffers were opened (they
    /// recover and fsync what they find), within a Tokio runtime (it starts the group
    /// commits, reporting to `heartbeat`).
    pub(super) fn open(
        store: PositionStore,
        pos_file: Option<&Path>,
        routes: Routes,
        interval: Duration,
        heartbeat: Heartbeat,
    ) -> Result<Arc<Self>> {
        let file = match pos_file {
            Some(pos_file) => {
                let path = journal::path_for(pos_file);
                resume(&store, &path)?;
                JournalFile::create(&path)
                    .map_err(|e| warn!(file = %path.display(), error = %e, "Cannot record positions read ahead; a crash will re-send what was read after the last save."))
                    .ok()
                    .flatten()
            }
            None => None,
        };
        let (commits, rx) = unbounded_channel();
        let checkpointer = Arc::new(Checkpointer {
            store,
            routes,
            interval,
            journal: Mutex::new(Journal {
                file,
                unsaved: Vec::new(),
            }),
            state: Mutex::new(State {
                waiting: Waiting::default(),
                pending: Vec::new(),
                pending_since: None,
                commits: Some(commits),
                committer: None,
            }),
            heartbeat,
        });
        let committer = tokio::spawn(commit_loop(Arc::clone(&checkpointer), rx));
        checkpointer.lock_state().committer = Some(committer);
        Ok(checkpointer)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds a written batch's positions until they are safe.
    pub(super) fn hold(&self, batch: Written) {
        self.lock_state().waiting.push(batch);
    }

    /// Whether positions wait for their chunks.
    pub(super) fn holding(&self) -> bool {
        !self.lock_state().waiting.is_empty()
    }

    /// Releases the positions that became safe (recording them in the journal) and hands
    /// them to a group commit when one is due (always when `closing`). Returns how long
    /// until the next commit is due.
    pub(super) fn advance(&self, closing: bool) -> Duration {
        let mut state = self.lock_state();
        let released = state.waiting.release(&self.routes);
        if !released.is_empty() {
            let mut journal = self.lock_journal();
            merge_positions(&mut journal.unsaved, released.iter().cloned());
            journal.record();
            drop(journal);
            merge_positions(&mut state.pending, released);
            state.pending_since.get_or_insert_with(Instant::now);
        }
        let due = closing
            || state
                .pending_since
                .is_some_and(|t| t.elapsed() >= self.interval)
            || self.routes.buffers().any(|b| b.sync_due(Instant::now()));
        if due && !state.pending.is_empty() {
            let positions = std::mem::take(&mut state.pending);
            if let Some(commits) = &state.commits {
                let _ = commits.send(positions);
            }
            state.pending_since = None;
        }
        state.pending_since.map_or(Duration::from_secs(3600), |t| {
            self.interval.saturating_sub(t.elapsed())
        })
    }

    /// Resolves when a buffer reports progress (a chunk delivered or written to disk).
    pub(super) fn progress(&self) -> impl std::future::Future<Output = ()> + Unpin + '_ {
        let mut waits: Vec<_> = (self.routes.buffers())
            .map(|b| {
                let mut wait = Box::pin(b.progress().notified());
                wait.as_mut().enable();
                wait
            })
            .collect();
        std::future::poll_fn(move |cx| {
            let ready =
                (waits.iter_mut()).any(|w| std::future::Future::poll(w.as_mut(), cx).is_ready());
            if ready {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    /// At the end of the input: writes every chunk still in memory to disk, and waits (up
    /// to [`SAFE_DEADLINE`]) for those being sent, so the positions of every batch written
    /// can be saved.
    pub(super) async fn make_safe(&self) {
        if !self.holding() {
            return;
        }
        for b in self.routes.buffers() {
            let b = Arc::clone(b);
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || b.spill(true)).await {
                error!(error = %e, "Could not write chunks held in memory to disk at shutdown; their lines are read again at the next start.");
            }
        }
        let deadline = Instant::now() + SAFE_DEADLINE;
        loop {
            let progress = self.progress();
            if self.lock_state().waiting.all_safe(&self.routes) || Instant::now() >= deadline {
                return;
            }
            let _ = tokio::time::timeout_at(deadline.into(), progress).await;
        }
    }

    /// Saves what was released, then ends the group commits.
    pub(super) async fn close(&self) {
        self.advance(true);
        let committer = {
            let mut state = self.lock_state();
            state.commits = None;
            state.committer.take()
        };
        if let Some(committer) = committer {
            let _ = committer.await;
        }
    }

    /// A group commit: fsyncs every buffer, then saves the positions.
    fn commit(&self, positions: &[Position]) -> std::io::Result<()> {
        for b in self.routes.buffers() {
            b.sync()?;
        }
        self.store
            .commit(positions)
            .map_err(std::io::Error::other)?;
        let mut journal = self.lock_journal();
        // Only what this commit saved leaves the journal: a later position of the same
        // file (read on, or a new generation after a truncation) stays.
        journal.unsaved.retain(|u| {
            !positions
                .iter()
                .any(|p| p.key == u.key && p.checkpoint == u.checkpoint)
        });
        journal.record();
        Ok(())
    }
}

impl Journal {
    fn record(&mut self) {
        if let Some(file) = &mut self.file {
            if let Err(e) = file.write(self.unsaved.iter()) {
                // Only costs duplicates after a crash: the saved positions still hold.
                warn!(error = %e, "Could not record positions read ahead; disabling that record.");
                self.file = None;
            }
        }
    }
}

/// Later positions replace earlier ones of the same file.
fn merge_positions(into: &mut Vec<Position>, later: impl IntoIterator<Item = Position>) {
    for p in later {
        match into.iter_mut().find(|q| q.key == p.key) {
            Some(q) => *q = p,
            None => into.push(p),
        }
    }
}

/// Takes positions to save, merges whatever queued up while the previous commit ran, and
/// commits (fsync of the buffers, then the positions) until the checkpointer closes.
async fn commit_loop(checkpointer: Arc<Checkpointer>, mut rx: UnboundedReceiver<Vec<Position>>) {
    let heartbeat = checkpointer.heartbeat.clone();
    loop {
        heartbeat.idle();
        let Some(mut positions) = rx.recv().await else {
            break;
        };
        heartbeat.working();
        while let Ok(more) = rx.try_recv() {
            merge_positions(&mut positions, more);
        }
        let c = Arc::clone(&checkpointer);
        match tokio::task::spawn_blocking(move || c.commit(&positions)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "Group commit failed; positions are not saved (the lines will be read again after a restart).")
            }
            Err(e) => error!(error = %e, "Group commit task failed."),
        }
    }
}

/// Saves the positions the previous process recorded as safe downstream in this boot
/// (see `journal.rs`). The journal holds, per file, the latest position released and not
/// yet saved (a commit removes exactly what it saved), so where it differs from the saved
/// one it is the newer — also for a new generation of a truncated file.
fn resume(store: &PositionStore, path: &Path) -> Result<()> {
    let recorded = journal::read_this_boot(path);
    let mut newer = Vec::new();
    for p in recorded {
        let saved = store.get(p.key).context("reading saved positions")?;
        let c = &p.checkpoint;
        let differs = saved.is_none_or(|s| {
            (s.offset, s.head, s.marker, s.born) != (c.offset, c.head, c.marker, c.born)
        });
        if differs {
            newer.push(p);
        }
    }
    if !newer.is_empty() {
        store
            .commit(&newer)
            .context("saving positions read ahead")?;
        info!(
            files = newer.len(),
            "Resuming after a crash from what the previous process had written to its buffer."
        );
    }
    Ok(())
}
