//! What the configuration language offers beyond the seed: includes, workers, labels,
//! routing, v0.12 parameters, defaults, and the warnings that keep typos from going unseen.

use std::path::PathBuf;
use std::time::Duration;

use at_forwarder::config::buffer::{BufferConfig, OverflowAction};
use at_forwarder::config::{
    self, Config, LoadOptions, Output, SourceKind, TailSource, WorkerRange,
};

use crate::support::{at_match, errors, load, load_in, options, pipeline, warnings};

fn tail(config: &Config, i: usize) -> &TailSource {
    let SourceKind::Tail(t) = &config.sources[i].kind;
    t
}

fn buffer(config: &Config, i: usize) -> &BufferConfig {
    config.matches[i].buffer.as_ref().expect("a buffer")
}

fn valid(text: &str) -> Config {
    match load(text) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("expected a valid configuration:\n{text}\ngot:\n{e}"),
    }
}

#[test]
fn tail_source_defaults_are_fluentds() {
    let config = valid(&pipeline("", &at_match("")));
    let t = tail(&config, 0);
    assert!(
        !t.options.read_from_head
            && !t.follow_inodes
            && !t.options.ignore_repeated_permission_error
    );
    assert_eq!(t.options.read_lines_limit, 1000);
    assert_eq!(t.options.rotate_wait, Duration::from_secs(5));
    assert_eq!(t.options.refresh_interval, Duration::from_secs(60));
    assert_eq!(t.options.max_line_size, 1 << 20);
    assert_eq!(
        (
            t.path_key.as_ref(),
            t.options.limit_recently_modified,
            t.options.read_bytes_limit_per_second
        ),
        (None, None, None)
    );
}

#[test]
fn buffer_defaults_are_fluentds_file_buffer_except_where_audit_data_needs_better() {
    let config = valid(&pipeline("", &at_match("")));
    let b = buffer(&config, 0);
    assert_eq!(b.options.chunk_limit_size, 256 << 20);
    assert_eq!(b.options.total_limit_size, 64 << 30);
    assert_eq!(b.options.flush_interval, Duration::from_secs(60));
    assert_eq!(b.flush_thread_count, 1);
    assert!(!b.flush_at_shutdown);
    assert_eq!(b.options.overflow_action, OverflowAction::Block);
    assert_eq!(b.options.retry.wait, Duration::from_secs(1));
    assert_eq!(b.options.retry.exponential_backoff_base, 2.0);
    assert_eq!(b.options.retry.timeout, Duration::from_secs(72 * 3600));
    assert!(
        b.options.retry.forever,
        "with no limit set, audit data is retried for as long as the disk allows"
    );
    assert!(b.options.retry.randomize);
}

#[test]
fn a_retry_limit_turns_off_retrying_forever() {
    let config = valid(&pipeline(
        "",
        &at_match("  <buffer>\n    retry_max_times 3\n  </buffer>")
            .replace("  <buffer>\n    path /tmp/buf\n  </buffer>\n", "")
            .replace(
                "service_region ng",
                "service_region ng\n  buffer_path /tmp/b",
            ),
    ));
    let b = buffer(&config, 0);
    assert_eq!(
        (b.options.retry.max_times, b.options.retry.forever),
        (Some(3), false)
    );
    let config = valid(&pipeline(
        "",
        &at_match("  retry_limit 5\n  disable_retry_limit false"),
    ));
    assert_eq!(
        (
            buffer(&config, 0).options.retry.max_times,
            buffer(&config, 0).options.retry.forever
        ),
        (Some(5), false)
    );
}

#[test]
fn v012_parameters_in_match_fill_the_buffer() {
    let body = "  @type ibmactivitytracker\n  targetHost h.example\n  service_region ng\n  buffer_type file\n  buffer_path /var/lib/at/buf\n  buffer_chunk_limit 2m\n  buffer_queue_limit 10\n  buffer_queue_full_action exception\n  flush_interval 5s\n  num_threads 4\n  retry_wait 2s\n  max_retry_wait 30s\n  disable_retry_limit true";
    let config = valid(&pipeline("", body));
    let b = buffer(&config, 0);
    assert_eq!(b.options.path, PathBuf::from("/var/lib/at/buf"));
    assert_eq!(b.options.chunk_limit_size, 2 << 20);
    assert_eq!(b.queued_chunks_limit_size, Some(10));
    assert_eq!(b.options.overflow_action, OverflowAction::ThrowException);
    assert_eq!(b.options.flush_interval, Duration::from_secs(5));
    assert_eq!(b.flush_thread_count, 4);
    assert_eq!(b.options.retry.wait, Duration::from_secs(2));
    assert_eq!(b.options.retry.max_interval, Some(Duration::from_secs(30)));
    assert!(b.options.retry.forever);
}

#[test]
fn the_buffer_section_wins_over_v012_parameters_with_a_warning() {
    let text = pipeline(
        "",
        &at_match("  flush_interval 5s").replace(
            "    path /tmp/buf\n",
            "    path /tmp/buf\n    flush_interval 7s\n",
        ),
    );
    let loaded = load(&text).unwrap();
    assert_eq!(
        buffer(&loaded.config, 0).options.flush_interval,
        Duration::from_secs(7)
    );
    assert!(
        loaded
            .warnings
            .to_string()
            .contains("'flush_interval' is also set as 'flush_interval' in <buffer>"),
        "{}",
        loaded.warnings
    );
}

#[test]
fn include_is_relative_to_the_including_file_and_globs_are_sorted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf.d/sub")).unwrap();
    // Written in reverse order: sorting, not creation order, decides.
    std::fs::write(
        dir.path().join("conf.d/20-match.conf"),
        "<match second.**>\n  @type stdout\n</match>\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("conf.d/10-match.conf"),
        "<match at.**>\n  @type stdout\n</match>\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("conf.d/sub/params.conf"),
        "read_lines_limit 7\n@include ../../more/limit.conf\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("more")).unwrap();
    std::fs::write(dir.path().join("more/limit.conf"), "rotate_wait 1m\n").unwrap();
    let text = pipeline("  @include conf.d/sub/params.conf", "  @type stdout").replace(
        "<match at.**>\n  @type stdout\n</match>\n",
        "@include conf.d/*.conf\n",
    );
    let loaded = load_in(dir.path(), &text).unwrap();
    let config = loaded.config;
    let patterns: Vec<&str> = config.matches.iter().map(|m| m.patterns.as_str()).collect();
    assert_eq!(patterns, ["at.**", "second.**"]);
    assert!(config.matches[0]
        .directive
        .location
        .file
        .ends_with("conf.d/10-match.conf"));
    assert_eq!(tail(&config, 0).options.read_lines_limit, 7);
    assert_eq!(
        tail(&config, 0).options.rotate_wait,
        Duration::from_secs(60)
    );
}

#[test]
fn include_errors_name_the_including_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.conf"), "@include b.conf\n").unwrap();
    std::fs::write(dir.path().join("b.conf"), "\n@include a.conf\n").unwrap();
    let err = config::load(&dir.path().join("a.conf"), &options())
        .unwrap_err()
        .to_string();
    assert!(err.contains("@include cycle"), "{err}");
    assert!(err.contains("b.conf:2:10"), "{err}");
    let report = load_in(dir.path(), "@include nothing/*.conf\n")
        .unwrap()
        .warnings
        .to_string();
    assert!(report.contains("matches no file"), "{report}");
}

#[test]
fn errors_inside_included_files_point_into_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.conf"), "<match x>\n  @type stdout\n  <buffer>\n    path /b\n    chunk_limit_size lots\n  </buffer>\n</match>\n").unwrap();
    let err = load_in(dir.path(), "@include bad.conf\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.conf:5:22"), "{err}");
    assert!(err.contains("5 |     chunk_limit_size lots"), "{err}");
}

#[test]
fn worker_sections_are_hoisted_with_their_ids() {
    let inner = pipeline("", "  @type stdout");
    let config = valid(&format!(
        "<system>\n  workers 2\n</system>\n<worker 0-1>\n{inner}</worker>\n"
    ));
    assert_eq!(config.system.workers, 2);
    assert_eq!(
        config.sources[0].directive.workers,
        Some(WorkerRange { first: 0, last: 1 })
    );
    assert_eq!(
        config.matches[0].directive.workers,
        Some(WorkerRange { first: 0, last: 1 })
    );
    let overlap = format!("<system>\n  workers 3\n</system>\n<worker 0-1>\n{inner}</worker>\n<worker 1-2>\n</worker>\n");
    assert!(errors(&overlap).contains("worker ranges 0-1 and 1-2 overlap"));
}

#[test]
fn labels_route_sources_to_their_own_matches() {
    let text = "<source>\n  @type tail\n  @label @AT\n  path /a/*.log\n  tag at.*\n  format json\n  pos_file /p\n</source>\n<match at.**>\n  @type stdout\n</match>\n<label @AT>\n  <match **>\n    @id in_label\n    @type stdout\n  </match>\n</label>\n";
    let config = valid(text);
    assert_eq!(config.labels, ["@AT"]);
    let routed = config.route(Some("@AT"), "at.var.log.x").unwrap();
    assert_eq!(routed.directive.id.as_deref(), Some("in_label"));
    assert_eq!(config.route(None, "at.x").unwrap().directive.label, None);
    assert!(errors("<label @ROOT>\n</label>\n").contains("@ROOT is a reserved label"));
    assert!(errors("<label>\n</label>\n").contains("missing label name"));
}

#[test]
fn first_matching_match_wins_in_file_order() {
    let text = pipeline("", "  @id first\n  @type stdout") + "<match **>\n  @id catch_all\n  @type stdout\n</match>\n<match {a,b}.* c>\n  @type stdout\n</match>\n";
    let config = valid(&text);
    assert_eq!(
        config.route(None, "at.x").unwrap().directive.id.as_deref(),
        Some("first")
    );
    assert_eq!(
        config.route(None, "other").unwrap().directive.id.as_deref(),
        Some("catch_all")
    );
}

#[test]
fn sources_whose_events_match_nothing_are_flagged() {
    let text = pipeline("", "  @type stdout").replace("<match at.**>", "<match other.**>");
    assert!(warnings(&text)
        .contains("no <match> receives the events of this source (tag 'at.var.log.at.x.log')"));
}

#[test]
fn unknown_parameters_warn_with_a_suggestion() {
    let report = warnings(&pipeline("  rotate_wiat 5s", &at_match("  targethost x")));
    assert!(
        report.contains("unknown parameter 'rotate_wiat' in <source>; it is ignored"),
        "{report}"
    );
    assert!(report.contains("did you mean 'rotate_wait'?"), "{report}");
    assert!(report.contains("did you mean 'targetHost'?"), "{report}");
    let report = warnings(&pipeline("", &at_match("  <bufer>\n  </bufer>")));
    assert!(
        report.contains("unknown section <bufer> in <match at.**>")
            && report.contains("did you mean <buffer>?"),
        "{report}"
    );
}

#[test]
fn strict_mode_turns_warnings_into_errors() {
    let text = pipeline("  rotate_wiat 5s", &at_match(""));
    let strict = LoadOptions {
        strict: true,
        ..options()
    };
    let err = config::load_str(&text, "s.conf".as_ref(), &strict)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("error: unknown parameter 'rotate_wiat'"),
        "{err}"
    );
}

#[test]
fn literal_forms_reach_typed_values() {
    let text = pipeline(
        "  path [\"/var/log/at/**/*.log\",\n         \"/var/log/at-no-rotate/**/*\"]\n  exclude_path /a/*.gz, /b/*.gz\n  read_from_head\n  follow_inodes yes\n  max_line_size 64k",
        &at_match("").replace("targetHost activity-tracker.ng.bluemix.net", "targetHost \"#{ENV['AT_HOST']}\"").replace("service_region ng", "service_region \"#{ENV['AT_REGION']}\""),
    );
    let config = valid(&text);
    let t = tail(&config, 0);
    assert_eq!(
        t.options.paths,
        ["/var/log/at/**/*.log", "/var/log/at-no-rotate/**/*"]
    );
    assert_eq!(t.options.exclude_paths, ["/a/*.gz", "/b/*.gz"]);
    assert!(t.options.read_from_head && t.follow_inodes);
    assert_eq!(t.options.max_line_size, 64 << 10);
    let Output::ActivityTracker(at) = &config.matches[0].output else {
        unreachable!()
    };
    assert_eq!(
        (at.target_host.as_str(), at.service_region.as_str()),
        ("activity-tracker.eu-de.bluemix.net", "eu-de")
    );
}

#[test]
fn legacy_type_and_parse_section_are_accepted() {
    let text = "<source>\n  type tail\n  path /a/*.log\n  tag at.*\n  pos_file /p\n  <parse>\n    @type json\n    time_key eventTime\n  </parse>\n</source>\n<match **>\n  type stdout\n</match>\n";
    let config = valid(text);
    assert_eq!(
        tail(&config, 0).parse.time_key.as_deref(),
        Some("eventTime")
    );
    assert!(errors(&text.replace("@type json", "@type csv")).contains("'csv' is not one of json"));
    let both = text.replace("  pos_file /p\n", "  pos_file /p\n  format json\n");
    assert!(warnings(&both)
        .contains("ignored: the <parse> section (line 7) decides how lines are parsed"));
}

#[test]
fn root_dir_gives_outputs_with_an_id_a_buffer_directory() {
    let body = "  @id at_out\n  @type ibmactivitytracker\n  targetHost http://127.0.0.1:9000\n  service_region ng";
    let config = valid(&format!(
        "<system>\n  root_dir /var/lib/at-forwarder\n</system>\n{}",
        pipeline("", body)
    ));
    assert_eq!(
        buffer(&config, 0).options.path,
        PathBuf::from("/var/lib/at-forwarder/buffer/at_out")
    );
    let Output::ActivityTracker(at) = &config.matches[0].output else {
        unreachable!()
    };
    assert_eq!(
        (at.endpoint_url().as_str(), at.secret_key.as_str()),
        ("http://127.0.0.1:9000/v3/events", "127.0.0.1")
    );
}

#[test]
fn memory_buffers_are_kept_on_disk_with_a_warning() {
    let text = pipeline(
        "",
        &at_match("").replace(
            "    path /tmp/buf\n",
            "    @type memory\n    path /tmp/buf\n",
        ),
    );
    assert!(warnings(&text).contains("at-forwarder keeps every buffer on disk"));
}

#[test]
fn a_hash_after_a_bare_key_is_a_value_as_in_fluentd_and_says_so() {
    let loaded = load(&pipeline("  read_from_head #true", &at_match(""))).unwrap();
    assert!(tail(&loaded.config, 0).options.read_from_head);
    assert!(loaded
        .warnings
        .to_string()
        .contains("the value of 'read_from_head' is '#true', not a comment"));
}

#[test]
fn a_key_set_twice_warns_and_the_last_value_wins() {
    let loaded = load(&pipeline(
        "  read_lines_limit 5\n  read_lines_limit 9",
        &at_match(""),
    ))
    .unwrap();
    assert_eq!(tail(&loaded.config, 0).options.read_lines_limit, 9);
    assert!(loaded
        .warnings
        .to_string()
        .contains("'read_lines_limit' is set twice in <source>; this value wins over line 7"));
}

#[test]
fn rotate_section_defaults_and_errors() {
    let config = valid(&pipeline(
        "  <rotate>\n    path /var/log/at/**/*.log\n  </rotate>",
        &at_match(""),
    ));
    let r = tail(&config, 0).rotation.as_ref().expect("a rotation");
    assert_eq!(r.paths, ["/var/log/at/**/*.log"]);
    assert_eq!(
        (r.age, r.keep, r.size),
        (Duration::from_secs(86_400), 3, None)
    );
    let config = valid(&pipeline(
        "  <rotate>\n    path /var/log/at/*.log\n    age 1h\n    size 10m\n    keep 5\n  </rotate>",
        &at_match(""),
    ));
    let r = tail(&config, 0).rotation.as_ref().unwrap();
    assert_eq!(
        (r.age, r.keep, r.size),
        (Duration::from_secs(3600), 5, Some(10 << 20))
    );
    let e = errors(&pipeline(
        "  <rotate>\n    age 1d\n  </rotate>",
        &at_match(""),
    ));
    assert!(e.contains("'path'"), "{e}");
    let e = errors(&pipeline(
        "  <rotate>\n    path /var/log/at/*.log\n    age 0s\n    kept 3\n  </rotate>",
        &at_match(""),
    ));
    assert!(
        e.contains("'age' must be at least 1s") && e.contains("kept"),
        "{e}"
    );
}

#[test]
fn fluentd_buffer_settings_work_or_say_they_do_not() {
    let b = |extra: &str| {
        let config = valid(&pipeline("", &format!("  @type ibmactivitytracker\n  targetHost activity-tracker.ng.bluemix.net\n  service_region ng\n  <buffer>\n    path /tmp/buf\n    chunk_limit_size 1m\n    total_limit_size 100m\n{extra}  </buffer>\n")));
        buffer(&config, 0).clone()
    };
    // flush_mode immediate: chunks go out as records arrive.
    assert_eq!(
        b("    flush_mode immediate\n").options.flush_interval,
        Duration::ZERO
    );
    assert_eq!(
        b("    flush_mode interval\n    flush_interval 7s\n")
            .options
            .flush_interval,
        Duration::from_secs(7)
    );
    // queued_chunks_limit_size: that many chunks bound the buffer, when lower.
    assert_eq!(
        b("    queued_chunks_limit_size 4\n")
            .options
            .total_limit_size,
        4 << 20
    );
    assert_eq!(
        b("    queued_chunks_limit_size 1000\n")
            .options
            .total_limit_size,
        100 << 20
    );
    // chunk_full_threshold: the buffer seals at this share (tested in buffer_cases).
    assert!(
        (b("    chunk_full_threshold 0.5\n")
            .options
            .chunk_full_threshold
            - 0.5)
            .abs()
            < 1e-9
    );
    assert!((b("").options.chunk_full_threshold - 0.95).abs() < 1e-9);
    // Accepted without effect, and said so.
    let at = |extra: &str| {
        pipeline("", &format!("  @type ibmactivitytracker\n  targetHost activity-tracker.ng.bluemix.net\n  service_region ng\n  <buffer>\n    path /tmp/buf\n{extra}  </buffer>\n"))
    };
    for (extra, said) in [
        (
            "    compress gzip\n",
            "'compress gzip' in <buffer> has no effect",
        ),
        (
            "    timekey 1h\n",
            "'timekey' has no effect in at-forwarder",
        ),
        (
            "    timekey_wait 1m\n",
            "'timekey_wait' has no effect in at-forwarder",
        ),
        ("    flush_mode lazy\n", "'flush_mode lazy' has no effect"),
    ] {
        let w = warnings(&at(extra));
        assert!(w.contains(said), "{extra}: {w}");
    }
    assert!(warnings(&at("    compress text\n")).is_empty());
}

#[test]
fn fluentd_source_settings_work_or_say_they_do_not() {
    let w = warnings(&pipeline("  follow_inodes false", &at_match("")));
    assert!(w.contains("'follow_inodes false' has no effect"), "{w}");
    assert!(warnings(&pipeline("  follow_inodes true", &at_match(""))).is_empty());
    // time_format: a note, never a warning (the seed sets it).
    let loaded = load(&pipeline("  time_format %Y", &at_match(""))).unwrap();
    assert_eq!(
        (
            loaded.warnings.warning_count(),
            loaded.warnings.note_count()
        ),
        (0, 1)
    );
    // @log_level and a written ibm_plugin_log_level become plugin levels.
    let config = valid(&pipeline(
        "  @log_level debug",
        &at_match("  ibm_plugin_log_level error\n"),
    ));
    assert_eq!(
        config.plugin_log_levels(),
        [
            ("source.1".to_string(), config::LogLevel::Debug),
            ("match.1".to_string(), config::LogLevel::Error)
        ]
    );
}

#[test]
fn filters_load_in_order_and_refuse_what_they_cannot_do() {
    let config = valid(&format!(
        "<source>\n  @type tail\n  path /var/log/at/*.log\n  tag at.*\n  format json\n  pos_file /tmp/at.pos\n</source>\n<filter at.**>\n  @type grep\n  <regexp>\n    key $.payload.action\n    pattern /create/i\n  </regexp>\n</filter>\n<match at.**>\n{}\n</match>\n<filter at.**>\n  @type redact\n</filter>\n",
        at_match("")
    ));
    assert_eq!(config.filters.len(), 2);
    // Only the filter before the <match> applies, and check shows it on the route.
    assert_eq!(config.filters_for(None, "at.x"), [0]);
    let text = load(&format!(
        "<source>\n  @type tail\n  path /var/log/at/*.log\n  tag at.*\n  format json\n  pos_file /tmp/at.pos\n</source>\n<filter at.**>\n  @type redact\n  @id no-tokens\n</filter>\n<match at.**>\n{}\n</match>\n",
        at_match("")
    ))
    .unwrap()
    .describe();
    assert!(
        text.contains("filters                          no-tokens (redact)"),
        "{text}"
    );
    let bad = |filter: &str| {
        errors(&pipeline("", &at_match("")).replace("<match", &format!("{filter}\n<match")))
    };
    for (filter, said) in [
        ("<filter at.**>\n  @type record_transformer\n  enable_ruby true\n</filter>", "'enable_ruby true' is not supported"),
        ("<filter at.**>\n  @type record_transformer\n  renew_record true\n</filter>", "'renew_record true' is not supported"),
        ("<filter at.**>\n  @type record_transformer\n  <record>\n    x ${record[\"a\"].upcase}\n  </record>\n</filter>", "unknown placeholder"),
        ("<filter at.**>\n  @type grep\n  <regexp>\n    key a\n    pattern /(/\n  </regexp>\n</filter>", "not a regular expression"),
        ("<filter at.**>\n  @type redact\n  mode hash\n</filter>", "hash_key_path"),
        ("<filter at.**>\n  @type parser\n</filter>", "grep, record_transformer, redact"),
    ] {
        let e = bad(filter);
        assert!(e.contains(said), "{filter}\n{e}");
    }
}

#[test]
fn the_http_output_keeps_credentials_out_of_the_configuration() {
    let http = |body: &str| {
        pipeline("", &format!("  @type http\n  endpoint https://siem.example/in\n{body}  <buffer>\n    path /tmp/b\n  </buffer>\n"))
    };
    let config = valid(&http("  json_array true\n  <auth>\n    method basic\n    username u\n    password_path /run/secrets/p\n  </auth>\n"));
    let Output::Http(h) = &config.matches[0].output else {
        panic!()
    };
    assert_eq!(h.content_type, "application/json");
    for (body, said) in [
        (
            "  <auth>\n    method basic\n    username u\n    password hunter2\n  </auth>\n",
            "would keep a credential in the configuration",
        ),
        (
            "  headers {\"Authorization\":\"Bearer x\"}\n",
            "use <auth> with a file",
        ),
        (
            "  <auth>\n    method digest\n  </auth>\n",
            "unknown auth method 'digest'",
        ),
        ("  endpoint ftp://x/\n", "the scheme must be http or https"),
    ] {
        let e = errors(&http(body));
        assert!(e.contains(said), "{body}\n{e}");
        assert!(!e.contains("hunter2"), "a credential quoted: {e}");
    }
}

#[test]
fn the_cloud_logs_output_builds_its_url_and_keeps_keys_in_files() {
    let logs = |body: &str| {
        pipeline(
            "",
            &format!("  @type ibm_cloud_logs\n{body}  <buffer>\n    path /tmp/b\n  </buffer>\n"),
        )
    };
    let config = valid(&logs(
        "  instance_id 1a2b\n  region eu-de\n  api_key_path /run/secrets/apikey\n",
    ));
    // Chunk keys are reported as ignored, as for every network output.
    let keyed = logs("  instance_id 1a2b\n  region eu-de\n  api_key_path /k\n")
        .replace("<buffer>", "<buffer tag>");
    assert!(warnings(&keyed).contains("chunk keys are ignored"));
    let Output::CloudLogs(c) = &config.matches[0].output else {
        panic!()
    };
    assert_eq!(
        c.url.as_str(),
        "https://1a2b.ingress.eu-de.logs.cloud.ibm.com/logs/v1/singles"
    );
    assert_eq!(c.iam_endpoint.as_str(), "https://iam.cloud.ibm.com/");
    let config = valid(&logs("  endpoint http://127.0.0.1:9000/ignored\n  profile_id Profile-1\n  cr_token_path /var/run/secrets/token\n"));
    let Output::CloudLogs(c) = &config.matches[0].output else {
        panic!()
    };
    assert_eq!(c.url.as_str(), "http://127.0.0.1:9000/logs/v1/singles");
    for (body, said) in [
        (
            "  instance_id x\n  region r\n  api_key s3cret\n",
            "would keep a credential in the configuration",
        ),
        (
            "  instance_id x\n  api_key_path /k\n",
            "needs instance_id and region",
        ),
        (
            "  instance_id x\n  region r\n",
            "needs either api_key_path, or profile_id with cr_token_path",
        ),
    ] {
        let e = errors(&logs(body));
        assert!(e.contains(said), "{body}\n{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
}

#[test]
fn copy_stores_each_have_their_own_buffer() {
    let copy = |stores: &str| pipeline("", &format!("  @type copy\n  copy_mode deep\n{stores}"));
    let store = |path: &str| {
        format!("  <store>\n    @type http\n    endpoint http://127.0.0.1:1/in\n    ignore_error true\n    <buffer>\n      path {path}\n    </buffer>\n  </store>\n")
    };
    let loaded = load(&copy(&format!(
        "{}{}  <store>\n    @type stdout\n  </store>\n",
        store("/tmp/a"),
        store("/tmp/b")
    )))
    .unwrap();
    let Output::Copy(stores) = &loaded.config.matches[0].output else {
        panic!()
    };
    assert_eq!(stores.len(), 3);
    assert_eq!(loaded.warnings.warning_count(), 0, "{}", loaded.warnings);
    assert_eq!(
        loaded.warnings.note_count(),
        3,
        "copy_mode and two ignore_error"
    );
    let e = errors(&copy(&format!("{}{}", store("/tmp/a"), store("/tmp/a"))));
    assert!(e.contains("share a buffer path"), "{e}");
    let e = errors(&copy("  <store>\n    @type copy\n  </store>\n"));
    assert!(e.contains("cannot be another copy"), "{e}");
    let e = errors(&copy(""));
    assert!(e.contains("needs at least one <store>"), "{e}");
}
