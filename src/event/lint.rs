//! `at-forwarder lint`: the check a service team runs over its event files before
//! registering in production.

use std::io::{self, BufRead, Write};

use super::{Origin, Validator};
use crate::tail::identity::FileKey;

/// Events read and events that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LintSummary {
    /// Non-empty lines.
    pub events: usize,
    /// Lines that would not be forwarded.
    pub failed: usize,
}

/// Checks every line of `input` (named `name` in messages), writing `name:line: problem`
/// for each problem to `out`.
pub fn lint(
    input: impl BufRead,
    name: &str,
    validator: &Validator,
    out: &mut impl Write,
) -> io::Result<LintSummary> {
    let mut summary = LintSummary::default();
    let mut scratch = Vec::new();
    let mut offset = 0u64;
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let origin = Origin {
            key: FileKey { dev: 0, ino: 0 },
            offset,
        };
        offset += line.len() as u64 + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        summary.events += 1;
        scratch.clear();
        if let Err(rejection) = validator.check(line, origin, &mut scratch) {
            summary.failed += 1;
            for problem in &rejection.problems {
                writeln!(out, "{name}:{}: {problem}", i + 1)?;
            }
        }
    }
    Ok(summary)
}
