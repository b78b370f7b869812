//! Service tokens from the mounted Kubernetes Secret `activity-tracker-secrets`.
//!
//! The file named by `secret_key` in `secrets_path` holds
//! `{"services":[{"service_name","auth_token_value","project_id"}…]}`, or the base64 text
//! of it (as seed 001, step 2a, makes it). Kubernetes updates a mounted Secret by swapping
//! the `..data` symlink; the file is re-read when its identity or modification time
//! changes (looked at once a second at most) and at once after a 401 or 403. A malformed
//! file keeps the last good tokens (ERROR). Tokens never reach a log line or a Debug print.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use serde::Deserialize;
use tracing::{error, info};

/// How often the Secret's file is looked at for changes.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Largest Secret file read: a Kubernetes Secret holds at most 1 MiB.
pub const MAX_SECRET_BYTES: u64 = 1 << 20;

/// A credential: shown as `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The value, for the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A service's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCredentials {
    /// `auth_token_value`.
    pub token: Token,
    /// `project_id`.
    pub project_id: String,
}

#[derive(Deserialize)]
struct SecretFile {
    services: Vec<ServiceEntry>,
}

#[derive(Deserialize)]
struct ServiceEntry {
    service_name: String,
    auth_token_value: String,
    #[serde(default)]
    project_id: String,
}

/// Parses the Secret's content: JSON, or base64 of JSON. An error names the byte offset
/// and the kind of problem only: parser messages quote the bad value, which may be a token.
pub fn parse(content: &[u8]) -> Result<HashMap<String, ServiceCredentials>, String> {
    let text = String::from_utf8_lossy(content);
    let trimmed = text.trim();
    let json = if trimmed.starts_with('{') {
        trimmed.as_bytes().to_vec()
    } else {
        let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| "neither JSON nor base64".to_string())?
    };
    let file: SecretFile = serde_json::from_slice(&json).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "a field of the wrong type or missing",
            serde_json::error::Category::Eof => "cut short",
        };
        format!(
            "not the services JSON ({{\"services\":[…]}}): {what} at byte {} of the JSON",
            byte_offset(&json, e.line(), e.column())
        )
    })?;
    Ok(file
        .services
        .into_iter()
        .map(|s| {
            (
                s.service_name,
                ServiceCredentials {
                    token: Token(s.auth_token_value),
                    project_id: s.project_id,
                },
            )
        })
        .collect())
}

/// The byte offset of a 1-based line and column (serde_json's error position).
fn byte_offset(text: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split(|b| *b == b'\n')
        .take(line.saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    (line_start + column.saturating_sub(1)).min(text.len())
}

/// The base64 services string of the Secret, from `NAME=TOKEN:PROJECT` arguments.
pub fn encode(services: &[String]) -> Result<String, String> {
    let mut entries = Vec::new();
    for s in services {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| format!("'{}' is not NAME=TOKEN:PROJECT", redact_arg(s)))?;
        let (token, project) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("the service '{name}' has no ':PROJECT' after its token"))?;
        if name.is_empty() || token.is_empty() || project.is_empty() {
            return Err(format!(
                "the service '{name}' needs a name, a token and a project id"
            ));
        }
        entries.push(serde_json::json!({"service_name": name, "auth_token_value": token, "project_id": project}));
    }
    let json = serde_json::json!({ "services": entries }).to_string();
    Ok(base64::engine::general_purpose::STANDARD.encode(json))
}

/// An argument with its token part hidden, for error messages.
fn redact_arg(arg: &str) -> String {
    arg.split_once('=').map_or_else(
        || "[REDACTED]".to_string(),
        |(name, _)| format!("{name}=[REDACTED]"),
    )
}

/// The tokens of one output, kept fresh.
pub struct Secrets {
    path: PathBuf,
    state: Mutex<State>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

struct State {
    services: HashMap<String, ServiceCredentials>,
    /// (device, inode, modified) of the file last read, through the symlinks.
    seen: Option<(u64, u64, Option<SystemTime>)>,
    checked: Option<Instant>,
    reloads: u64,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Tokens from `<secrets_path>/<secret_key>`; read now, and again when it changes
    /// (each load counted in `metrics`).
    pub fn new(path: PathBuf, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        let secrets = Secrets {
            path,
            metrics,
            state: Mutex::new(State {
                services: HashMap::new(),
                seen: None,
                checked: None,
                reloads: 0,
            }),
        };
        secrets.refresh(true);
        secrets
    }

    /// The credentials of `service`, re-reading the file first when it may have changed.
    pub fn get(&self, service: &str) -> Option<ServiceCredentials> {
        self.refresh(false);
        self.lock().services.get(service).cloned()
    }

    /// Whether `service` had credentials when the file was last read. No re-read: this
    /// is asked under the buffer's lock, and sends re-read the file often enough (a
    /// stale answer only decides whether a chunk starts in memory or on disk).
    pub fn has(&self, service: &str) -> bool {
        self.lock().services.contains_key(service)
    }

    /// Re-reads the file now (after a 401 or 403).
    pub fn reload(&self) {
        self.lock().seen = None;
        self.refresh(true);
    }

    /// How many times the Secret was read and loaded (changes, and re-reads after 401/403).
    pub fn reloads(&self) -> u64 {
        self.lock().reloads
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refresh(&self, force: bool) {
        use std::os::unix::fs::MetadataExt;
        let mut s = self.lock();
        if !force && s.checked.is_some_and(|t| t.elapsed() < CHECK_EVERY) {
            return;
        }
        s.checked = Some(Instant::now());
        let Ok(meta) = std::fs::metadata(&self.path) else {
            if s.seen.take().is_some() || force {
                error!(
                    file = %self.path.display(),
                    "The Activity Tracker Secret cannot be read; keeping the last tokens. \
                     Its file is named after targetHost's host (the Secret's key); \
                     `at-forwarder encode-services --service NAME=TOKEN:PROJECT --at-host HOST --out-dir DIR` writes it, \
                     `at-forwarder validate` checks it."
                );
            }
            return;
        };
        let id = (meta.dev(), meta.ino(), meta.modified().ok());
        if s.seen == Some(id) {
            return;
        }
        s.seen = Some(id);
        match read_capped(&self.path).and_then(|c| parse(&c)) {
            Ok(services) => {
                info!(file = %self.path.display(), services = services.len(), "Loaded service tokens.");
                s.services = services;
                s.reloads += 1;
                self.metrics
                    .secret_reloads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                error!(file = %self.path.display(), error = %e, "The Activity Tracker Secret is malformed; keeping the last good tokens.")
            }
        }
    }
}

/// Reads and parses a Secret file as the output does (size cap, JSON or base64 of JSON);
/// an error never quotes the file's content.
pub fn read_file(path: &std::path::Path) -> Result<HashMap<String, ServiceCredentials>, String> {
    parse(&read_capped(path)?)
}

/// The file's bytes, if it holds at most [`MAX_SECRET_BYTES`].
fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "larger than {MAX_SECRET_BYTES} bytes (a Kubernetes Secret holds at most 1 MiB)"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str =
        r#"{"services":[{"service_name":"svc","auth_token_value":"tok-1","project_id":"p1"}]}"#;

    #[test]
    fn parse_errors_name_the_byte_not_the_value() {
        let cases = [
            r#"{"services":"tok-SECRET-1"}"#,
            r#"{"services":[{"service_name":"svc","auth_token_value":"tok-SECRET-2","project_id":7}]}"#,
            r#"{"services":[{"service_name":"svc","auth_token_value":"tok-SECRET-3\q"}]}"#,
            "tok-SECRET-4 not base64!",
        ];
        for case in cases {
            let err = parse(case.as_bytes()).unwrap_err();
            assert!(!err.contains("SECRET"), "{err}");
        }
        let err = parse(cases[0].as_bytes()).unwrap_err();
        assert!(err.contains("at byte 25"), "{err}");
    }

    #[test]
    fn a_secret_file_over_1_mib_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host");
        let big = format!(
            r#"{{"services":[{{"service_name":"svc","auth_token_value":"{}"}}]}}"#,
            "t".repeat(2 << 20)
        );
        std::fs::write(&path, big).unwrap();
        let err = read_capped(&path).unwrap_err();
        assert!(err.contains("larger than"), "{err}");
        assert!(Secrets::new(path, Default::default()).get("svc").is_none());
    }

    #[test]
    fn encode_round_trips_through_parse() {
        let encoded = encode(&["svc=tok:en:proj-1".to_string(), "b=t2:p2".to_string()]).unwrap();
        let parsed = parse(encoded.as_bytes()).unwrap();
        assert_eq!(parsed["svc"].token.expose(), "tok:en");
        assert_eq!(parsed["svc"].project_id, "proj-1");
        assert_eq!(parsed["b"].project_id, "p2");
        let err = encode(&["svc-secret-token".to_string()]).unwrap_err();
        assert!(!err.contains("secret-token"), "{err}");
    }

    #[test]
    fn json_and_base64_forms() {
        let plain = parse(JSON.as_bytes()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(JSON);
        let wrapped = format!("{}\n{}\n", &b64[..20], &b64[20..]);
        assert_eq!(parse(wrapped.as_bytes()).unwrap(), plain);
        assert_eq!(plain["svc"].project_id, "p1");
        assert_eq!(
            format!("{:?}", plain["svc"]),
            "ServiceCredentials { token: [REDACTED], project_id: \"p1\" }"
        );
        assert!(parse(b"{\"services\":3}").is_err());
        assert!(parse(b"%%%")
            .unwrap_err()
            .contains("neither JSON nor base64"));
    }

    #[test]
    fn a_data_swap_is_picked_up_and_a_broken_file_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("..2026_01");
        std::fs::create_dir(&v1).unwrap();
        std::fs::write(v1.join("host"), JSON).unwrap();
        std::os::unix::fs::symlink("..2026_01", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/host", dir.path().join("host")).unwrap();
        let secrets = Secrets::new(dir.path().join("host"), Default::default());
        assert_eq!(secrets.get("svc").unwrap().token.expose(), "tok-1");
        let v2 = dir.path().join("..2026_02");
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v2.join("host"), JSON.replace("tok-1", "tok-2")).unwrap();
        std::os::unix::fs::symlink("..2026_02", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        secrets.reload();
        assert_eq!(secrets.get("svc").unwrap().token.expose(), "tok-2");
        std::fs::write(v2.join("host"), "{broken").unwrap();
        secrets.reload();
        assert_eq!(secrets.get("svc").unwrap().token.expose(), "tok-2");
    }
}
