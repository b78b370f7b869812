//! Dead letters requeued by `at-forwarder dead-letters requeue` land in
//! `<state>/requeue/*.log`; the pipeline reads them itself, as one more tail source that
//! takes the first source's tag, checks and routes, with positions of its own
//! (`<state>/requeue.pos`), so that they are forwarded without a configuration change,
//! by a running daemon within a second.

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::{Config, Source, SourceKind};

/// Adds the requeue source to `config` (after the configured ones), creating its
/// directory; nothing without a tail source to take settings from.
pub(super) fn add_source(config: &mut Config, state: &Path) -> Result<()> {
    let Some(first) = config.sources.first() else {
        return Ok(());
    };
    let dir = state.join(crate::event::dead_letter::REQUEUE_DIR);
    crate::fsutil::create_private_dir(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut source: Source = first.clone();
    let SourceKind::Tail(tail) = &mut source.kind;
    tail.options.paths = vec![format!("{}/*.log", dir.display())];
    tail.options.exclude_paths.clear();
    tail.options.pos_file = Some(state.join("requeue.pos"));
    tail.options.read_from_head = true;
    tail.options.limit_recently_modified = None;
    tail.options.skip_refresh_on_startup = false;
    tail.rotation = None;
    config.sources.push(source);
    Ok(())
}
