//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use at_forwarder::config::{self, ConfigError, EvalEnv, LoadOptions, Loaded};

/// The repository's root, where `examples/` lives.
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The seed's ConfigMap file, verbatim.
pub(crate) fn seed_config() -> PathBuf {
    repo_root().join("examples/logging-activity-tracker.conf")
}

pub(crate) fn options() -> LoadOptions {
    LoadOptions {
        strict: false,
        env: EvalEnv::fixed(
            "node-7",
            &[
                ("AT_REGION", "eu-de"),
                ("AT_HOST", "activity-tracker.eu-de.bluemix.net"),
            ],
        ),
    }
}

/// Loads configuration text as `test.conf` in `dir` (for relative includes).
pub(crate) fn load_in(dir: &Path, text: &str) -> Result<Loaded, ConfigError> {
    config::load_str(text, &dir.join("test.conf"), &options())
}

pub(crate) fn load(text: &str) -> Result<Loaded, ConfigError> {
    config::load_str(text, Path::new("test.conf"), &options())
}

/// The rendered report of a configuration that must be invalid.
pub(crate) fn errors(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("expected an invalid configuration:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// The rendered warnings of a configuration that must be valid.
pub(crate) fn warnings(text: &str) -> String {
    match load(text) {
        Ok(loaded) => loaded.warnings.to_string(),
        Err(e) => panic!("expected a valid configuration, got:\n{e}"),
    }
}

/// A minimal valid pipeline around `source_params` (inside `<source>`) and `match_body`.
pub(crate) fn pipeline(source_params: &str, match_body: &str) -> String {
    format!(
        "<source>\n  @type tail\n  path /var/log/at/*.log\n  tag at.*\n  format json\n  pos_file /tmp/at.pos\n{source_params}\n</source>\n<match at.**>\n{match_body}\n</match>\n"
    )
}

/// An Activity Tracker `<match>` body with a buffer path and `extra` lines.
pub(crate) fn at_match(extra: &str) -> String {
    format!("  @type ibmactivitytracker\n  targetHost activity-tracker.ng.bluemix.net\n  service_region ng\n  <buffer>\n    path /tmp/buf\n  </buffer>\n{extra}")
}

/// The `at-forwarder` binary built for these tests.
pub(crate) fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_at-forwarder"));
    cmd.env_remove("AT_FORWARDER_CONFIG")
        .env_remove("AT_FORWARDER_LOG_LEVEL")
        .env_remove("AT_FORWARDER_LOG_FORMAT");
    cmd
}

pub(crate) fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the binary runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Sends SIGTERM to a child and returns its exit code.
pub(crate) fn terminate(child: &mut std::process::Child) -> Option<i32> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM is sent");
    child.wait().expect("the child is waited for").code()
}

/// A tail → Activity Tracker pipeline over `dir/logs/*.log` with the service `svc`
/// (token `t`) for the endpoint `url`, `buffer_extra` lines inside `<buffer>`.
pub(crate) fn at_config(dir: &Path, url: &str, buffer_extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(
        dir.join("secrets/127.0.0.1"),
        r#"{"services":[{"service_name":"svc","auth_token_value":"t","project_id":"p"}]}"#,
    )
    .unwrap();
    let conf = dir.join("at.conf");
    std::fs::write(
        &conf,
        format!(
            "<source>\n  @type tail\n  path {d}/logs/*.log\n  pos_file {d}/at.pos\n  tag at.*\n  format json\n  read_from_head true\n</source>\n<match at.**>\n  @type ibmactivitytracker\n  targetHost {url}\n  service_region ng\n  secrets_path {d}/secrets\n  <buffer>\n    path {d}/buffer\n    flush_interval 1s\n    flush_at_shutdown true\n{buffer_extra}  </buffer>\n</match>\n",
            d = dir.display()
        ),
    )
    .unwrap();
    conf
}

/// One GET to a local endpoint (the daemon's operations endpoint): the whole answer,
/// head and body; empty when nothing answers.
pub(crate) fn http_get_text(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}
