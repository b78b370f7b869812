//! The dead-letter store: append, list, requeue, runs, the limit.
use super::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn appends_lists_and_requeues() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dir.path()).unwrap();
    store
        .append(&[
            DeadLetter::new(
                Reason::InvalidJson,
                "invalid JSON",
                Path::new("/l/a.log"),
                10,
                b"{not json",
            ),
            DeadLetter::new(
                Reason::InvalidUtf8,
                "invalid UTF-8 at byte 1",
                Path::new("/l/a.log"),
                20,
                b"x\xff",
            ),
            DeadLetter::new(
                Reason::MissingService,
                "missing meta",
                Path::new("/l/b.log"),
                0,
                b"{}",
            ),
        ])
        .unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(store.dir()), 0o700);
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(
        mode(
            &store
                .dir()
                .join(format!("{}.jsonl", listed[0].id.split(':').next().unwrap()))
        ),
        0o600
    );
    assert_eq!(listed[1].letter.line, b"x\xff");
    assert_eq!(listed[1].letter.reason, Reason::InvalidUtf8);
    assert_eq!(
        store.counts(),
        [
            (Reason::InvalidJson, 1),
            (Reason::InvalidUtf8, 1),
            (Reason::MissingService, 1)
        ]
    );
    let (moved, file) = store
        .requeue(|s| s.letter.reason == Reason::MissingService)
        .unwrap();
    assert_eq!(moved, 1);
    assert_eq!(fs::read(file.unwrap()).unwrap(), b"{}\n");
    assert_eq!(store.list().unwrap().len(), 2);
}

#[test]
fn long_lines_keep_their_start_and_a_torn_record_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dir.path()).unwrap();
    let long = vec![b'x'; KEPT_BYTES * 2];
    store
        .append(&[DeadLetter::new(
            Reason::LineTooLong,
            "too long",
            Path::new("/l/a.log"),
            0,
            &long,
        )])
        .unwrap();
    let day = store.days().unwrap().pop().unwrap();
    OpenOptions::new()
        .append(true)
        .open(store.dir().join(format!("{day}.jsonl")))
        .unwrap()
        .write_all(b"{\"v\":1,\"ti")
        .unwrap();
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].truncated);
    assert_eq!(
        (listed[0].letter.line.len(), listed[0].letter.length),
        (KEPT_BYTES, 2 * KEPT_BYTES as u64)
    );
}

fn flood(store: &DeadLetterStore, path: &Path, lines: u64, per_append: u64) {
    let mut offset = 0;
    while offset < lines * 2 {
        let letters: Vec<DeadLetter> = (0..per_append)
            .map(|i| {
                DeadLetter::new(
                    Reason::InvalidJson,
                    "expected value at line 1 column 1",
                    path,
                    offset + i * 2,
                    b"x",
                )
            })
            .collect();
        offset += per_append * 2;
        store.append(&letters).unwrap();
    }
}

fn stored(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn a_flood_of_one_byte_lines_takes_at_most_twice_its_size_and_requeues_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = DeadLetterStore::open(dir.path()).unwrap();
    let path = Path::new("/var/log/at/svc/flood.log");
    // 200,000 lines "x\n" (400,000 bytes), in batches as the tail reads them.
    flood(&store, path, 200_000, 20_000);
    let on_disk = stored(store.dir());
    assert!(on_disk <= 2 * 400_000, "{on_disk} bytes for 400,000");
    let all = store.list().unwrap();
    assert_eq!(all.iter().map(|s| s.count).sum::<u64>(), 200_000);
    let first = &all[0];
    assert_eq!(
        (first.letter.offset, first.letter.path.as_path()),
        (0, path)
    );
    assert!(first.count > 1 && first.letter.line.starts_with(b"x\nx\n"));
    let (moved, file) = store.requeue(|_| true).unwrap();
    assert_eq!(moved, all.len());
    let text = fs::read(file.unwrap()).unwrap();
    assert_eq!(text, b"x\n".repeat(200_000));
}

#[test]
fn past_the_limit_the_oldest_records_go_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 * 1024;
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
    let store =
        DeadLetterStore::open_with_limit(dir.path(), limit, std::sync::Arc::clone(&metrics))
            .unwrap();
    // Lines that do not follow each other: one record each (~200 bytes).
    for i in 0..2_000u64 {
        let l = DeadLetter::new(
            Reason::MissingService,
            "missing meta",
            Path::new("/l/a.log"),
            i * 100,
            b"{}",
        );
        store.append(&[l]).unwrap();
    }
    let on_disk = stored(store.dir());
    assert!(
        on_disk <= limit + limit / 8 + 1024,
        "{on_disk} over {limit}"
    );
    let left = store.list().unwrap();
    assert!(left.len() < 2_000);
    assert_eq!(
        left.last().unwrap().letter.offset,
        1_999 * 100,
        "the newest are kept"
    );
    let dropped = metrics
        .dead_letters_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped >= 2_000 - left.len() as u64, "{dropped}");
}
