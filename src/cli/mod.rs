//! The command line: parses arguments, sets up logging, and hands the work to the library
//! modules. Kept thin: each subcommand is a few lines around a library call.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::{self, ConfigError, LoadOptions, Loaded};

mod local;
mod logging;
mod run;
mod tools;
mod validate;

use logging::LogFormat;

/// Exit code of a configuration that cannot be loaded.
const EXIT_INVALID_CONFIG: u8 = 2;

/// Forwards audit events from log files to IBM Cloud Activity Tracker, losing none.
#[derive(Debug, Parser)]
#[command(name = "at-forwarder", version, about, propagate_version = true)]
pub struct Cli {
    /// Log verbosity: trace, debug, info, warn, error, off, or directives such as
    /// "info,at_forwarder::tail=debug" [default: `<system> log_level`, else info].
    #[arg(long, global = true, env = "AT_FORWARDER_LOG_LEVEL")]
    log_level: Option<String>,

    /// Configuration file, in fluentd syntax (run, check, validate, positions, buffer,
    /// dead-letters).
    #[arg(short, long, global = true, env = "AT_FORWARDER_CONFIG")]
    config: Option<PathBuf>,

    /// Log line format; auto means text on a terminal and JSON lines otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto, env = "AT_FORWARDER_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum DeadLetterAction {
    /// One line per dead letter: id, time, reason, source, message.
    List {
        /// Only this reason (invalid_json, missing_service, …).
        #[arg(long)]
        reason: Option<String>,
    },
    /// One dead letter in full, with its original line.
    Show {
        /// Its id, as `list` prints it (YYYY-MM-DD:N).
        id: String,
    },
    /// Move dead letters back into the pipeline once their cause is fixed. Lines that still
    /// fail the lenient check stay unless --force.
    Requeue {
        /// Ids to requeue.
        ids: Vec<String>,
        /// Every dead letter (or every one of --reason).
        #[arg(long)]
        all: bool,
        /// Only this reason.
        #[arg(long)]
        reason: Option<String>,
        /// Requeue even lines that still fail the lenient check.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BufferAction {
    /// One line per chunk: id, place (queue, backup), key, records, bytes, age, attempts, reason.
    List,
    /// The records of one chunk.
    Show {
        /// Its id, as `list` prints it.
        id: String,
    },
    /// Move backed-up chunks back into the queue (sent after the next start).
    Requeue {
        /// Ids to requeue.
        ids: Vec<String>,
        /// Every backed-up chunk.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the forwarder until SIGTERM or SIGINT; SIGHUP, or a change of the configuration
    /// file, reloads it.
    Run {
        /// Where /metrics, /healthz and /readyz listen when `<system> http_port` is not set.
        #[arg(
            long,
            default_value = "127.0.0.1:24231",
            env = "AT_FORWARDER_METRICS_LISTEN"
        )]
        metrics_listen: std::net::SocketAddr,
    },
    /// Parse and validate a configuration, print the resolved pipeline; exit 0 when
    /// valid, 2 when not.
    Check {
        /// Treat warnings as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Check event lines as at-forwarder would before forwarding them; prints
    /// `file:line: problem` for each failing event and exits 1 when any fails.
    Lint {
        /// The same as `--level activity_tracker` (what production registration expects).
        #[arg(long, conflicts_with = "level")]
        strict: bool,
        /// The check: off, lenient (default), cadf (DMTF CADF as seed 004 states it; bare
        /// CADF events without `meta` are read too), activity_tracker.
        #[arg(long, value_parser = cadf_level)]
        level: Option<crate::config::source::CadfValidation>,
        /// Files of event lines; standard input when none.
        files: Vec<PathBuf>,
    },
    /// Inspect and re-inject events that could not be forwarded.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
    /// Inspect the disk buffers: chunks by key and state, their records, backed-up chunks.
    Buffer {
        #[command(subcommand)]
        action: BufferAction,
    },
    /// Print the base64 services string of the Activity Tracker Secret (seed 001, step
    /// 2a), or with --yaml the whole Secret manifest (step 2b).
    EncodeServices {
        /// A service as NAME=TOKEN:PROJECT_ID; repeat for several.
        #[arg(long = "service", required = true, value_name = "NAME=TOKEN:PROJECT")]
        services: Vec<String>,
        /// The Activity Tracker host the services registered with (the Secret's key).
        #[arg(long, default_value = "activity-tracker.ng.bluemix.net")]
        at_host: String,
        /// Print the Secret manifest rather than the base64 string.
        #[arg(long, conflicts_with = "out_dir")]
        yaml: bool,
        /// Write the Secret's file into DIR, named after the host (mode 0600), as the
        /// forwarder reads it from `secrets_path` on a VM or in a local try.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Show the whole path working in a few seconds: a generator writing events, the
    /// forwarder with the seed's configuration, a local receiver; exits 0 when every event
    /// arrived.
    Demo {
        /// How long services write events.
        #[arg(long, default_value = "8s", value_parser = duration_arg)]
        duration: std::time::Duration,
        /// Events per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Number of services.
        #[arg(long, default_value_t = 3)]
        services: usize,
        /// Rotate each file after this many lines.
        #[arg(long, default_value_t = 500)]
        rotate_every: u64,
        /// Where events go: `at` (Activity Tracker), or `at,cloud-logs` for both through
        /// `@type copy` (the receiver also plays IBM Cloud Logs and its IAM, tokens renewed
        /// during the run).
        #[arg(long, value_delimiter = ',', default_value = "at")]
        outputs: Vec<String>,
    },
    /// Run a local Activity Tracker-compatible receiver (ingest and read side).
    Receiver {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// Directory of Secret files (the services' tokens).
        #[arg(long)]
        secrets_dir: PathBuf,
        /// Where events are stored.
        #[arg(long)]
        data_dir: PathBuf,
        /// Delete events older than this many days.
        #[arg(long)]
        retention_days: Option<u32>,
        /// Share of ingest requests answered 503 (0 to 1), to see retries work.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Delay before each answer.
        #[arg(long, default_value = "0s", value_parser = duration_arg)]
        latency: std::time::Duration,
        /// Answer ingest requests with this status…
        #[arg(long)]
        status: Option<u16>,
        /// …for this long after start.
        #[arg(long, default_value = "30s", value_parser = duration_arg)]
        status_for: std::time::Duration,
        /// Count events only, store nothing (GET /sink for totals, GET /sink/ids for the
        /// times each id arrived; Idempotency-Key replays are not counted again).
        #[arg(long)]
        sink: bool,
        /// With --sink: also measure each event's delay from its eventTime to its receipt
        /// (GET /sink reports latency_ms p50, p99, max).
        #[arg(long, requires = "sink")]
        sink_latency: bool,
        /// Also play IBM Cloud Logs (`/logs/v1/singles`) and its IAM (`/identity/token`)
        /// for the API keys in this file, one per line.
        #[arg(long, value_name = "FILE")]
        cloud_logs_api_keys: Option<PathBuf>,
        /// Lifetime of the IAM tokens it issues.
        #[arg(long, default_value = "1h", value_parser = duration_arg)]
        cloud_logs_token_lifetime: std::time::Duration,
    },
    /// Write seed-style audit events into per-pod files, rotating them.
    Generate {
        /// Root directory of the files.
        #[arg(long)]
        dir: PathBuf,
        /// Events per second.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Number of services.
        #[arg(long, default_value_t = 3)]
        services: usize,
        /// Files per service.
        #[arg(long, default_value_t = 2)]
        pods: usize,
        /// Rotate each file after this many lines.
        #[arg(long)]
        rotate_every: Option<u64>,
        /// Rotate by copy and truncate instead of rename.
        #[arg(long)]
        copytruncate: bool,
        /// Rotate only the first N files of each service by copy and truncate.
        #[arg(long, default_value_t = 0)]
        copytruncate_pods: usize,
        /// Stop after this long.
        #[arg(long, value_parser = duration_arg)]
        duration: Option<std::time::Duration>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// 750–900-byte events (request and response data added), as in the benchmarks.
        #[arg(long)]
        wide: bool,
    },
    /// Show the saved tail positions: path, inode, offset, size, lag and state
    /// (active, rotated, gone) of every file each tail source has read.
    /// Check the configuration and the environment it needs: state directories
    /// writable, each Secret present and parseable, each endpoint reachable (HEAD); one
    /// line per check; exit 0 when all pass, 1 when any fails, 2 on an invalid config.
    Validate,
    /// Print a shell completion script: `at-forwarder completions bash >
    /// /etc/bash_completion.d/at-forwarder`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `at-forwarder man | man -l -`.
    Man,
    Positions {
        /// The running daemon's operations endpoint, asked when it holds the position
        /// store [default: 127.0.0.1:<system> http_port, else 127.0.0.1:24231].
        #[arg(long)]
        endpoint: Option<std::net::SocketAddr>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match log_filter(&cli) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    if let Err(e) = logging::init(&filter, cli.log_format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let config = || {
        cli.config.clone().ok_or_else(|| {
            eprintln!("error: this command needs the configuration file: -c/--config FILE (or AT_FORWARDER_CONFIG)");
            ExitCode::from(EXIT_INVALID_CONFIG)
        })
    };
    match cli.command {
        Command::Check { strict } => config().map_or_else(|c| c, |c| check(&c, strict)),
        Command::Run { metrics_listen } => {
            config().map_or_else(|c| c, |c| run::run(&c, metrics_listen))
        }
        Command::Validate => config().map_or_else(|c| c, |c| validate::validate(&c)),
        Command::Positions { endpoint } => config().map_or_else(|c| c, |c| positions(&c, endpoint)),
        Command::Lint {
            strict,
            level,
            files,
        } => tools::lint(
            if strict {
                Some(crate::config::source::CadfValidation::ActivityTracker)
            } else {
                level
            },
            &files,
        ),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "at-forwarder", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DeadLetters { action } => {
            config().map_or_else(|c| c, |c| dead_letters(&c, action))
        }
        Command::Buffer { action } => config().map_or_else(|c| c, |c| buffer(&c, action)),
        Command::EncodeServices {
            services,
            at_host,
            yaml,
            out_dir,
        } => tools::encode_services(&services, &at_host, yaml, out_dir.as_deref()),
        Command::Demo {
            duration,
            rate,
            services,
            rotate_every,
            outputs,
        } => {
            let cloud_logs = match local::outputs_of(&outputs) {
                Ok(c) => c,
                Err(code) => return code,
            };
            local::demo(crate::demo::DemoOptions {
                duration,
                rate,
                services,
                rotate_every,
                cloud_logs,
            })
        }
        Command::Receiver {
            listen,
            secrets_dir,
            data_dir,
            retention_days,
            fail_rate,
            latency,
            status,
            status_for,
            sink,
            sink_latency,
            cloud_logs_api_keys,
            cloud_logs_token_lifetime,
        } => local::receiver(crate::receiver::ReceiverOptions {
            sink,
            sink_latency,
            cloud_logs_keys: cloud_logs_api_keys,
            cloud_logs_token_lifetime,
            listen,
            secrets_dir,
            data_dir,
            retention_days,
            retention_every: std::time::Duration::from_secs(3600),
            fail_rate,
            latency,
            status: status.map(|s| (s, status_for)),
        }),
        Command::Generate {
            dir,
            rate,
            services,
            pods,
            rotate_every,
            copytruncate,
            copytruncate_pods,
            duration,
            count,
            wide,
        } => local::generate(&crate::demo::generate::GenerateOptions {
            dir,
            rate,
            services,
            pods,
            rotate_every,
            copytruncate,
            copytruncate_pods,
            duration,
            count,
            wide,
        }),
    }
}

/// The log filter: `--log-level`, else the config's `<system> log_level` (for `run`),
/// else info (warn for the demo, which prints its own progress); for `run`, each
/// plugin's `@log_level` on top.
fn log_filter(cli: &Cli) -> Result<String> {
    // Errors are reported by the load that follows, once logging is set up.
    let loaded = match (&cli.command, &cli.config) {
        (Command::Run { .. }, Some(config)) => config::load(config, &LoadOptions::default()).ok(),
        _ => None,
    };
    let base = if let Some(level) = &cli.log_level {
        logging::filter_of(level)?
    } else if let Some(loaded) = &loaded {
        logging::filter_of_config(loaded.config.system.log_level).to_string()
    } else {
        let demo = matches!(cli.command, Command::Demo { .. });
        if demo { "warn" } else { "info" }.to_string()
    };
    Ok(match &loaded {
        Some(loaded) => logging::with_plugin_levels(base, &loaded.config),
        None => base,
    })
}

fn load(path: &std::path::Path, strict: bool) -> Result<Loaded, ExitCode> {
    let options = LoadOptions {
        strict,
        ..LoadOptions::default()
    };
    config::load(path, &options).map_err(|e| {
        match &e {
            ConfigError::Read { .. } => eprintln!("error: {e}"),
            ConfigError::Invalid { .. } => eprintln!("{e}"),
        }
        ExitCode::from(EXIT_INVALID_CONFIG)
    })
}

fn check(path: &std::path::Path, strict: bool) -> ExitCode {
    let loaded = match load(path, strict) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if !loaded.warnings.is_empty() {
        eprintln!("{}", loaded.warnings);
    }
    println!(
        "{}: valid ({} warning(s), {} note(s))\n",
        path.display(),
        loaded.warnings.warning_count(),
        loaded.warnings.note_count()
    );
    print!("{}", loaded.describe());
    ExitCode::SUCCESS
}

fn cadf_level(text: &str) -> Result<crate::config::source::CadfValidation, String> {
    crate::config::value::parse_enum(text)
}

fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::config::value::parse_duration(text)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn buffer(path: &std::path::Path, action: BufferAction) -> ExitCode {
    use tools::BufferCommand as B;
    let loaded = match load(path, false) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let dirs: Vec<PathBuf> = loaded
        .config
        .matches
        .iter()
        .filter_map(|m| m.buffer.as_ref().map(|b| b.options.path.clone()))
        .collect();
    let command = match action {
        BufferAction::List => B::List,
        BufferAction::Show { id } => B::Show { id },
        BufferAction::Requeue { ids, all } => B::Requeue { ids, all },
    };
    tools::buffer(&dirs, &command)
}

fn dead_letters(path: &std::path::Path, action: DeadLetterAction) -> ExitCode {
    use tools::DeadLetterCommand as D;
    let loaded = match load(path, false) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let Some(state) = loaded.config.state_dir() else {
        eprintln!(
            "error: no state directory: set <system> root_dir or a pos_file in a tail source"
        );
        return ExitCode::from(EXIT_INVALID_CONFIG);
    };
    let command = match action {
        DeadLetterAction::List { reason } => D::List { reason },
        DeadLetterAction::Show { id } => D::Show { id },
        DeadLetterAction::Requeue {
            ids,
            all,
            reason,
            force,
        } => D::Requeue {
            ids,
            all,
            reason,
            force,
        },
    };
    tools::dead_letters(&state, command)
}

fn positions(path: &std::path::Path, endpoint: Option<std::net::SocketAddr>) -> ExitCode {
    use crate::config::SourceKind;
    use crate::tail::{report, PositionStore};
    let loaded = match load(path, false) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let mut failed = false;
    for (i, source) in loaded.config.sources.iter().enumerate() {
        let SourceKind::Tail(tail) = &source.kind;
        let Some(pos_file) = &tail.options.pos_file else {
            println!("source #{}: no pos_file, positions are not kept", i + 1);
            continue;
        };
        let dir = PositionStore::dir_for(pos_file);
        if !dir.exists() {
            println!(
                "source #{}: no positions saved yet ({} does not exist)",
                i + 1,
                dir.display()
            );
            continue;
        }
        let result =
            PositionStore::open(&dir).and_then(|store| report::positions(&tail.options, &store));
        match result {
            Ok(rows) => println!(
                "source #{} ({}):\n{}",
                i + 1,
                dir.display(),
                report::table(&rows)
            ),
            Err(crate::tail::positions::PositionsError::Locked { .. }) => {
                // A running daemon holds the store: it reports every source itself.
                let port = loaded.config.system.http_port.unwrap_or(24231);
                let addr = endpoint.unwrap_or_else(|| ([127, 0, 0, 1], port).into());
                return match tools::http_get(addr, "/positions") {
                    Ok(body) => {
                        print!("{body}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: a running at-forwarder holds the position store, and its endpoint http://{addr}/positions did not answer: {e:#}\n  = help: pass --endpoint ADDR (its <system> http_port or --metrics-listen)");
                        ExitCode::FAILURE
                    }
                };
            }
            Err(e) => {
                eprintln!("error: source #{}: {e}", i + 1);
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
