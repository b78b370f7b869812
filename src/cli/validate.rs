//! `at-forwarder validate -c FILE`: the configuration, and the environment it needs to
//! run — one line per check, so an operator sees every problem at once.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{Config, Output, SourceKind};
use crate::output::secrets;

/// How long the endpoint has to answer.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

struct Report {
    failed: usize,
}

impl Report {
    fn line(&mut self, ok: bool, text: &str) {
        if !ok {
            self.failed += 1;
        }
        println!("{}  {text}", if ok { "ok  " } else { "FAIL" });
    }
}

pub(super) fn validate(path: &Path) -> ExitCode {
    let loaded = match super::load(path, false) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let mut report = Report { failed: 0 };
    let warnings = loaded.warnings.warning_count();
    report.line(
        true,
        &format!(
            "configuration {}: valid ({warnings} warning(s); `check` lists them)",
            path.display()
        ),
    );
    state_dirs(&loaded.config, &mut report);
    sources(&loaded.config, &mut report);
    outputs(&loaded.config, &mut report);
    if report.failed == 0 {
        println!("\nevery check passed");
        ExitCode::SUCCESS
    } else {
        println!("\n{} check(s) failed", report.failed);
        ExitCode::FAILURE
    }
}

/// Each directory `run` writes to can be created and written.
fn state_dirs(config: &Config, report: &mut Report) {
    for dir in crate::pipeline::instance::owned_dirs(config) {
        let probe = dir.join(".at-forwarder-validate");
        let result = crate::fsutil::create_private_dir(&dir)
            .and_then(|()| std::fs::write(&probe, b"probe"))
            .and_then(|()| std::fs::remove_file(&probe));
        match result {
            Ok(()) => report.line(
                true,
                &format!("state directory {}: writable", dir.display()),
            ),
            Err(e) => report.line(
                false,
                &format!("state directory {}: not writable: {e}", dir.display()),
            ),
        }
    }
}

/// How many files each tail source's paths match now (none is worth knowing, not a fault).
fn sources(config: &Config, report: &mut Report) {
    for (i, source) in config.sources.iter().enumerate() {
        let SourceKind::Tail(tail) = &source.kind;
        let files = crate::tail::report::matching_files(&tail.options);
        report.line(
            true,
            &format!(
                "source #{}: {files} file(s) match {}",
                i + 1,
                tail.options.paths.join(", ")
            ),
        );
    }
}

/// Each Activity Tracker output: its Secret file and its endpoint.
fn outputs(config: &Config, report: &mut Report) {
    let Ok(rt) = super::runtime() else {
        report.line(
            false,
            "cannot start the async runtime to reach the endpoints",
        );
        return;
    };
    let mut outputs: Vec<&Output> = Vec::new();
    for m in &config.matches {
        match &m.output {
            Output::Copy(stores) => outputs.extend(stores.iter().map(|s| &s.output)),
            other => outputs.push(other),
        }
    }
    for output in outputs {
        let at = match output {
            Output::ActivityTracker(at) => at,
            Output::Http(h) => {
                credential_file(
                    report,
                    h.auth.as_ref().map(|a| match a {
                        crate::config::http::HttpAuth::Basic { password_path, .. } => password_path,
                        crate::config::http::HttpAuth::Bearer { token_path } => token_path,
                    }),
                );
                endpoint(&rt, report, h.endpoint.as_str());
                continue;
            }
            Output::CloudLogs(c) => {
                credential_file(
                    report,
                    Some(match &c.credential {
                        crate::config::cloud_logs::IamCredential::ApiKey(p) => p,
                        crate::config::cloud_logs::IamCredential::TrustedProfile {
                            cr_token_path,
                            ..
                        } => cr_token_path,
                    }),
                );
                endpoint(&rt, report, c.url.as_str());
                endpoint(&rt, report, c.iam_endpoint.as_str());
                continue;
            }
            Output::Stdout | Output::Copy(_) => continue,
        };
        let file = at.secrets_path.join(&at.secret_key);
        match secrets::read_file(&file) {
            Ok(services) => {
                let mut names: Vec<&String> = services.keys().collect();
                names.sort();
                report.line(
                    !names.is_empty(),
                    &format!("secret {}: {} service token(s): {}", file.display(), names.len(), names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")),
                );
            }
            Err(e) => report.line(
                false,
                &format!(
                    "secret {}: {e}\n      = help: the file is named after targetHost's host ({}); write it with \
                     `at-forwarder encode-services --service NAME=TOKEN:PROJECT --at-host {} --out-dir DIR`",
                    file.display(),
                    at.secret_key,
                    at.secret_key
                ),
            ),
        }
        endpoint(&rt, report, &at.endpoint_url());
    }
}

/// A credential file of an output: present, readable and not empty (never printed).
fn credential_file(report: &mut Report, path: Option<&std::path::PathBuf>) {
    let Some(path) = path else { return };
    let ok = std::fs::read_to_string(path).is_ok_and(|t| !t.trim().is_empty());
    report.line(
        ok,
        &format!(
            "credential {}: {}",
            path.display(),
            if ok {
                "present"
            } else {
                "missing, unreadable or empty"
            }
        ),
    );
}

fn endpoint(rt: &tokio::runtime::Runtime, report: &mut Report, url: &str) {
    match rt.block_on(reach(url)) {
        Ok(status) => report.line(
            true,
            &format!("endpoint {url}: reachable (HEAD answered {status})"),
        ),
        Err(e) => report.line(false, &format!("endpoint {url}: not reachable: {e}")),
    }
}

/// Any HTTP answer to a HEAD (no token sent, no redirect followed) means reachable.
async fn reach(url: &str) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REACH_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let answer = client.head(url).send().await.map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text = format!("{text}: {s}");
            source = s.source();
        }
        text
    })?;
    Ok(answer.status().as_u16())
}
