//! Model test of the disk buffer: random appends, group commits (the moment records are
//! acknowledged to the tailer), seals, sends with every outcome, and crashes that lose
//! what was not fsynced (files cut anywhere after their last synced length), checked
//! against a model. Properties: every acknowledged record is delivered or kept (queued or
//! in backup/); nothing is delivered that was not appended; nothing is delivered twice.
//!
//! Run twice: chunks written through to disk (`memory_limit` 0), and chunks held in
//! memory, where a record counts as acknowledged only once the buffer's unsafe floor is
//! above the generation of its append (as the pipeline saves positions), chunks are
//! written to disk when memory is full (`Spill`), and a crash loses every chunk held in
//! memory.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use at_forwarder::buffer::{chunk, AppendError, Buffer, BufferOptions, Outcome, Receipt};
use at_forwarder::config::buffer::{OverflowAction, RetryConfig, RetryType};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Append { key: u8, n: usize },
    Sync,
    Seal,
    Send(Reply),
    Crash { cut: u64 },
    Reopen,
    Spill,
}

#[derive(Debug, Clone, Copy)]
enum Reply {
    Delivered,
    Retry,
    Reject,
    Split,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (0..3u8, 1..8usize).prop_map(|(key, n)| Action::Append { key, n }),
        3 => Just(Action::Sync),
        2 => Just(Action::Seal),
        2 => Just(Action::Send(Reply::Delivered)),
        1 => Just(Action::Send(Reply::Retry)),
        1 => Just(Action::Send(Reply::Reject)),
        1 => Just(Action::Send(Reply::Split)),
        1 => any::<u64>().prop_map(|cut| Action::Crash { cut }),
        1 => Just(Action::Reopen),
        1 => Just(Action::Spill),
    ]
}

fn options(path: &Path, memory_limit: u64) -> BufferOptions {
    BufferOptions {
        path: path.to_path_buf(),
        memory_limit,
        chunk_limit_size: 300,
        chunk_limit_records: Some(6),
        total_limit_size: 1 << 30,
        flush_interval: Duration::from_secs(3600),
        overflow_action: OverflowAction::Block,
        sync_bytes: 1 << 20,
        chunk_full_threshold: 1.0,
        retry: RetryConfig {
            retry_type: RetryType::ExponentialBackoff,
            wait: Duration::from_millis(1),
            exponential_backoff_base: 2.0,
            max_interval: Some(Duration::from_millis(10)),
            max_times: None,
            timeout: Duration::from_secs(3600),
            forever: true,
            randomize: true,
        },
    }
}

struct Model {
    dir: PathBuf,
    memory_limit: u64,
    buffer: Option<Arc<Buffer>>,
    seq: usize,
    appended: HashSet<Vec<u8>>,
    acked: HashSet<Vec<u8>>,
    /// Records not acknowledged yet, with the key and receipt of their append.
    unacked: Vec<(String, Receipt, Vec<u8>)>,
    delivered: HashMap<Vec<u8>, usize>,
    dead_lettered: HashSet<Vec<u8>>,
    /// Length of each chunk file at the last sync: a crash keeps at least this much.
    synced_len: HashMap<PathBuf, u64>,
}

impl Model {
    fn buffer(&self) -> &Buffer {
        self.buffer.as_ref().unwrap()
    }

    fn chunk_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.join("chunks"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "chunk"))
            .collect();
        files.sort();
        files
    }

    fn send(&mut self, reply: Reply) {
        let far = Instant::now() + Duration::from_secs(86_400);
        let Some(taken) = self.buffer().take(far) else {
            return;
        };
        let outcome = match reply {
            Reply::Delivered => Outcome::Delivered,
            Reply::Retry => Outcome::Retry {
                after: None,
                reason: "test".into(),
            },
            Reply::Reject => Outcome::Reject {
                reason: "test".into(),
            },
            Reply::Split => Outcome::Split,
        };
        if matches!(reply, Reply::Delivered) {
            for r in &taken.records {
                *self.delivered.entry(r.to_vec()).or_default() += 1;
            }
        }
        let mut dead = Vec::new();
        self.buffer()
            .finish(&taken, &outcome, |r| dead.push(r.to_vec()))
            .unwrap();
        self.dead_lettered.extend(dead);
    }

    fn apply(&mut self, action: &Action) {
        match *action {
            Action::Append { key, n } => {
                let records: Vec<Vec<u8>> = (0..n)
                    .map(|_| {
                        self.seq += 1;
                        format!(
                            "{{\"k\":{key},\"seq\":{},\"pad\":\"{}\"}}",
                            self.seq,
                            "p".repeat(self.seq % 23)
                        )
                        .into_bytes()
                    })
                    .collect();
                let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                let key = format!("svc{key}");
                let receipt = match self.buffer().append(&key, &refs) {
                    Err(AppendError::MemoryFull { .. }) => {
                        // What the pipeline does once deliveries do not free memory in time.
                        self.buffer().spill(false).unwrap();
                        self.buffer().append(&key, &refs).unwrap()
                    }
                    other => other.unwrap(),
                };
                self.appended.extend(records.iter().cloned());
                self.unacked
                    .extend(records.into_iter().map(|r| (key.clone(), receipt, r)));
            }
            Action::Sync => {
                self.buffer().sync().unwrap();
                let safety = self.buffer().safety();
                let (safe, held) = (self.unacked.drain(..))
                    .partition(|(key, receipt, _)| safety.is_safe(key, *receipt));
                self.unacked = held;
                self.acked.extend(
                    safe.into_iter()
                        .map(|(_, _, r): (String, Receipt, Vec<u8>)| r),
                );
                self.synced_len = self
                    .chunk_files()
                    .into_iter()
                    .map(|p| (p.clone(), std::fs::metadata(&p).unwrap().len()))
                    .collect();
            }
            Action::Seal => {
                self.buffer().seal_due(Instant::now(), true).unwrap();
                for p in self.chunk_files() {
                    let len = std::fs::metadata(&p).unwrap().len();
                    self.synced_len.insert(p, len);
                }
            }
            Action::Send(reply) => {
                self.send(reply);
                // Halves of a split are written whole and fsynced.
                for p in self.chunk_files() {
                    let len = std::fs::metadata(&p).unwrap().len();
                    self.synced_len.entry(p).or_insert(len);
                }
            }
            Action::Crash { cut } => {
                self.buffer = None;
                // Unsynced bytes may or may not have reached the disk: keep a random part.
                for p in self.chunk_files() {
                    let len = std::fs::metadata(&p).unwrap().len();
                    let synced = self.synced_len.get(&p).copied().unwrap_or(0).min(len);
                    let keep = synced + cut % (len - synced + 1);
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .unwrap()
                        .set_len(keep)
                        .unwrap();
                }
                self.unacked.clear();
                self.reopen();
            }
            Action::Reopen => {
                self.buffer = None;
                if self.memory_limit > 0 {
                    // Chunks held in memory are gone with the process; their lines would
                    // be read again, never acknowledged by this one.
                    self.unacked.clear();
                }
                self.reopen();
            }
            Action::Spill => {
                self.buffer().spill(false).unwrap();
                // Spilled chunks are written whole and fsynced.
                for p in self.chunk_files() {
                    let len = std::fs::metadata(&p).unwrap().len();
                    self.synced_len.entry(p).or_insert(len);
                }
            }
        }
    }

    fn reopen(&mut self) {
        self.buffer = Some(Buffer::open(options(&self.dir, self.memory_limit)).unwrap());
        self.synced_len = self
            .chunk_files()
            .into_iter()
            .map(|p| (p.clone(), std::fs::metadata(&p).unwrap().len()))
            .collect();
    }

    fn backed_up(&self) -> HashSet<Vec<u8>> {
        let mut out = HashSet::new();
        for e in std::fs::read_dir(self.dir.join("backup")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "chunk") {
                out.extend(chunk::scan(&p).unwrap().records.iter().map(<[u8]>::to_vec));
            }
        }
        out
    }
}

fn run_case(actions: &[Action], memory_limit: u64) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Model {
        dir: tmp.path().join("buf"),
        memory_limit,
        buffer: None,
        seq: 0,
        appended: HashSet::new(),
        acked: HashSet::new(),
        unacked: Vec::new(),
        delivered: HashMap::new(),
        dead_lettered: HashSet::new(),
        synced_len: HashMap::new(),
    };
    m.reopen();
    for a in actions {
        m.apply(a);
    }
    // Drain: seal and deliver everything left.
    m.buffer().seal_due(Instant::now(), true).unwrap();
    for _ in 0..10_000 {
        let before: usize = m.delivered.values().sum();
        m.send(Reply::Delivered);
        if m.delivered.values().sum::<usize>() == before && m.buffer().sizes().1 == 0 {
            break;
        }
    }
    let backed_up = m.backed_up();
    for r in &m.acked {
        prop_assert!(
            m.delivered.contains_key(r) || backed_up.contains(r) || m.dead_lettered.contains(r),
            "acknowledged record lost: {}",
            String::from_utf8_lossy(r)
        );
    }
    for (r, n) in &m.delivered {
        prop_assert!(
            m.appended.contains(r),
            "delivered a record never appended: {}",
            String::from_utf8_lossy(r)
        );
        prop_assert_eq!(*n, 1, "delivered twice: {}", String::from_utf8_lossy(r));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_records_are_never_lost(actions in prop::collection::vec(action(), 1..60)) {
        run_case(&actions, 0)?;
    }

    #[test]
    fn acknowledged_records_are_never_lost_with_chunks_in_memory(
        actions in prop::collection::vec(action(), 1..60)
    ) {
        // Room for about three chunks of 300 bytes: appends often find memory full.
        run_case(&actions, 1200)?;
    }
}
