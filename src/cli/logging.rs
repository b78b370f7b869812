//! Logging set-up: the level (from `--log-level`, else `<system> log_level`, else info),
//! checked before anything runs, and the line format.

use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use crate::config::LogLevel;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum LogFormat {
    /// Text on a terminal, JSON lines otherwise.
    Auto,
    /// Text; coloured only on a terminal (and without `NO_COLOR`).
    Text,
    /// One JSON object per line.
    Json,
}

/// The tracing filter of a `--log-level` value: a level (trace, debug, info, warn,
/// error, off; fluentd's `warning` and `fatal` read as warn and error), or directives such
/// as `info,at_forwarder::tail=debug`. Anything else is an error: a filter that matches
/// nothing would turn every log line off without a word.
pub(super) fn filter_of(text: &str) -> Result<String> {
    let mut directives = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (target, level) = match part.rsplit_once('=') {
            Some((target, level)) => (Some(target), level),
            None => (None, part),
        };
        let level = match level.to_ascii_lowercase().as_str() {
            l @ ("trace" | "debug" | "info" | "warn" | "error" | "off") => l.to_string(),
            "warning" => "warn".to_string(),
            "fatal" => "error".to_string(),
            _ => bail!(
                "unknown log level '{level}' in '{text}': use trace, debug, info, warn, error \
                 or off, or directives such as 'info,at_forwarder::tail=debug'"
            ),
        };
        directives.push(match target {
            Some(target) => format!("{target}={level}"),
            None => level,
        });
    }
    if directives.is_empty() {
        bail!("empty log level");
    }
    Ok(directives.join(","))
}

/// The filter of `<system> log_level`.
pub(super) fn filter_of_config(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error | LogLevel::Fatal => "error",
    }
}

/// Installs the subscriber; `filter` as [`filter_of`] returns it.
pub(super) fn init(filter: &str, format: LogFormat) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log level '{filter}'"))?;
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Auto => !terminal,
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        // Escape codes only where a terminal shows them: not in pipes, files, journald.
        let colour = terminal && std::env::var_os("NO_COLOR").is_none();
        builder.with_ansi(colour).init();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_are_accepted_and_unknown_words_refused() {
        assert_eq!(filter_of("INFO").unwrap(), "info");
        assert_eq!(filter_of("warning").unwrap(), "warn");
        assert_eq!(
            filter_of("info, at_forwarder::tail=debug").unwrap(),
            "info,at_forwarder::tail=debug"
        );
        for bad in ["verbose", "", "info,at_forwarder=loud"] {
            assert!(filter_of(bad).is_err(), "{bad}");
        }
    }
}
