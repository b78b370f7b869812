//! The real `at-forwarder` binary: `check`, `run`, exit codes and signals.

use std::io::Write;

use crate::support::{binary, run, seed_config};

#[test]
fn check_prints_the_resolved_pipeline_of_the_seed() {
    let (code, stdout, stderr) = run(binary().args(["check", "-c"]).arg(seed_config()));
    assert_eq!(code, 0, "stderr:\n{stderr}");
    assert!(
        stdout.contains("valid (2 warning(s), 2 note(s))"),
        "{stdout}"
    );
    for line in [
        "source #1: tailinodes",
        "path                             /var/log/at/**/*.log*",
        "rotate_wait                      12h",
        "read_lines_limit                 100",
        "routed to                        match #1 (kubernetes.at.**)",
        "match #1: kubernetes.at.** → ibmactivitytracker",
        "chunk_limit_size               500 KiB (512000 bytes)",
        "total_limit_size               800 MiB (838860800 bytes)",
        "retry                          exponential_backoff from 1s ×2 up to 10s, randomised, forever",
        "tokens                           from /mnt/activity-tracker/secrets/ACTIVITY_TRACKER_URL at run time (never printed)",
    ] {
        assert!(stdout.contains(line), "expected {line:?} in:\n{stdout}");
    }
    assert!(
        stderr.contains("warning: targetHost 'ACTIVITY_TRACKER_URL' looks like a placeholder"),
        "{stderr}"
    );
}

#[test]
fn check_reads_the_config_path_from_the_environment() {
    let (code, stdout, _) = run(binary()
        .arg("check")
        .env("AT_FORWARDER_CONFIG", seed_config()));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("logging-activity-tracker.conf: valid"),
        "{stdout}"
    );
}

#[test]
fn check_strict_fails_on_warnings() {
    let (code, stdout, stderr) = run(binary()
        .args(["check", "--strict", "-c"])
        .arg(seed_config()));
    assert_eq!(code, 2, "stdout:\n{stdout}");
    assert!(
        stderr.contains("error: targetHost 'ACTIVITY_TRACKER_URL' looks like a placeholder"),
        "{stderr}"
    );
    // The placeholders only: the notes (time_format, the ignored retry limit) stay notes.
    assert!(stderr.contains("2 error(s), 0 warning(s)"), "{stderr}");
    assert!(
        stderr.contains("note: 'retry_max_times' has no effect"),
        "{stderr}"
    );
}

#[test]
fn the_annotated_example_passes_strict() {
    let example = crate::support::repo_root().join("examples/at-forwarder.conf");
    let (code, stdout, stderr) = run(binary().args(["check", "--strict", "-c"]).arg(example));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("valid (0 warning(s), 0 note(s))"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "endpoint                         https://activity-tracker.ng.bluemix.net/v3/events"
        ),
        "{stdout}"
    );
}

#[test]
fn check_on_a_broken_file_prints_the_located_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.conf");
    std::fs::write(&path, "<source>\n  @type tail\n  rotate_wait 12 hours\n").unwrap();
    let (code, stdout, stderr) = run(binary().args(["check", "-c"]).arg(&path));
    assert_eq!(code, 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("error: expected end tag </source> but reached the end of the file"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("--> {}:1:2", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("1 | <source>\n  |  ^^^^^^"), "{stderr}");
}

#[test]
fn check_on_a_missing_file_exits_2() {
    let (code, _, stderr) = run(binary().args(["check", "-c", "/nonexistent/at.conf"]));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read configuration file /nonexistent/at.conf"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_an_invalid_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.conf");
    std::fs::write(&path, "<match **>\n  @type elasticsearch\n</match>\n").unwrap();
    let (code, _, stderr) = run(binary().arg("run").env("AT_FORWARDER_CONFIG", &path));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unknown output type 'elasticsearch'"),
        "{stderr}"
    );
}

#[test]
fn version_and_bad_log_level() {
    let (code, stdout, _) = run(binary().arg("--version"));
    assert_eq!(
        (code, stdout.trim()),
        (0, concat!("at-forwarder ", env!("CARGO_PKG_VERSION")))
    );
    let (code, _, stderr) = run(binary()
        .args(["--log-level", "at_forwarder=loudest", "check", "-c"])
        .arg(seed_config()));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unknown log level 'loudest' in 'at_forwarder=loudest'"),
        "{stderr}"
    );
}

#[test]
fn positions_lists_saved_positions_with_their_state() {
    use at_forwarder::tail::{PositionStore, Tailer};
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("a.log"), "{\"id\":1}\n{\"id\":2}\n").unwrap();
    std::fs::write(logs.join("b.log"), "{\"id\":3}\n").unwrap();
    let pos_file = dir.path().join("at.pos");
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!("<source>\n  @type tail\n  path {}/*.log*\n  pos_file {}\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type stdout\n</match>\n", logs.display(), pos_file.display()),
    )
    .unwrap();
    let (code, stdout, _) = run(binary().args(["positions", "-c"]).arg(&conf));
    assert_eq!(code, 0);
    assert!(stdout.contains("no positions saved yet"), "{stdout}");
    {
        let loaded = at_forwarder::config::load(&conf, &crate::support::options()).unwrap();
        let at_forwarder::config::SourceKind::Tail(tail) = &loaded.config.sources[0].kind;
        let store = PositionStore::open(&PositionStore::dir_for(&pos_file)).unwrap();
        let mut tailer = Tailer::open(tail.options.clone(), store.clone()).unwrap();
        let batch = tailer.poll(std::time::Instant::now());
        store.commit(&batch.positions).unwrap();
    }
    std::fs::rename(logs.join("b.log"), logs.join("b.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(logs.join("a.log"))
        .unwrap()
        .write_all(b"{\"id\":4}\n")
        .unwrap();
    let (code, stdout, stderr) = run(binary().args(["positions", "-c"]).arg(&conf));
    assert_eq!(code, 0, "{stderr}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} in {stdout}"))
            .split_whitespace()
            .skip(2)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("a.log"), ["18", "27", "9", "active"]);
    assert_eq!(row("b.log.1"), ["9", "9", "0", "rotated"]);
    std::fs::remove_file(logs.join("b.log.1")).unwrap();
    let (_, stdout, _) = run(binary().args(["positions", "-c"]).arg(&conf));
    assert_eq!(row_of(&stdout, "b.log"), ["9", "-", "-", "gone"]);
    // Held by a running process (this one here): said plainly, with what to do.
    let _held = PositionStore::open(&PositionStore::dir_for(&pos_file)).unwrap();
    // (Port 9 answers nothing: no daemon endpoint to ask.)
    let (code, _, stderr) = run(binary()
        .args(["positions", "--endpoint", "127.0.0.1:9", "-c"])
        .arg(&conf));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("a running at-forwarder holds the position store")
            && stderr.contains("help: pass --endpoint ADDR"),
        "{stderr}"
    );
}

fn row_of(stdout: &str, name: &str) -> Vec<String> {
    stdout
        .lines()
        .find(|l| l.contains(name))
        .unwrap()
        .split_whitespace()
        .skip(2)
        .map(String::from)
        .collect()
}

/// Issue 20, row 13: plain http to another machine sends tokens in clear text: a warning,
/// an error under `--strict`, silenced knowingly by `allow_insecure_http true`; loopback
/// (the local receiver) is fine.
#[test]
fn plain_http_to_another_host_is_flagged_and_strict_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let check = |target: &str, extra: &str| {
        let conf = dir.path().join("at.conf");
        std::fs::write(
            &conf,
            crate::support::pipeline(
                "",
                &format!("  @type ibmactivitytracker\n  targetHost {target}\n  service_region ng\n{extra}  <buffer>\n    path {}/buf\n  </buffer>\n", dir.path().display()),
            ),
        )
        .unwrap();
        run(binary().args(["check", "--strict", "-c"]).arg(&conf))
    };
    let (code, _, stderr) = check("http://at.example.com", "");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("clear text"), "{stderr}");
    let (code, _, stderr) = check("http://at.example.com", "  allow_insecure_http true\n");
    assert!(!stderr.contains("clear text"), "{stderr}");
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = check("http://127.0.0.1:9000", "");
    assert_eq!(code, 0, "{stderr}");
}
