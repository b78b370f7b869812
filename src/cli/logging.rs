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

/// `filter` with a directive for each plugin whose `@log_level` (or written
/// `ibm_plugin_log_level`) differs: its tasks run in a span `plugin{id=…}`
/// (`pipeline::plugin_span`), so the level applies to its lines only.
pub(super) fn with_plugin_levels(filter: String, config: &crate::config::Config) -> String {
    let mut out = filter;
    for (id, level) in config.plugin_log_levels() {
        // The id is matched as a pattern: its characters are taken literally.
        let pattern: String = id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c.to_string()
                } else {
                    format!("\\x{:02x}", u32::from(c) & 0xff)
                }
            })
            .collect();
        out.push_str(&format!(
            ",[plugin{{id=^{pattern}$}}]={}",
            filter_of_config(level)
        ));
    }
    out
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

    /// Lines logged under `filter` inside the spans of plugins `source.1` and `source.10`.
    fn lines_under(filter: &str) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter).unwrap())
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for id in ["source.1", "source.10"] {
                let _g = tracing::error_span!("plugin", id = %id).entered();
                tracing::debug!("debug from {id}");
                tracing::info!("info from {id}");
                tracing::warn!("warn from {id}");
            }
            tracing::info!("info outside");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn a_plugin_s_level_applies_to_its_lines_only() {
        let text = "<source>\n  @type tail\n  path /x/*.log\n  tag t\n  format json\n  @log_level debug\n</source>\n<match t>\n  @type stdout\n</match>\n";
        let config = crate::config::load_str(text, "t.conf".as_ref(), &Default::default())
            .unwrap()
            .config;
        let filter = with_plugin_levels("warn".to_string(), &config);
        let lines = lines_under(&filter);
        assert!(lines.contains("debug from source.1"), "{filter}\n{lines}");
        assert!(!lines.contains("debug from source.10"), "{filter}\n{lines}");
        assert!(
            !lines.contains("info from source.10") && lines.contains("warn from source.10"),
            "{lines}"
        );
        assert!(!lines.contains("info outside"), "{lines}");
    }

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
