//! The real binary as a daemon with a stdout output, for tests that watch what it
//! forwards (stdout) and logs (stderr, JSON lines).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::binary;

pub(crate) struct Daemon {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

pub(crate) fn start(conf: &Path) -> Daemon {
    start_on(conf, "127.0.0.1:0")
}

/// As [`start`], with the operations endpoint on `listen`.
pub(crate) fn start_on(conf: &Path, listen: &str) -> Daemon {
    let mut cmd = binary();
    cmd.args(run_args(conf, listen));
    start_command(cmd)
}

/// The arguments of `run` as the tests start it.
pub(crate) fn run_args(conf: &Path, listen: &str) -> Vec<std::ffi::OsString> {
    let args = [
        "--log-format",
        "json",
        "run",
        "--metrics-listen",
        listen,
        "-c",
    ];
    let mut args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    args.push(conf.into());
    args
}

/// Starts `cmd` (the binary, possibly under a wrapper) as a daemon.
pub(crate) fn start_command(mut cmd: std::process::Command) -> Daemon {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let forward = |r: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let stdout = forward(Box::new(child.stdout.take().unwrap()));
    let stderr = forward(Box::new(child.stderr.take().unwrap()));
    Daemon {
        child,
        stdout,
        stderr,
    }
}

impl Daemon {
    /// Lines on stdout until `n` arrived or 20 s passed.
    pub(crate) fn events(&self, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(_) => break,
            }
        }
        got
    }

    pub(crate) fn wait_started(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Ok(line) = self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains("at-forwarder started") {
                return;
            }
        }
        panic!("no start-up line");
    }

    pub(crate) fn stop(mut self) -> i32 {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        status.code().unwrap_or(-1)
    }
}

pub(crate) fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

impl Daemon {
    /// SIGTERM, then the exit code and every log line not read yet.
    pub(crate) fn stop_with_log(mut self) -> (i32, String) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        let log: Vec<String> = self.stderr.iter().collect();
        (code, log.join("\n"))
    }

    /// `kill -9`, and waits until the process is gone (its locks released).
    pub(crate) fn kill9(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let _ = self.child.wait();
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines on stderr until one contains `needle`, or `within` passed.
    pub(crate) fn log_line(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while let Ok(line) = self
            .stderr
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    }

    /// Lines on stdout within `within` (for what must not arrive).
    pub(crate) fn events_within(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while let Ok(line) = self
            .stdout
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            got.push(line);
        }
        got
    }

    /// SIGTERM, then the exit code if the process ended within `within`; killed (and
    /// `None`) otherwise.
    pub(crate) fn stop_within(mut self, within: Duration) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}
