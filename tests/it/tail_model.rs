//! Model test of the tailer: random sequences of writes, rotations, truncations, deletes
//! and crashes against a real directory, checked against a simple model of which lines
//! exist. The properties:
//!
//! - every complete line written is emitted at least once;
//! - no line is emitted that was not written whole (no partial lines, no fragments);
//! - a line is emitted again only after a restart, and only if the batch that first
//!   carried it had not been committed (made durable downstream) before that restart.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use at_forwarder::tail::{Batch, PositionStore, TailOptions, Tailer};
use proptest::prelude::*;

const FILES: usize = 2;

#[derive(Debug, Clone)]
enum Action {
    Append {
        file: usize,
        lines: usize,
    },
    AppendPartial {
        file: usize,
    },
    RenameRotate {
        file: usize,
    },
    CopyTruncate {
        file: usize,
    },
    /// Drains first: a deleted file's unread lines are gone by nature.
    DeleteRotated,
    /// Drains first, then truncates the live file in place.
    Truncate {
        file: usize,
    },
    Poll {
        commit: bool,
    },
    Commit,
    Restart,
    PassTime,
}

fn action() -> impl Strategy<Value = Action> {
    let file = 0..FILES;
    prop_oneof![
        6 => (file.clone(), 1..6usize).prop_map(|(file, lines)| Action::Append { file, lines }),
        2 => file.clone().prop_map(|file| Action::AppendPartial { file }),
        2 => file.clone().prop_map(|file| Action::RenameRotate { file }),
        2 => file.clone().prop_map(|file| Action::CopyTruncate { file }),
        1 => Just(Action::DeleteRotated),
        1 => file.prop_map(|file| Action::Truncate { file }),
        6 => any::<bool>().prop_map(|commit| Action::Poll { commit }),
        2 => Just(Action::Commit),
        2 => Just(Action::Restart),
        1 => Just(Action::PassTime),
    ]
}

/// The writer side: live files, their rotated siblings, and the lines written.
struct World {
    dir: PathBuf,
    seq: usize,
    rotations: usize,
    /// A line whose first half is written to a live file, its second half not yet.
    partial: [Option<String>; FILES],
    /// Every line written whole.
    complete: Vec<String>,
}

impl World {
    fn live(&self, file: usize) -> PathBuf {
        self.dir.join(format!("svc{file}.log"))
    }

    fn append(&mut self, file: usize, text: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.live(file))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn new_line(&mut self, file: usize) -> String {
        self.seq += 1;
        // Varied lengths, some sharing a long common prefix as audit events do.
        format!(
            "{{\"meta\":{{\"serviceProviderName\":\"svc{file}\"}},\"seq\":{},\"pad\":\"{}\"}}",
            self.seq,
            "x".repeat(self.seq % 37)
        )
    }

    fn finish_partial(&mut self, file: usize) -> String {
        match self.partial[file].take() {
            Some(line) => {
                let rest = line[line.len() / 2..].to_string();
                self.complete.push(line);
                rest + "\n"
            }
            None => String::new(),
        }
    }

    fn rotated_name(&mut self, file: usize) -> PathBuf {
        self.rotations += 1;
        self.dir.join(format!("svc{file}.log.{}", self.rotations))
    }
}

/// The reader side: tailer, store, and what was emitted.
struct Reader {
    store_dir: PathBuf,
    opts: TailOptions,
    tailer: Option<Tailer>,
    store: Option<PositionStore>,
    pending: Vec<(Batch, Vec<String>)>,
    epoch: usize,
    now: Instant,
    /// For each line: emissions as (epoch, committed before the next restart).
    emitted: HashMap<String, Vec<(usize, bool)>>,
    /// Emission ids of the pending batches, to mark them committed.
    pending_ids: Vec<Vec<(String, usize)>>,
}

impl Reader {
    fn start(&mut self) {
        let store = PositionStore::open(&self.store_dir).unwrap();
        self.tailer = Some(Tailer::open(self.opts.clone(), store.clone()).unwrap());
        self.store = Some(store);
    }

    fn poll(&mut self, commit: bool) -> usize {
        let batch = self.tailer.as_mut().unwrap().poll(self.now);
        let n = batch.len();
        let mut ids = Vec::new();
        let mut lines = Vec::new();
        for line in batch.lines() {
            let text = String::from_utf8(line.bytes.to_vec()).unwrap();
            let list = self.emitted.entry(text.clone()).or_default();
            list.push((self.epoch, false));
            ids.push((text.clone(), list.len() - 1));
            lines.push(text);
        }
        self.pending.push((batch, lines));
        self.pending_ids.push(ids);
        if commit {
            self.commit();
        }
        n
    }

    fn commit(&mut self) {
        for ((batch, _), ids) in self.pending.drain(..).zip(self.pending_ids.drain(..)) {
            self.store
                .as_ref()
                .unwrap()
                .commit(&batch.positions)
                .unwrap();
            for (text, i) in ids {
                self.emitted.get_mut(&text).unwrap()[i].1 = true;
            }
        }
    }

    fn restart(&mut self) {
        // Dropped without a clean shutdown: uncommitted batches are simply lost.
        self.tailer = None;
        self.store = None;
        self.pending.clear();
        self.pending_ids.clear();
        self.epoch += 1;
        self.start();
    }

    /// Polls and commits until nothing more is read.
    fn drain(&mut self) {
        for _ in 0..200 {
            if self.poll(true) == 0 && self.poll(true) == 0 {
                return;
            }
        }
        panic!("the tailer never caught up");
    }
}

fn run_case(actions: &[Action]) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let mut world = World {
        dir: logs.clone(),
        seq: 0,
        rotations: 0,
        partial: [None, None],
        complete: Vec::new(),
    };
    let opts = TailOptions {
        read_lines_limit: 3,
        max_line_size: 4096,
        open_files_limit: 3,
        read_from_head: true,
        ..TailOptions::new(vec![format!("{}/*.log*", logs.display())])
    };
    let mut reader = Reader {
        store_dir: tmp.path().join("pos.sled"),
        opts,
        tailer: None,
        store: None,
        pending: Vec::new(),
        epoch: 0,
        now: Instant::now(),
        emitted: HashMap::new(),
        pending_ids: Vec::new(),
    };
    reader.start();
    for action in actions {
        apply(&mut world, &mut reader, action);
    }
    reader.drain();
    check(&world, &reader)
}

fn apply(world: &mut World, reader: &mut Reader, action: &Action) {
    match *action {
        Action::Append { file, lines } => {
            let mut text = world.finish_partial(file);
            for _ in 0..lines {
                let line = world.new_line(file);
                text.push_str(&line);
                text.push('\n');
                world.complete.push(line);
            }
            world.append(file, &text);
        }
        Action::AppendPartial { file } => {
            let mut text = world.finish_partial(file);
            let line = world.new_line(file);
            text.push_str(&line[..line.len() / 2]);
            world.partial[file] = Some(line);
            world.append(file, &text);
        }
        Action::RenameRotate { file } => {
            if world.live(file).exists() {
                let to = world.rotated_name(file);
                std::fs::rename(world.live(file), to).unwrap();
                // The half-written line stays unfinished in the rotated file.
                world.partial[file] = None;
            }
        }
        Action::CopyTruncate { file } => {
            if world.live(file).exists() {
                let to = world.rotated_name(file);
                std::fs::copy(world.live(file), to).unwrap();
                File::options()
                    .write(true)
                    .open(world.live(file))
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                world.partial[file] = None;
            }
        }
        Action::DeleteRotated => {
            reader.drain();
            let mut rotated: Vec<PathBuf> = std::fs::read_dir(&world.dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| is_rotated(p))
                .collect();
            rotated.sort();
            if let Some(oldest) = rotated.first() {
                std::fs::remove_file(oldest).unwrap();
            }
        }
        Action::Truncate { file } => {
            reader.drain();
            if world.live(file).exists() {
                File::options()
                    .write(true)
                    .open(world.live(file))
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                world.partial[file] = None;
            }
        }
        Action::Poll { commit } => {
            reader.poll(commit);
        }
        Action::Commit => reader.commit(),
        Action::Restart => reader.restart(),
        Action::PassTime => reader.now += Duration::from_secs(6),
    }
}

fn is_rotated(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.to_string_lossy().chars().all(|c| c.is_ascii_digit()))
}

fn check(world: &World, reader: &Reader) -> Result<(), TestCaseError> {
    for line in &world.complete {
        prop_assert!(reader.emitted.contains_key(line), "never emitted: {line}");
    }
    for (line, emissions) in &reader.emitted {
        prop_assert!(
            world.complete.contains(line),
            "emitted but never written whole: {line:?}"
        );
        for pair in emissions.windows(2) {
            let ((first_epoch, first_committed), (second_epoch, _)) = (pair[0], pair[1]);
            prop_assert!(
                second_epoch > first_epoch && !first_committed,
                "duplicate without a restart, or after a commit: {line} emitted as {emissions:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_line_lost_and_duplicates_only_after_an_uncommitted_restart(actions in prop::collection::vec(action(), 1..40)) {
        run_case(&actions)?;
    }
}

/// Sequences the model test found while the tailer was being written, kept as named cases.
#[test]
fn regressions_found_by_the_model() {
    use Action::*;
    let cases: Vec<Vec<Action>> = vec![
        // copytruncate while down: the copy is finished from the original's position.
        vec![
            Append { file: 0, lines: 1 },
            DeleteRotated,
            CopyTruncate { file: 0 },
            Restart,
        ],
        // A copy found while the original is known truncated must get its start position saved.
        vec![
            Append { file: 1, lines: 1 },
            Poll { commit: false },
            CopyTruncate { file: 1 },
            Append { file: 0, lines: 1 },
            Truncate { file: 0 },
            Restart,
        ],
        // Inode of a deleted rotated file reused while the tailer had it closed.
        vec![
            Append { file: 0, lines: 1 },
            RenameRotate { file: 0 },
            Append { file: 1, lines: 1 },
            RenameRotate { file: 1 },
            Append { file: 0, lines: 1 },
            Append { file: 1, lines: 1 },
            RenameRotate { file: 0 },
            DeleteRotated,
            Append { file: 0, lines: 1 },
        ],
        // A copy taking the inode of a deleted file that still had a saved position.
        vec![
            Append { file: 0, lines: 1 },
            Append { file: 1, lines: 1 },
            Append { file: 0, lines: 1 },
            CopyTruncate { file: 0 },
            DeleteRotated,
            Restart,
            DeleteRotated,
            Restart,
            CopyTruncate { file: 1 },
        ],
        // Truncation of a closed file seen through its new name.
        vec![
            Append { file: 0, lines: 1 },
            CopyTruncate { file: 0 },
            CopyTruncate { file: 0 },
            Append { file: 0, lines: 1 },
            AppendPartial { file: 1 },
            DeleteRotated,
            CopyTruncate { file: 0 },
            RenameRotate { file: 0 },
        ],
        // An offset of 0 proves nothing: a shared prefix is not a copy.
        vec![
            Append { file: 0, lines: 1 },
            Truncate { file: 0 },
            AppendPartial { file: 0 },
            Append { file: 1, lines: 1 },
            Truncate { file: 0 },
            CopyTruncate { file: 1 },
            Restart,
            RenameRotate { file: 0 },
        ],
        // Saved positions of truncated files are gathered before any new file is judged.
        vec![
            Append { file: 1, lines: 1 },
            RenameRotate { file: 1 },
            DeleteRotated,
            Append { file: 0, lines: 1 },
            Restart,
            DeleteRotated,
            DeleteRotated,
            Restart,
            CopyTruncate { file: 0 },
            RenameRotate { file: 0 },
        ],
    ];
    for actions in cases {
        if let Err(e) = run_case(&actions) {
            panic!("{actions:?}: {e}");
        }
    }
}
