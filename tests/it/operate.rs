//! What an operator meets running the real binary: log levels and formats, one instance
//! per state directory, and a shutdown that does not wait for what it cannot send.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::daemon::{append, start};
use crate::support::{binary, run};

const EVENT: &str = r#"{"meta":{"serviceProviderName":"svc","userAccountIds":["a1"]},"payload":{"id":"ID","action":"svc.thing.create","outcome":"success","initiator":{"id":"u","typeURI":"t"},"target":{"id":"t","typeURI":"svc/thing"},"eventTime":"2020-01-01 00:00:00 +0000 UTC"}}"#;

/// tail → stdout over `dir/logs/*.log`, positions in `dir`, `system` inside `<system>`.
fn stdout_config(dir: &Path, system: &str) -> PathBuf {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let conf = dir.join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<system>\n{system}</system>\n<source>\n  @type tail\n  path {0}/*.log\n  pos_file {1}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type stdout\n</match>\n",
            logs.display(),
            dir.display()
        ),
    )
    .unwrap();
    conf
}

#[test]
fn an_unknown_log_level_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let conf = stdout_config(dir.path(), "");
    let (code, _, err) = run(binary()
        .args(["--log-level", "verbose", "run", "-c"])
        .arg(&conf));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown log level 'verbose'"), "{err}");
    assert!(!dir.path().join("at.pos").exists(), "nothing was started");
}

#[test]
fn the_config_s_system_log_level_applies() {
    let dir = tempfile::tempdir().unwrap();
    let conf = stdout_config(dir.path(), "  log_level debug\n");
    append(&dir.path().join("logs/svc.log"), &format!("{EVENT}\n"));
    let daemon = start(&conf);
    let debug = daemon.log_line("\"level\":\"DEBUG\"", Duration::from_secs(20));
    assert!(
        debug.is_some(),
        "no debug line with <system> log_level debug"
    );
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn a_text_log_written_to_a_pipe_has_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let conf = stdout_config(dir.path(), "");
    let mut child = binary()
        .args([
            "--log-format",
            "text",
            "run",
            "--metrics-listen",
            "127.0.0.1:0",
            "-c",
        ])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("at-forwarder started"))
        .expect("a start-up line");
    assert_eq!(crate::support::terminate(&mut child), Some(0));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    for line in std::iter::once(&started).chain(&rest) {
        assert!(!line.contains('\u{1b}'), "escape codes in a pipe: {line:?}");
    }
}

#[test]
fn a_second_instance_on_the_same_state_exits_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let conf = stdout_config(dir.path(), "");
    let first = start(&conf);
    first.wait_started();
    let started = Instant::now();
    let (code, _, err) = run(binary()
        .args([
            "--log-format",
            "text",
            "run",
            "--metrics-listen",
            "127.0.0.1:0",
            "-c",
        ])
        .arg(&conf)
        .stdin(Stdio::null()));
    assert_eq!(code, 1, "{err}");
    let named = format!("another at-forwarder (pid {}) is running on", first.pid());
    assert!(err.contains(&named), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it did not wait"
    );
    assert_eq!(first.stop(), 0);
}

#[test]
fn shutdown_does_not_wait_for_chunks_of_a_service_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    // An endpoint that is never reached: the only service has no token.
    let conf = crate::support::at_config(dir.path(), "http://127.0.0.1:9", "");
    let other = EVENT.replace("\"svc\"", "\"no-token\"");
    append(&dir.path().join("logs/x.log"), &format!("{other}\n"));
    let daemon = start(&conf);
    daemon
        .log_line("service token does not exist", Duration::from_secs(20))
        .expect("the send was tried");
    let asked = Instant::now();
    assert_eq!(daemon.stop_within(Duration::from_secs(20)), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for a chunk on disk that cannot be sent",
        asked.elapsed()
    );
}

/// The DaemonSet's process: root with every capability dropped but DAC_READ_SEARCH.
fn as_the_daemonset() -> std::process::Command {
    as_root_with("-all,+dac_read_search")
}

/// Root with only the capabilities of `bounding_set` (setpriv's syntax).
fn as_root_with(bounding_set: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=0",
        "--regid=0",
        "--clear-groups",
        "--inh-caps=-all",
        &format!("--bounding-set={bounding_set}"),
        "--no-new-privs",
        "--",
    ]);
    cmd
}

#[test]
fn the_daemonset_s_user_and_capabilities_read_another_user_s_0600_file_and_keep_state() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root || which("setpriv").is_none() {
        eprintln!("skipped: needs root and setpriv (util-linux) to take the DaemonSet's identity");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A service's logs, owned by its own user, readable by nobody else.
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("svc.log");
    std::fs::write(
        &log,
        format!("{}\n", EVENT.replace("\"ID\"", "\"e-private\"")),
    )
    .unwrap();
    for (path, mode) in [(&log, 0o600), (&logs, 0o700)] {
        chown(path, Some(4242), Some(4242)).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // The state directory as kubelet creates a DirectoryOrCreate hostPath: root, 0755.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = dir.path().join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {}/*.log\n  pos_file {}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type stdout\n</match>\n",
            logs.display(),
            state.display()
        ),
    )
    .unwrap();
    // The test has teeth: without the capability, root cannot read the file.
    let mut bare = as_root_with("-all");
    bare.arg("cat").arg(&log);
    let denied = bare.output().unwrap();
    assert!(
        !denied.status.success()
            && String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
        "root without DAC_READ_SEARCH read it: {denied:?}"
    );

    let mut cmd = as_the_daemonset();
    cmd.arg(env!("CARGO_BIN_EXE_at-forwarder"))
        .args(crate::daemon::run_args(&conf, "127.0.0.1:0"));
    let daemon = crate::daemon::start_command(cmd);
    let events = daemon.events(1);
    assert!(
        events.first().is_some_and(|e| e.contains("e-private")),
        "{events:?}"
    );
    assert_eq!(daemon.stop(), 0);
    assert!(
        state.join("at.pos.sled").is_dir(),
        "positions kept in the state directory"
    );
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

#[test]
fn positions_work_while_the_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let conf = stdout_config(dir.path(), "");
    append(&dir.path().join("logs/svc.log"), &format!("{EVENT}\n"));
    let daemon = start(&conf);
    let line = daemon
        .log_line("Operations endpoint", Duration::from_secs(20))
        .expect("the endpoint's address is logged");
    let addr: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = addr["addr"].as_str().unwrap().to_string();
    assert_eq!(daemon.events(1).len(), 1);
    // Polled: the position is saved shortly after the event went out.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stdout = loop {
        let (code, stdout, stderr) = run(binary()
            .args(["positions", "--endpoint", &addr, "-c"])
            .arg(&conf));
        assert_eq!(code, 0, "{stderr}");
        if stdout.contains("svc.log") || Instant::now() > deadline {
            break stdout;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    };
    let len = (EVENT.len() + 1).to_string();
    let row = stdout
        .lines()
        .find(|l| l.contains("svc.log"))
        .expect(&stdout);
    assert!(row.contains(&len) && row.ends_with("active"), "{stdout}");
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn completions_and_the_man_page_come_from_the_command_tree() {
    let (code, script, err) = run(binary().args(["completions", "bash"]));
    assert_eq!(code, 0, "{err}");
    for sub in [
        "run",
        "check",
        "positions",
        "dead-letters",
        "--config",
        "--log-level",
    ] {
        assert!(script.contains(sub), "completion lacks {sub}");
    }
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), &script).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(path.path())
        .status()
        .unwrap();
    assert!(syntax.success(), "bash rejects the completion script");
    let (code, page, err) = run(binary().arg("man"));
    assert_eq!(code, 0, "{err}");
    assert!(
        page.contains(".TH at-forwarder 1") && page.contains("positions"),
        "{page}"
    );
}

#[test]
fn validate_reports_each_failing_check_of_a_broken_environment() {
    let dir = tempfile::tempdir().unwrap();
    let conf = crate::support::at_config(dir.path(), "http://127.0.0.1:9", "");
    // The Secret is named after another host than targetHost's, and the buffer's
    // directory cannot exist (its parent is a file).
    std::fs::rename(
        dir.path().join("secrets/127.0.0.1"),
        dir.path().join("secrets/other"),
    )
    .unwrap();
    std::fs::write(dir.path().join("blocker"), "a file").unwrap();
    let text = std::fs::read_to_string(&conf).unwrap();
    let buffer = format!("path {}/buffer", dir.path().display());
    let blocked = format!("path {}/blocker/buffer", dir.path().display());
    std::fs::write(&conf, text.replace(&buffer, &blocked)).unwrap();
    let (code, out, err) = run(binary().arg("validate").arg("-c").arg(&conf));
    assert_eq!(code, 1, "{out}{err}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 3, "{out}");
    assert!(fails[0].contains("blocker/buffer: not writable"), "{out}");
    assert!(
        fails[1].contains("secrets/127.0.0.1") && out.contains("--at-host 127.0.0.1"),
        "{out}"
    );
    assert!(
        fails[2].contains("endpoint http://127.0.0.1:9") && fails[2].contains("not reachable"),
        "{out}"
    );
    assert!(out.contains("ok    configuration"), "{out}");
}

#[test]
fn encode_services_out_dir_writes_the_secret_file_validate_then_accepts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let conf = crate::support::at_config(dir.path(), "http://127.0.0.1:9", "");
    let secrets = dir.path().join("secrets");
    std::fs::remove_file(secrets.join("127.0.0.1")).unwrap();
    let (code, out, err) = run(binary()
        .args([
            "encode-services",
            "--service",
            "svc-a=tok-a:proj-a",
            "--at-host",
            "127.0.0.1",
            "--out-dir",
        ])
        .arg(&secrets));
    assert_eq!(code, 0, "{out}{err}");
    let file = secrets.join("127.0.0.1");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !out.contains("tok-a") && !err.contains("tok-a"),
        "{out}{err}"
    );
    let (_, out, _) = run(binary().arg("validate").arg("-c").arg(&conf));
    let secret_line = out
        .lines()
        .find(|l| l.contains("secret"))
        .unwrap_or_default();
    assert!(secret_line.starts_with("ok"), "{out}");
    // A host that would name a file elsewhere is refused.
    let (code, _, err) = run(binary()
        .args([
            "encode-services",
            "--service",
            "a=b:c",
            "--at-host",
            "../x",
            "--out-dir",
        ])
        .arg(&secrets));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn buffer_list_and_show_work_while_the_daemon_runs() {
    use crate::http_server::{Reply, Server};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(|_| Reply::status(503));
    let conf = crate::support::at_config(dir.path(), &server.url(), "");
    append(&dir.path().join("logs/svc.log"), &format!("{EVENT}\n"));
    let daemon = start(&conf);
    daemon.wait_started();
    // The endpoint refuses: the chunk stays in the queue, listed while the daemon runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let (code, out, err) = run(binary().args(["buffer", "list", "-c"]).arg(&conf));
        assert_eq!(code, 0, "{out}{err}");
        if out.contains(" 1 records") || Instant::now() > deadline {
            break out;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    };
    let row = listed
        .lines()
        .find(|l| l.contains(" 1 records"))
        .unwrap_or_else(|| panic!("no chunk listed:\n{listed}"));
    let id = row.split_whitespace().next().unwrap();
    let (code, out, err) = run(binary().args(["buffer", "show", id, "-c"]).arg(&conf));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#""id":"ID""#), "{out}");
    daemon.stop();
}

#[test]
fn a_file_followed_rotated_and_finished_and_a_sighup_are_logged_at_info() {
    let dir = tempfile::tempdir().unwrap();
    let conf = stdout_config(dir.path(), "");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace(
            "read_from_head true\n",
            "read_from_head true\n  rotate_wait 1s\n",
        ),
    )
    .unwrap();
    let log = dir.path().join("logs/svc.log");
    append(&log, &format!("{EVENT}\n"));
    let daemon = start(&conf);
    let within = Duration::from_secs(30);
    let line = daemon
        .log_line("Following a file.", within)
        .expect("followed");
    assert!(line.contains("svc.log") && line.contains("INFO"), "{line}");
    assert_eq!(daemon.events(1).len(), 1);
    // Renamed out of the globs (*.log): read to its end, then let go.
    std::fs::rename(&log, dir.path().join("logs/svc.log.1")).unwrap();
    let line = daemon
        .log_line("File rotated away or deleted", within)
        .expect("rotation logged");
    assert!(line.contains("svc.log") && line.contains("INFO"), "{line}");
    let line = daemon
        .log_line("Released a rotated file read to its end.", within)
        .expect("finish logged");
    assert!(line.contains("INFO"), "{line}");
    // SIGHUP with the file unchanged answers too.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let line = daemon
        .log_line("Configuration unchanged; nothing to reload.", within)
        .expect("SIGHUP answered");
    assert!(line.contains("SIGHUP"), "{line}");
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn a_source_s_log_level_applies_to_its_lines_only() {
    let dir = tempfile::tempdir().unwrap();
    let conf = stdout_config(dir.path(), "  log_level error\n");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace(
            "read_from_head true\n",
            "read_from_head true\n  @id audit-tail\n  @log_level info\n",
        ),
    )
    .unwrap();
    append(&dir.path().join("logs/svc.log"), &format!("{EVENT}\n"));
    let daemon = start(&conf);
    // The source's INFO line shows under <system> log_level error, with its plugin id;
    // the process's own INFO lines (start-up) do not.
    let line = daemon
        .log_line("Following a file.", Duration::from_secs(20))
        .expect("the source's INFO line");
    assert!(line.contains("audit-tail"), "{line}");
    assert_eq!(daemon.events(1).len(), 1);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(daemon
        .log_line("at-forwarder stopped", Duration::from_secs(10))
        .is_none());
}

#[test]
fn system_http_port_serves_the_operations_endpoint() {
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let conf = stdout_config(dir.path(), &format!("  http_port {port}\n"));
    let daemon = start(&conf);
    daemon.wait_started();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let got = std::net::TcpStream::connect(addr).ok().and_then(|mut s| {
            use std::io::{Read, Write};
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        });
        match got {
            Some(a) => break a,
            None if Instant::now() < deadline => {
                std::thread::park_timeout(Duration::from_millis(50))
            }
            None => panic!("nothing listens on http_port {port}"),
        }
    };
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn ignore_repeated_permission_error_reports_an_unreadable_file_once() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root || which("setpriv").is_none() {
        eprintln!("skipped: needs root and setpriv (util-linux) to be denied a file");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = stdout_config(dir.path(), "");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace(
            "read_from_head true\n",
            "read_from_head true\n  refresh_interval 1s\n  ignore_repeated_permission_error true\n",
        ),
    )
    .unwrap();
    let log = dir.path().join("logs/svc.log");
    std::fs::write(&log, format!("{EVENT}\n")).unwrap();
    chown(&log, Some(4242), Some(4242)).unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), 4242);
    // Root without any capability: the file's mode applies, and it cannot be opened.
    let mut cmd = as_root_with("-all");
    cmd.arg(env!("CARGO_BIN_EXE_at-forwarder"))
        .arg("--log-level")
        .arg("debug")
        .args(crate::daemon::run_args(&conf, "127.0.0.1:0"));
    let daemon = crate::daemon::start_command(cmd);
    let within = Duration::from_secs(30);
    let first = daemon
        .log_line("Cannot open file", within)
        .expect("the denial is reported");
    assert!(
        first.contains("WARN") && first.contains("svc.log"),
        "{first}"
    );
    // Two later scans meet it again: at DEBUG only.
    for _ in 0..2 {
        let again = daemon
            .log_line("Cannot open file", within)
            .expect("scanned again");
        assert!(again.contains("DEBUG"), "{again}");
    }
    assert_eq!(daemon.stop(), 0);
}

#[test]
fn validate_checks_the_credential_files_and_endpoints_of_other_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let conf = stdout_config(dir.path(), "");
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        "<match at.**>\n  @type stdout\n</match>\n",
        &format!(
            "<match at.**>\n  @type copy\n  <store>\n    @type http\n    endpoint http://127.0.0.1:9/in\n    <auth>\n      method bearer\n      token_path {0}/missing-token\n    </auth>\n    <buffer>\n      path {0}/b1\n    </buffer>\n  </store>\n  <store>\n    @type stdout\n  </store>\n</match>\n",
            dir.path().display()
        ),
    );
    std::fs::write(&conf, text).unwrap();
    let (code, out, err) = run(binary().arg("validate").arg("-c").arg(&conf));
    assert_eq!(code, 1, "{out}{err}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(fails.len(), 2, "{out}");
    assert!(
        fails[0].contains("missing-token: missing, unreadable or empty"),
        "{out}"
    );
    assert!(
        fails[1].contains("endpoint http://127.0.0.1:9/in: not reachable"),
        "{out}"
    );
}
