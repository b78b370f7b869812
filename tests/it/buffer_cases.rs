//! Named cases of the disk buffer: damaged files found at start-up, limits, outcomes.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use at_forwarder::buffer::{AppendError, Buffer, BufferOptions, Outcome, Receipt};
use at_forwarder::config::buffer::{OverflowAction, RetryConfig, RetryType};

fn options(path: &Path) -> BufferOptions {
    BufferOptions {
        path: path.to_path_buf(),
        chunk_limit_size: 1 << 20,
        chunk_limit_records: Some(3),
        memory_limit: 0,
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
            max_times: Some(2),
            timeout: Duration::from_secs(3600),
            forever: false,
            randomize: false,
        },
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// Appends `n` records as 3-record chunks of key "svc" and seals them all.
/// Appends `n` records under `svc`, fsyncs and seals; the last append's receipt.
fn fill(buffer: &Buffer, n: usize) -> Option<Receipt> {
    let mut last = None;
    for i in 0..n {
        last = Some(
            buffer
                .append("svc", &[format!("{{\"n\":{i}}}").as_bytes()])
                .unwrap(),
        );
    }
    buffer.sync().unwrap();
    buffer.seal_due(Instant::now(), true).unwrap();
    last
}

fn drain(buffer: &Buffer) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(t) = buffer.take(far()) {
        out.extend(
            t.records
                .iter()
                .map(|r| String::from_utf8(r.to_vec()).unwrap()),
        );
        buffer.finish(&t, &Outcome::Delivered, |_| {}).unwrap();
    }
    out
}

fn chunk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir.join("chunks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "chunk"))
        .collect();
    v.sort();
    v
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn a_flipped_byte_quarantines_one_record_and_the_rest_is_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("buf");
    fill(&Buffer::open(options(&dir)).unwrap(), 6);
    let first = &chunk_files(&dir)[0];
    let mut bytes = fs::read(first).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    fs::write(first, bytes).unwrap();
    let buffer = Buffer::open(options(&dir)).unwrap();
    let got = drain(&buffer);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(!got.contains(&"{\"n\":2}".to_string()));
    assert_eq!(names(&dir.join("quarantine")).len(), 1);
    assert_eq!(buffer.counters().quarantined, 1);
    // Audit data: the quarantined piece is the owner's only (issue 20, row 13).
    for entry in fs::read_dir(dir.join("quarantine")).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn a_truncated_chunk_keeps_its_complete_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("buf");
    fill(&Buffer::open(options(&dir)).unwrap(), 3);
    let file = &chunk_files(&dir)[0];
    let len = fs::metadata(file).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let got = drain(&Buffer::open(options(&dir)).unwrap());
    assert_eq!(got, ["{\"n\":0}", "{\"n\":1}"]);
    assert!(names(&dir.join("quarantine"))
        .iter()
        .any(|n| n.contains(".tail-")));
}

#[test]
fn zero_length_files_and_stray_temp_files_are_cleared() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("buf");
    fill(&Buffer::open(options(&dir)).unwrap(), 3);
    fs::write(dir.join("chunks/0000000000001-00000000-000001.chunk"), b"").unwrap();
    fs::write(
        dir.join("chunks/0000000000002-00000000-000002.meta.tmp"),
        b"{\"v\":1,",
    )
    .unwrap();
    fs::write(
        dir.join("chunks/0000000000003-00000000-000003.chunk"),
        b"garbage that is no chunk",
    )
    .unwrap();
    let buffer = Buffer::open(options(&dir)).unwrap();
    assert_eq!(drain(&buffer).len(), 3);
    assert_eq!(
        names(&dir.join("quarantine")),
        ["0000000000003-00000000-000003.chunk"]
    );
    assert!(
        names(&dir.join("chunks")).is_empty(),
        "{:?}",
        names(&dir.join("chunks"))
    );
}

#[test]
fn unsealed_chunks_left_by_a_crash_are_sent_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("buf");
    {
        let buffer = Buffer::open(options(&dir)).unwrap();
        buffer.append("a", &[b"{\"x\":1}"]).unwrap();
        buffer.append("b", &[b"{\"x\":2}"]).unwrap();
        buffer.sync().unwrap();
    }
    let mut got = drain(&Buffer::open(options(&dir)).unwrap());
    got.sort();
    assert_eq!(got, ["{\"x\":1}", "{\"x\":2}"]);
}

#[test]
fn a_failing_key_does_not_hold_back_another() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(&tmp.path().join("buf"));
    // Retry-After is capped by retry_max_interval: none here (a day).
    opts.retry.max_interval = None;
    let buffer = Buffer::open(opts).unwrap();
    buffer.append("bad", &[b"1"]).unwrap();
    buffer.append("good", &[b"2"]).unwrap();
    buffer.seal_due(Instant::now(), true).unwrap();
    let first = buffer.take(far()).unwrap();
    assert_eq!(first.key, "bad");
    // While "bad" is in flight (or waiting to retry), "good" is taken.
    let second = buffer.take(far()).unwrap();
    assert_eq!(second.key, "good");
    buffer
        .finish(
            &first,
            &Outcome::Retry {
                after: Some(Duration::from_secs(600)),
                reason: "503".into(),
            },
            |_| {},
        )
        .unwrap();
    buffer.finish(&second, &Outcome::Delivered, |_| {}).unwrap();
    assert!(
        buffer.take(Instant::now()).is_none(),
        "the retry is not due yet"
    );
    assert!(
        buffer.next_due().unwrap() > Instant::now() + Duration::from_secs(500),
        "Retry-After is honoured"
    );
}

#[test]
fn retries_run_out_into_the_backup_directory_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("buf");
    let buffer = Buffer::open(options(&dir)).unwrap();
    fill(&buffer, 1);
    for _ in 0..3 {
        let t = buffer.take(far()).unwrap();
        buffer
            .finish(
                &t,
                &Outcome::Retry {
                    after: None,
                    reason: "HTTP 500".into(),
                },
                |_| {},
            )
            .unwrap();
    }
    assert!(buffer.take(far()).is_none());
    let metas: Vec<String> = names(&dir.join("backup"))
        .into_iter()
        .filter(|n| n.ends_with(".meta"))
        .collect();
    assert_eq!(metas.len(), 1);
    let meta = fs::read_to_string(dir.join("backup").join(&metas[0])).unwrap();
    assert!(
        meta.contains("retries exhausted after 3 attempts: HTTP 500"),
        "{meta}"
    );
}

#[test]
fn split_halves_a_chunk_and_dead_letters_a_lone_record() {
    let tmp = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(options(&tmp.path().join("buf"))).unwrap();
    fill(&buffer, 3);
    let t = buffer.take(far()).unwrap();
    buffer
        .finish(&t, &Outcome::Split, |_| panic!("not a single record"))
        .unwrap();
    let a = buffer.take(far()).unwrap();
    assert_eq!(a.records.len(), 1);
    let mut dead = Vec::new();
    buffer
        .finish(&a, &Outcome::Split, |r| dead.push(r.to_vec()))
        .unwrap();
    assert_eq!(dead, [b"{\"n\":0}".to_vec()]);
    let b = buffer.take(far()).unwrap();
    assert_eq!(b.records.len(), 2);
}

#[test]
fn the_total_limit_blocks_or_drops_the_oldest_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(&tmp.path().join("block"));
    opts.total_limit_size = 400;
    let buffer = Buffer::open(opts.clone()).unwrap();
    let record = [b'x'; 60];
    let mut appended = 0;
    let err = loop {
        match buffer.append("svc", &[&record]) {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, AppendError::Full { .. }), "{err}");
    assert!(appended >= 4);
    // Delivering frees space.
    buffer.seal_due(Instant::now(), true).unwrap();
    let t = buffer.take(far()).unwrap();
    buffer.finish(&t, &Outcome::Delivered, |_| {}).unwrap();
    buffer.append("svc", &[&record]).unwrap();

    opts.path = tmp.path().join("drop");
    opts.overflow_action = OverflowAction::DropOldestChunk;
    let buffer = Buffer::open(opts.clone()).unwrap();
    for _ in 0..20 {
        buffer.append("svc", &[&record]).unwrap();
        buffer.seal_due(Instant::now(), true).unwrap();
    }
    assert!(buffer.counters().dropped > 0);
    assert!(
        !names(&opts.path.join("backup")).is_empty(),
        "dropped chunks are kept in backup/, never silently lost"
    );
}

/// The chunk id is the request's Idempotency-Key: it survives a retry and a restart.
#[test]
fn a_chunk_keeps_its_id_across_retries_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("buf");
    let first = {
        let buffer = Buffer::open(options(&dir)).unwrap();
        fill(&buffer, 2);
        let t = buffer.take(far()).unwrap();
        buffer
            .finish(
                &t,
                &Outcome::Retry {
                    after: None,
                    reason: "503".into(),
                },
                |_| {},
            )
            .unwrap();
        assert_eq!(buffer.take(far()).unwrap().id, t.id);
        t
    };
    let buffer = Buffer::open(options(&dir)).unwrap();
    let again = buffer.take(far()).unwrap();
    assert_eq!(
        (again.id.as_str(), again.attempts, &again.records),
        (first.id.as_str(), 1, &first.records)
    );
}

#[test]
fn chunks_in_memory_touch_the_disk_only_when_an_attempt_fails() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BufferOptions {
        memory_limit: 1 << 20,
        ..options(dir.path())
    };
    let buffer = Buffer::open(opts.clone()).unwrap();
    // 7 records: two full chunks of 3 and an open one of 1, all in memory.
    let after_fill = fill(&buffer, 7).unwrap();
    assert!(chunk_files(dir.path()).is_empty(), "nothing written yet");
    assert!(buffer.memory() > 0);
    assert!(
        !buffer.safety().is_safe("svc", after_fill),
        "records not safe yet"
    );

    // The first is delivered straight from memory; the second fails and goes to disk.
    let first = buffer.take(far()).unwrap();
    assert_eq!(first.records.len(), 3);
    buffer.finish(&first, &Outcome::Delivered, |_| {}).unwrap();
    assert!(chunk_files(dir.path()).is_empty());
    let second = buffer.take(far()).unwrap();
    let retry = Outcome::Retry {
        after: None,
        reason: "503".into(),
    };
    buffer.finish(&second, &retry, |_| {}).unwrap();
    // It waits on disk, and so does the chunk of the same key queued behind it.
    let on_disk = chunk_files(dir.path());
    assert_eq!(on_disk.len(), 2, "{on_disk:?}");
    assert!(on_disk[0].to_string_lossy().contains(&second.id));

    // A restart (the process died) finds both, the failed one with its id.
    drop(buffer);
    let buffer = Buffer::open(opts).unwrap();
    let again = buffer.take(far()).unwrap();
    assert_eq!(again.id, second.id);
    assert_eq!(again.records, second.records);
    buffer.finish(&again, &Outcome::Delivered, |_| {}).unwrap();
    let last = buffer.take(far()).unwrap();
    assert_eq!(last.records, ["{\"n\":6}"]);
    buffer.finish(&last, &Outcome::Delivered, |_| {}).unwrap();
    assert!(buffer.take(far()).is_none());
    assert!(chunk_files(dir.path()).is_empty());
}

#[test]
fn a_chunk_in_memory_whose_split_cannot_be_written_is_kept_for_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = Buffer::open(BufferOptions {
        memory_limit: 1 << 20,
        ..options(dir.path())
    })
    .unwrap();
    fill(&buffer, 3);
    let taken = buffer.take(far()).unwrap();
    assert!(chunk_files(dir.path()).is_empty(), "held in memory");
    // The first half's file cannot be written (a directory stands in its place).
    fs::create_dir_all(dir.path().join(format!("chunks/{}a.chunk", taken.id))).unwrap();
    fs::write(
        dir.path().join(format!("chunks/{}a.chunk/x", taken.id)),
        b"",
    )
    .unwrap();
    assert!(buffer.finish(&taken, &Outcome::Split, |_| {}).is_err());
    let again = buffer.take(far()).unwrap();
    assert_eq!(
        (again.id.as_str(), &again.records),
        (taken.id.as_str(), &taken.records)
    );
}

#[test]
fn memory_full_seals_open_chunks_and_spills_the_oldest_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BufferOptions {
        memory_limit: 400,
        chunk_limit_records: None,
        ..options(dir.path())
    };
    let buffer = Buffer::open(opts).unwrap();
    let record = [b'x'; 60];
    let mut full = None;
    for i in 0..20 {
        match buffer.append(&format!("svc{}", i % 2), &[&record[..]]) {
            Ok(_) => {}
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    assert!(matches!(full, Some(AppendError::MemoryFull { limit: 400 })));
    // The open chunks were sealed, so they can be sent now rather than at their age.
    let (_, queued, open) = buffer.sizes();
    assert_eq!(open, 0);
    assert!(queued >= 2);
    let before = buffer.memory();
    assert!(buffer.spill(false).unwrap() > 0);
    assert!(buffer.memory() <= 200 && buffer.memory() < before);
    assert!(
        !chunk_files(dir.path()).is_empty(),
        "spilled chunks are files"
    );
    assert_eq!(
        buffer.counters().spilled as usize,
        chunk_files(dir.path()).len()
    );
}

#[test]
fn a_chunk_is_full_at_chunk_full_threshold() {
    let most_records = |threshold: f64| {
        let dir = tempfile::tempdir().unwrap();
        let opts = BufferOptions {
            chunk_limit_size: 2000,
            chunk_limit_records: None,
            chunk_full_threshold: threshold,
            ..options(dir.path())
        };
        let buffer = Buffer::open(opts).unwrap();
        let record = [b'x'; 98];
        for _ in 0..100 {
            buffer.append("svc", &[&record[..]]).unwrap();
        }
        buffer.sync().unwrap();
        buffer.seal_due(Instant::now(), true).unwrap();
        let mut most = 0;
        while let Some(t) = buffer.take(far()) {
            most = most.max(t.records.iter().count());
            buffer.finish(&t, &Outcome::Delivered, |_| {}).unwrap();
        }
        most
    };
    let (half, whole) = (most_records(0.5), most_records(1.0));
    // 100-byte records (with their separator): at most 10 in 1,000 bytes, 20 in 2,000.
    assert!(half <= 10 && whole > 10 && whole <= 20, "{half} {whole}");
}
