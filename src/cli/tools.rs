//! The operator tools behind `lint` and `dead-letters`: thin wrappers that print what the
//! library finds.

use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::source::CadfValidation;
use crate::config::value::ConfigEnum;
use crate::event::dead_letter::{DeadLetterStore, Stored};
use crate::event::lint::{lint as lint_lines, LintSummary};
use crate::event::{Origin, Reason, Validator};
use crate::tail::identity::FileKey;

/// `at-forwarder lint`: exit 0 when every event passes, 1 when any fails, 2 when a file
/// cannot be read.
pub(crate) fn lint(level: Option<CadfValidation>, files: &[PathBuf]) -> ExitCode {
    let level = level.map_or(CadfValidation::Lenient, CadfValidation::normalized);
    let mut validator = Validator::new(level, true);
    if level == CadfValidation::Cadf {
        validator = validator.reading_bare_cadf();
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut total = LintSummary::default();
    let result: io::Result<()> = (|| {
        if files.is_empty() {
            add(
                &mut total,
                lint_lines(io::stdin().lock(), "<stdin>", &validator, &mut out)?,
            );
        }
        for file in files {
            let reader = std::fs::File::open(file)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
            add(
                &mut total,
                lint_lines(
                    BufReader::new(reader),
                    &file.display().to_string(),
                    &validator,
                    &mut out,
                )?,
            );
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let _ = writeln!(
        out,
        "{} event(s), {} failed ({} check)",
        total.events, total.failed, level
    );
    if total.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn add(total: &mut LintSummary, s: LintSummary) {
    total.events += s.events;
    total.failed += s.failed;
}

/// What `dead-letters` was asked to do.
#[derive(Debug)]
pub(crate) enum DeadLetterCommand {
    List {
        reason: Option<String>,
    },
    Show {
        id: String,
    },
    Requeue {
        ids: Vec<String>,
        all: bool,
        reason: Option<String>,
        force: bool,
    },
}

pub(crate) fn dead_letters(state: &Path, command: DeadLetterCommand) -> ExitCode {
    match run_dead_letters(state, command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}: {e}", state.join("dead-letters").display());
            ExitCode::FAILURE
        }
    }
}

fn run_dead_letters(state: &Path, command: DeadLetterCommand) -> io::Result<ExitCode> {
    let store = DeadLetterStore::open(state)?;
    let parse_reason = |r: &Option<String>| -> Result<Option<Reason>, String> {
        r.as_deref()
            .map(|r| {
                Reason::from_name(r).ok_or_else(|| {
                    format!(
                        "unknown reason '{r}'; reasons: {}",
                        Reason::NAMES.join(", ")
                    )
                })
            })
            .transpose()
    };
    match command {
        DeadLetterCommand::List { reason } => {
            let reason = match parse_reason(&reason) {
                Ok(r) => r,
                Err(msg) => return usage(&msg),
            };
            let all = store.list()?;
            for s in all
                .iter()
                .filter(|s| reason.is_none_or(|r| s.letter.reason == r))
            {
                let lines = if s.count > 1 {
                    format!(" ({} lines)", s.count)
                } else {
                    String::new()
                };
                println!(
                    "{}  {}  {:<16} {}:{}{lines}  {}",
                    s.id,
                    s.time,
                    s.letter.reason,
                    s.letter.path.display(),
                    s.letter.offset,
                    s.letter.message
                );
            }
            println!("{} dead letter(s) in {}", all.len(), store.dir().display());
        }
        DeadLetterCommand::Show { id } => {
            let Some(s) = store.list()?.into_iter().find(|s| s.id == id) else {
                return usage(&format!("no dead letter with id {id}"));
            };
            println!("id:      {}\ntime:    {}\nreason:  {}\nmessage: {}\nsource:  {} at offset {} ({} bytes{})", s.id, s.time, s.letter.reason, s.letter.message, s.letter.path.display(), s.letter.offset, s.letter.length, if s.truncated { ", start kept" } else if s.count > 1 { ", consecutive lines refused alike" } else { "" });
            println!("line:\n{}", String::from_utf8_lossy(&s.letter.line));
        }
        DeadLetterCommand::Requeue {
            ids,
            all,
            reason,
            force,
        } => {
            let reason = match parse_reason(&reason) {
                Ok(r) => r,
                Err(msg) => return usage(&msg),
            };
            if ids.is_empty() && !all && reason.is_none() {
                return usage("name the dead letters to requeue, or use --all or --reason");
            }
            let validator = Validator::new(CadfValidation::Lenient, false);
            let still_bad = |s: &Stored| -> Option<String> {
                let origin = Origin {
                    key: FileKey { dev: 0, ino: 0 },
                    offset: s.letter.offset,
                };
                validator
                    .check(&s.letter.line, origin, &mut Vec::new())
                    .err()
                    .map(|r| r.to_string())
            };
            let chosen = |s: &Stored| {
                (all || ids.contains(&s.id)) && reason.is_none_or(|r| s.letter.reason == r)
            };
            for s in store.list()?.iter().filter(|s| chosen(s)) {
                if let (false, Some(why)) = (force, still_bad(s)) {
                    println!("{}: kept, still fails: {why}", s.id);
                }
            }
            let (moved, file) =
                store.requeue(|s| chosen(s) && (force || still_bad(s).is_none()))?;
            match file {
                Some(file) => println!(
                    "{moved} line(s) requeued to {}; at-forwarder reads {}/*.log itself, with its first source's tag, checks and routes: a running daemon forwards them within a second, a stopped one at its next start",
                    file.display(),
                    file.parent().unwrap_or(state).display()
                ),
                None => println!("nothing requeued"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn usage(msg: &str) -> io::Result<ExitCode> {
    eprintln!("error: {msg}");
    Ok(ExitCode::from(2))
}

/// What `buffer` was asked to do.
#[derive(Debug)]
pub(crate) enum BufferCommand {
    List,
    Show { id: String },
    Requeue { ids: Vec<String>, all: bool },
}

pub(crate) fn buffer(dirs: &[PathBuf], command: &BufferCommand) -> ExitCode {
    use crate::buffer::inspect::{self, Place};
    if dirs.is_empty() {
        println!("no output with a buffer in this configuration");
        return ExitCode::SUCCESS;
    }
    for dir in dirs {
        let result: io::Result<()> = (|| {
            match command {
                BufferCommand::List => {
                    let chunks = inspect::list(dir)?;
                    println!("{}:", dir.display());
                    for c in &chunks {
                        let place = match (c.place, c.tried) {
                            (Place::Backup, _) => "backup",
                            (Place::Queue, true) => "queued",
                            (Place::Queue, false) => "new",
                        };
                        let reason = c.meta.backup_reason.as_deref().unwrap_or("");
                        println!("  {}  {place:<6}  {:<24} {:>7} records {:>10} bytes  {:>6}s old  {} attempts  {reason}", c.id, c.meta.key, c.meta.records, c.meta.bytes, c.age_secs(), c.meta.attempts);
                    }
                    println!("  {} chunk(s)", chunks.len());
                }
                BufferCommand::Show { id } => match inspect::records(dir, id) {
                    Ok(records) => {
                        for r in &records {
                            println!("{}", String::from_utf8_lossy(r));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound && dirs.len() > 1 => {}
                    Err(e) => return Err(e),
                },
                BufferCommand::Requeue { ids, all } => {
                    let moved = inspect::requeue(dir, ids, *all)?;
                    println!(
                        "{}: {} chunk(s) requeued; they are sent after the next start",
                        dir.display(),
                        moved.len()
                    );
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            eprintln!("error: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// `at-forwarder encode-services`.
pub(crate) fn encode_services(
    services: &[String],
    at_host: &str,
    yaml: bool,
    out_dir: Option<&std::path::Path>,
) -> ExitCode {
    match crate::output::secrets::encode(services) {
        Ok(encoded) if out_dir.is_some() => {
            let dir = out_dir.unwrap_or(std::path::Path::new("."));
            // The host names the file; a host with a path separator would write elsewhere.
            if at_host.is_empty() || at_host.contains('/') || at_host.starts_with('.') {
                eprintln!("error: --at-host {at_host:?} cannot name a file");
                return ExitCode::from(2);
            }
            let path = dir.join(at_host);
            match crate::fsutil::write_private(&path, encoded.as_bytes()) {
                Ok(()) => {
                    println!("wrote {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: writing {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        Ok(encoded) if yaml => {
            print!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: activity-tracker-secrets\n  namespace: kube-system\ntype: Opaque\ndata:\n  {at_host}: {encoded}\n");
            ExitCode::SUCCESS
        }
        Ok(encoded) => {
            println!("{encoded}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// A plain `GET` of `path` from a local endpoint (the daemon's operations endpoint);
/// the body of a 200 answer.
pub(super) fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(10);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(64 << 20).read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer"))?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    anyhow::ensure!(status == "200", "answered {status}");
    Ok(body.to_string())
}
