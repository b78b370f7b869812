//! Importing fluentd's `pos_file` once, so that a switch from fluentd neither re-sends
//! nor skips what fluentd had read.

use std::path::Path;

use tracing::{info, warn};

use super::{unix_now, Tailer};
use crate::tail::discovery::Found;
use crate::tail::identity;
use crate::tail::positions::{Checkpoint, FluentdEntry, Position};

impl Tailer {
    /// Turns fluentd's pos entries into saved positions for the files found by inode.
    pub(super) fn import_fluentd(&mut self, found: &[Found]) {
        let entries = std::mem::take(&mut self.fluentd);
        let mut imported = Vec::new();
        for e in &entries {
            let Some(f) = found.iter().find(|f| f.key.ino == e.ino) else {
                continue;
            };
            let Ok(file) = self.discovery.confinement().open(&f.path) else {
                continue;
            };
            let size = f.meta.len();
            let offset = e.offset.min(size);
            let (Ok(head), Ok(marker)) =
                (identity::head(&file, size), identity::marker(&file, offset))
            else {
                continue;
            };
            let checkpoint = Checkpoint {
                v: 1,
                offset,
                head,
                marker,
                born: identity::birth_time(&f.meta),
                path: f.path.clone(),
                seen: unix_now(),
            };
            self.saved.insert(f.key, checkpoint.clone());
            imported.push(Position {
                key: f.key,
                checkpoint,
            });
        }
        info!(
            entries = entries.len(),
            matched = imported.len(),
            "Imported fluentd's pos file."
        );
        let path = self
            .opts
            .pos_file
            .clone()
            .expect("entries come from a pos file");
        if let Err(e) = self
            .store
            .commit(&imported)
            .and_then(|()| self.store.mark_imported(&path))
        {
            warn!(error = %e, "Could not save the imported fluentd positions; they will be imported again at the next start.");
        }
    }
}

pub(super) fn read_fluentd_pos(path: &Path) -> Vec<FluentdEntry> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    if !meta.is_file() {
        return Vec::new();
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let (entries, bad) = crate::tail::positions::parse_fluentd_pos(&text);
            for (line, text) in bad {
                warn!(file = %path.display(), line, text, "Malformed line in fluentd's pos file, not imported.");
            }
            entries
        }
        Err(e) => {
            warn!(file = %path.display(), error = %e, "Cannot read fluentd's pos file; not imported.");
            Vec::new()
        }
    }
}
