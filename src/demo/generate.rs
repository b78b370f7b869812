//! `at-forwarder generate`: writes seed-style audit events (the at-noisy line, with
//! varying ids, actions, outcomes and accounts) into per-pod files, at a rate, rotating
//! them by rename or copytruncate as logrotate would. Used by the demo, the benchmarks and
//! the docs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::event::time::Timestamp;

/// What to write.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Root directory (files go to `<dir>/<service>/<service>-pod<N>.log`).
    pub dir: PathBuf,
    /// Events per second, all files together.
    pub rate: u64,
    /// Number of services (`svc-0` …).
    pub services: usize,
    /// Files per service.
    pub pods: usize,
    /// Rotate a file after this many lines.
    pub rotate_every: Option<u64>,
    /// Rotate by copy and truncate rather than rename.
    pub copytruncate: bool,
    /// Rotate the first this many files of each service by copy and truncate, the others
    /// by rename (when `copytruncate` is off).
    pub copytruncate_pods: usize,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// Write 750–900-byte events (with request and response data, as the performance
    /// workloads ask) instead of the seed's ~530-byte at-noisy shape.
    pub wide: bool,
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Generated {
    /// Events written.
    pub written: u64,
    /// Rotations made.
    pub rotations: u64,
}

struct Pod {
    path: PathBuf,
    file: File,
    lines: u64,
    rotations: u64,
    copytruncate: bool,
}

/// The service name of service number `n`.
pub fn service_name(n: usize) -> String {
    format!("svc-{n}")
}

const ACTIONS: [&str; 5] = ["create", "update", "delete", "read", "list"];

/// Event number `seq` of service `svc`, 750–900 bytes: [`event`] with the request and
/// response data and correlation id that real services add.
pub fn wide_event(svc: usize, seq: u64, now: Timestamp) -> String {
    let mut e = event(svc, seq, now);
    let service = service_name(svc);
    // 0–79 more bytes, varying with seq, so sizes spread over the range.
    let pad = "x".repeat(usize::try_from(seq % 80).unwrap_or(0));
    let extra = format!(
        r#","requestData":{{"method":"POST","path":"/v2/{service}/workers/{seq:010}","requestId":"req-{seq:016x}","userAgent":"{service}-client/1.4.2 (linux; amd64)"}},"responseData":{{"status":"accepted","workerId":"worker-{seq:010}","note":"{pad}"}},"correlationId":"corr-{:016x}-{seq:010}""#,
        seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    );
    // Inside payload: before its closing brace (the event ends with `}}`).
    e.insert_str(e.len() - 2, &extra);
    e
}

/// Event number `seq` of service `svc`: the seed's at-noisy event with its own id.
pub fn event(svc: usize, seq: u64, now: Timestamp) -> String {
    let service = service_name(svc);
    let verb = ACTIONS[(seq % 5) as usize];
    let outcome = if seq.is_multiple_of(11) {
        "failure"
    } else {
        "success"
    };
    let code = if outcome == "failure" { 403 } else { 200 };
    let severity = match verb {
        "delete" => "critical",
        "update" => "warning",
        _ => "normal",
    };
    // Alternate the seed's Go time form with ISO 8601, as real services do.
    let time = if seq.is_multiple_of(2) {
        now.to_at_format()
    } else {
        go_time(now)
    };
    format!(
        r#"{{"meta":{{"serviceProviderName":"{service}","serviceProviderRegion":"ng","serviceProviderProjectId":"project-{svc}","userAccountIds":["account-{}"]}},"payload":{{"id":"{service}-{seq:010}","initiator":{{"id":"user{}@example.com","typeURI":"service/security/account/user","credential":{{"type":"user"}}}},"target":{{"id":"crn:v1:bluemix:public:{service}:dal09:a/account-{}:instance-{svc}::","typeURI":"{service}/worker"}},"action":"{service}.worker.{verb}","outcome":"{outcome}","reason":{{"reasonCode":{code}}},"severity":"{severity}","eventTime":"{time}"}}}}"#,
        seq % 7,
        seq % 13,
        seq % 7
    )
}

fn go_time(t: Timestamp) -> String {
    let at = t.to_at_format();
    // 2017-10-19T19:07:50.320+0000 → 2017-10-19 19:07:50.32 +0000 UTC
    format!("{} {} +0000 UTC", &at[..10], &at[11..22])
}

/// Writes events until the duration, the count, or `stop`. `progress` counts events as
/// they are written.
pub fn generate(
    opts: &GenerateOptions,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> io::Result<Generated> {
    let mut pods = Vec::new();
    for svc in 0..opts.services.max(1) {
        let dir = opts.dir.join(service_name(svc));
        fs::create_dir_all(&dir)?;
        for p in 0..opts.pods.max(1) {
            let path = dir.join(format!("{}-pod{p}.log", service_name(svc)));
            pods.push((
                svc,
                Pod {
                    file: open(&path)?,
                    path,
                    lines: 0,
                    rotations: 0,
                    copytruncate: opts.copytruncate || p < opts.copytruncate_pods,
                },
            ));
        }
    }
    let start = Instant::now();
    let mut out = Generated::default();
    let mut seq = vec![0u64; opts.services.max(1)];
    let mut next = 0usize;
    loop {
        if stop.load(Ordering::Relaxed)
            || opts.count.is_some_and(|c| out.written >= c)
            || opts.duration.is_some_and(|d| start.elapsed() >= d)
        {
            break;
        }
        let due = (start.elapsed().as_secs_f64() * opts.rate as f64) as u64;
        let due = opts.count.map_or(due, |c| due.min(c));
        if out.written >= due {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let now = Timestamp::from(SystemTime::now());
        while out.written < due {
            let count = pods.len();
            let (svc, pod) = &mut pods[next % count];
            next += 1;
            seq[*svc] += 1;
            let mut line = if opts.wide {
                wide_event(*svc, seq[*svc], now)
            } else {
                event(*svc, seq[*svc], now)
            };
            line.push('\n');
            // One write per line: other writers appending to the same file (O_APPEND)
            // never land inside it.
            pod.file.write_all(line.as_bytes())?;
            pod.lines += 1;
            out.written += 1;
            progress.fetch_add(1, Ordering::Relaxed);
            if opts.rotate_every.is_some_and(|n| pod.lines >= n) {
                rotate(pod)?;
                out.rotations += 1;
            }
        }
    }
    Ok(out)
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// logrotate's two ways: rename and reopen, or copy and truncate in place.
fn rotate(pod: &mut Pod) -> io::Result<()> {
    pod.rotations += 1;
    let mut name = pod.path.as_os_str().to_owned();
    name.push(format!(".{}", pod.rotations));
    let rotated = PathBuf::from(name);
    if pod.copytruncate {
        fs::copy(&pod.path, &rotated)?;
        pod.file.set_len(0)?;
    } else {
        fs::rename(&pod.path, &rotated)?;
        pod.file = open(&pod.path)?;
    }
    pod.lines = 0;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::CadfValidation;
    use crate::event::{Origin, Validator};
    use crate::tail::identity::FileKey;

    #[test]
    fn generated_events_pass_the_default_checks() {
        let v = Validator::new(CadfValidation::Lenient, true);
        for seq in 1..30 {
            let line = event(
                2,
                seq,
                Timestamp {
                    secs: 1_763_787_600,
                    nanos: 320_000_000,
                },
            );
            let mut out = Vec::new();
            let r = v.check(
                line.as_bytes(),
                Origin {
                    key: FileKey { dev: 0, ino: 0 },
                    offset: 0,
                },
                &mut out,
            );
            assert!(r.is_ok(), "{line}: {r:?}");
        }
        for seq in (1..200).chain([999_999_999]) {
            let now = Timestamp {
                secs: 1_763_787_600,
                nanos: 320_000_000,
            };
            let wide = wide_event(2, seq, now);
            assert!((750..=900).contains(&wide.len()), "{} bytes", wide.len());
            let mut out = Vec::new();
            let origin = Origin {
                key: FileKey { dev: 0, ino: 0 },
                offset: 0,
            };
            assert!(v.check(wide.as_bytes(), origin, &mut out).is_ok(), "{wide}");
        }
        assert_eq!(
            go_time(Timestamp {
                secs: 1_508_440_070,
                nanos: 320_000_000
            }),
            "2017-10-19 19:07:50.32 +0000 UTC"
        );
    }

    #[test]
    fn writes_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let opts = GenerateOptions {
            dir: dir.path().to_path_buf(),
            rate: 1_000_000,
            services: 2,
            pods: 1,
            rotate_every: Some(10),
            copytruncate: false,
            copytruncate_pods: 0,
            duration: None,
            count: Some(45),
            wide: false,
        };
        let done = generate(&opts, &AtomicBool::new(false), &AtomicU64::new(0)).unwrap();
        assert_eq!(
            done,
            Generated {
                written: 45,
                rotations: 4
            }
        );
        let lines: usize = walk(dir.path())
            .iter()
            .map(|p| fs::read_to_string(p).unwrap().lines().count())
            .sum();
        assert_eq!(lines, 45);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
