//! The seed's `logging-activity-tracker.conf` (seed 001, step 2c) loads unchanged, with
//! every value resolved as fluentd would use it.

use std::path::PathBuf;
use std::time::Duration;

use at_forwarder::config::buffer::{OverflowAction, RetryType};
use at_forwarder::config::output::{Compression, PluginLogLevel};
use at_forwarder::config::source::ParseFormat;
use at_forwarder::config::{self, Output, SourceKind, WorkerRange};

use crate::support::{options, seed_config};

#[test]
fn seed_configmap_loads_with_the_values_it_sets() {
    let loaded = config::load(&seed_config(), &options()).expect("the seed configuration loads");
    let config = loaded.config;
    assert_eq!(config.system.workers, 1);

    assert_eq!(config.sources.len(), 1);
    let source = &config.sources[0];
    assert_eq!(
        source.directive.workers,
        Some(WorkerRange { first: 0, last: 0 })
    );
    assert_eq!(source.directive.location.line, 2);
    let SourceKind::Tail(tail) = &source.kind;
    assert_eq!(tail.type_name, "tailinodes");
    assert_eq!(tail.options.paths, ["/var/log/at/**/*.log*"]);
    assert_eq!(tail.options.exclude_paths, ["/var/log/at/**/*.gz"]);
    assert_eq!(
        tail.options.pos_file,
        Some(PathBuf::from(
            "/mnt/ibm-kube-fluentd-persist/fluentd-at.pos"
        ))
    );
    assert_eq!(tail.tag.to_string(), "kubernetes.at.*");
    assert_eq!(
        tail.tag.expand("/var/log/at/noisy_events.log"),
        "kubernetes.at.var.log.at.noisy_events.log"
    );
    assert!(tail.options.read_from_head);
    assert!(tail.follow_inodes);
    assert_eq!(tail.options.read_lines_limit, 100);
    assert_eq!(tail.options.rotate_wait, Duration::from_secs(43200));
    assert_eq!(tail.options.refresh_interval, Duration::from_secs(60));
    assert_eq!(tail.options.max_line_size, 1 << 20);
    assert_eq!(tail.parse.format, ParseFormat::Json);
    assert_eq!(tail.parse.time_format.as_deref(), Some("%Y-%m-%dT%H:%M:%S"));

    assert_eq!(config.matches.len(), 1);
    let m = &config.matches[0];
    assert_eq!(m.patterns.as_str(), "kubernetes.at.**");
    assert!(std::ptr::eq(
        config
            .route(None, "kubernetes.at.var.log.at.noisy_events.log")
            .unwrap(),
        m
    ));
    let Output::ActivityTracker(at) = &m.output else {
        panic!("expected the Activity Tracker output")
    };
    assert_eq!(at.target_host, "ACTIVITY_TRACKER_URL");
    assert_eq!(at.service_region, "ACTIVITY_TRACKER_REGION");
    assert_eq!(
        at.secrets_path,
        PathBuf::from("/mnt/activity-tracker/secrets")
    );
    assert_eq!(at.secret_key, "ACTIVITY_TRACKER_URL");
    assert_eq!(at.plugin_log_level, PluginLogLevel::Warn);
    assert_eq!(at.endpoint_path, "/v3/events");
    assert_eq!(at.compress, Compression::Gzip);
    assert_eq!(at.request_timeout, Duration::from_secs(30));
    assert_eq!(at.max_events_per_request, 1000);

    let b = m
        .buffer
        .as_ref()
        .expect("the AT output always has a buffer");
    assert_eq!(
        b.options.path,
        PathBuf::from("/mnt/ibm-kube-fluentd-persist/fluentd-at-buffer.buf")
    );
    assert_eq!(b.options.chunk_limit_size, 500 * 1024);
    assert_eq!(b.options.total_limit_size, 800 * 1024 * 1024);
    assert_eq!(b.options.flush_interval, Duration::from_secs(10));
    assert_eq!(b.options.overflow_action, OverflowAction::Block);
    assert!(b.flush_at_shutdown);
    assert!(b.chunk_keys.is_empty());
    assert_eq!(b.options.retry.max_times, Some(10));
    assert_eq!(b.options.retry.wait, Duration::from_secs(1));
    assert_eq!(b.options.retry.max_interval, Some(Duration::from_secs(10)));
    assert_eq!(b.options.retry.retry_type, RetryType::ExponentialBackoff);
    assert!(
        b.options.retry.forever,
        "disable_retry_limit true means retry forever"
    );
}

#[test]
fn seed_configmap_warns_only_about_its_placeholders_and_the_ignored_retry_limit() {
    let loaded = config::load(&seed_config(), &options()).unwrap();
    let messages: Vec<&str> = loaded
        .warnings
        .diagnostics()
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "targetHost 'ACTIVITY_TRACKER_URL' looks like a placeholder",
            "service_region 'ACTIVITY_TRACKER_REGION' looks like a placeholder",
            "'time_format' is not applied: the record's time is not forwarded (Activity Tracker orders events by eventTime); the time field itself (time_key, default 'time') is removed as fluentd does unless keep_time_key",
            "'retry_max_times' has no effect: retries go on forever (set on line 33), as in fluentd",
        ]
    );
    // The placeholders are what the seed's user must act on; the retry limit (fluentd
    // ignores it in the same way) and time_format (no forwarded byte depends on it) are
    // notes.
    assert_eq!(loaded.warnings.warning_count(), 2);
    assert_eq!(loaded.warnings.note_count(), 2);
}

#[test]
fn seed_configmap_with_real_values_passes_strict() {
    let text = std::fs::read_to_string(seed_config())
        .unwrap()
        .replace("ACTIVITY_TRACKER_URL", "activity-tracker.ng.bluemix.net")
        .replace("ACTIVITY_TRACKER_REGION", "ng");
    let strict = config::LoadOptions {
        strict: true,
        ..options()
    };
    let loaded = config::load_str(&text, "seed.conf".as_ref(), &strict)
        .unwrap_or_else(|e| panic!("valid under --strict:\n{e}"));
    assert_eq!(loaded.warnings.note_count(), 2);
    let Output::ActivityTracker(at) = &loaded.config.matches[0].output else {
        unreachable!()
    };
    assert_eq!(
        at.endpoint_url(),
        "https://activity-tracker.ng.bluemix.net/v3/events"
    );
    assert_eq!(at.secret_key, "activity-tracker.ng.bluemix.net");
}

#[test]
fn the_daemonset_configmap_passes_strict_checks() {
    // The kustomize base and the Helm chart both make their ConfigMap of this file.
    let text = std::fs::read_to_string(
        crate::support::repo_root().join("deploy/kubernetes/logging-activity-tracker.conf"),
    )
    .unwrap();
    let strict = config::LoadOptions {
        strict: true,
        ..options()
    };
    let loaded = config::load_str(&text, "configmap.conf".as_ref(), &strict)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.system.http_port, Some(24231));
    let SourceKind::Tail(tail) = &loaded.config.sources[0].kind;
    assert_eq!(
        tail.options.paths,
        ["/var/log/at/**/*.log*", "/var/log/at-no-rotate/**/*.log*"]
    );
}
