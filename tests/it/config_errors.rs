//! Broken configurations: each gives a clear error naming file, line and column, with the
//! offending line and a caret; validation reports every problem at once.

use crate::support::{at_match, errors, load, pipeline};

/// (what is broken, configuration, expected message, expected `file:line:col`)
fn cases() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let at = |extra: &str| pipeline("", &at_match(extra));
    let buffer = |params: &str| {
        pipeline("", &format!("  @type ibmactivitytracker\n  targetHost h.example\n  service_region ng\n  <buffer>\n    path /tmp/b\n{params}\n  </buffer>"))
    };
    vec![
        ("unclosed section", "<source>\n  @type tail\n".into(), "expected end tag </source> but reached the end of the file", "test.conf:1:2"),
        ("unmatched end tag", "<source>\n  @type tail\n</match>\n".into(), "unmatched end tag </match>: the open section is <source> (line 1)", "test.conf:3:1"),
        ("stray end tag", "</source>\n".into(), "unmatched end tag </source>: no section is open here", "test.conf:1:1"),
        ("tag not closed", "<match at.**\n</match>\n".into(), "expected '>' to close the <match> tag", "test.conf:1:13"),
        ("text after a tag", "<match at.**> x\n</match>\n".into(), "expected end of line after the <match> tag, found 'x'", "test.conf:1:15"),
        ("bad size", buffer("    chunk_limit_size 10x"), "invalid value for 'chunk_limit_size' in <buffer>: '10x' is not a size", "test.conf:15:22"),
        ("bad duration", pipeline("  rotate_wait 12 hours", &at_match("")), "invalid value for 'rotate_wait' in <source>: '12 hours' is not a duration", "test.conf:7:15"),
        ("bad boolean", pipeline("  read_from_head maybe", &at_match("")), "'maybe' is not a boolean", "test.conf:7:18"),
        ("bad integer", pipeline("  read_lines_limit lots", &at_match("")), "invalid value for 'read_lines_limit' in <source>: 'lots' is not a whole number", "test.conf:7:20"),
        ("bad enum", buffer("    overflow_action drop"), "'drop' is not one of block, throw_exception, drop_oldest_chunk", "test.conf:15:21"),
        ("unknown output @type", "<match **>\n  @type elasticsearch\n</match>\n".into(), "unknown output type 'elasticsearch'", "test.conf:2:9"),
        ("unknown input @type", "<source>\n  @type tial\n</source>\n".into(), "unknown input type 'tial'", "test.conf:2:9"),
        ("missing @type", "<match **>\n</match>\n".into(), "missing '@type' parameter on <match> directive (line 1)", "test.conf:1:2"),
        ("missing path", "<source>\n  @type tail\n  tag t\n  format json\n</source>\n".into(), "missing required parameter 'path' in <source> (line 1)", "test.conf:1:2"),
        ("missing targetHost", pipeline("", "  @type ibmactivitytracker\n  service_region ng\n  <buffer>\n    path /b\n  </buffer>"), "missing required parameter 'targetHost' in <match at.**>", "test.conf:9:2"),
        ("bad escape", "<source>\n  @type tail\n  tag \"a\\qb\"\n</source>\n".into(), "unknown escape '\\q' in a double-quoted string", "test.conf:3:9"),
        ("unsupported embedded code", "<source>\n  tag \"#{File.read('/etc/passwd')}\"\n</source>\n".into(), "unsupported embedded code '#{File.read('/etc/passwd')}'", "test.conf:2:8"),
        ("unterminated string", "<source>\n  tag \"abc\n</source>\n".into(), "unexpected end of file in a double-quoted string", "test.conf:2:7"),
        ("incomplete JSON", "<source>\n  path [\"/a\",\n</source>\n".into(), "incomplete JSON array", "test.conf:2:8"),
        ("reserved @ prefix", "<source>\n  @path /x\n</source>\n".into(), "'@' is the reserved prefix of system parameters: @path", "test.conf:2:3"),
        ("unknown directive", "<sourse>\n</sourse>\n".into(), "unknown directive <sourse>", "test.conf:1:2"),
        ("undeclared label", pipeline("  @label @AT", &at_match("")), "@label @AT is not declared", "test.conf:7:10"),
        ("worker id out of range", format!("<worker 1>\n{}</worker>\n", pipeline("", &at_match(""))), "worker id 1 is not allowed: <system> workers is 1", "test.conf:1:9"),
        ("system inside worker", "<worker 0>\n  <system>\n  </system>\n</worker>\n".into(), "<worker> section cannot have <system>", "test.conf:2:4"),
        ("bad worker range", "<worker 3-1>\n</worker>\n".into(), "invalid worker range '3-1'", "test.conf:1:9"),
        ("chunk larger than total", buffer("    chunk_limit_size 2g\n    total_limit_size 1g"), "'chunk_limit_size' (2147483648 bytes) is larger than 'total_limit_size' (1073741824 bytes)", "test.conf:15:22"),
        ("time key without timekey", pipeline("", "  @type stdout\n  <buffer time>\n    path /b\n  </buffer>"), "the chunk key 'time' needs 'timekey'", "test.conf:11:11"),
        ("bad chunk key", pipeline("", "  @type stdout\n  <buffer a-b>\n    path /b\n  </buffer>"), "invalid chunk key 'a-b'", "test.conf:11:11"),
        ("buffer without path", pipeline("", "  @type ibmactivitytracker\n  targetHost h.example\n  service_region ng"), "the buffer needs a directory", "test.conf:9:2"),
        ("targetHost with a path", at("").replace("targetHost activity-tracker.ng.bluemix.net", "targetHost https://h.example/v3/events"), "set the path with 'endpoint_path'", "test.conf:11:14"),
        ("two stars in a tail tag", pipeline("", &at_match("")).replace("tag at.*", "tag at.*.*"), "'at.*.*' has more than one '*'", "test.conf:4:7"),
        ("unclosed regex pattern", "<match /at\\..*>\n  @type stdout\n</match>\n".into(), "a regular expression must end with '/'", "test.conf:1:8"),
        ("duplicate @id", format!("{}<match x>\n  @id out\n  @type stdout\n</match>\n", pipeline("", "  @id out\n  @type stdout")), "duplicate @id 'out'", ""),
        ("include of a missing file", "@include missing/nothing-here.conf\n".into(), "cannot read included file", "test.conf:1:10"),
        ("second buffer section", pipeline("", "  @type stdout\n  <buffer>\n    path /a\n  </buffer>\n  <buffer>\n    path /b\n  </buffer>"), "only one <buffer> section is allowed in <match at.**>", "test.conf:14:4"),
    ]
}

#[test]
fn each_broken_config_names_the_problem_and_its_place() {
    let mut failures = Vec::new();
    for (what, text, message, place) in cases() {
        let report = errors(&text);
        let located = place.is_empty() || report.contains(&format!("--> {place}\n"));
        if !report.contains(message) || !located || !report.contains("error(s)") {
            failures.push(format!(
                "{what}: expected {message:?} at {place:?} in:\n{report}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n----\n"));
}

#[test]
fn the_offending_line_is_quoted_with_a_caret_under_the_value() {
    let report = errors(&pipeline("  rotate_wait 12 hours", &at_match("")));
    let expected =
        " --> test.conf:7:15\n  |\n7 |   rotate_wait 12 hours\n  |               ^^^^^^^^\n";
    assert!(report.contains(expected), "{report}");
}

#[test]
fn every_validation_error_is_reported_in_one_run() {
    let text = pipeline(
        "  rotate_wait soon\n  read_lines_limit 0",
        "  @type ibmactivitytracker\n  targetHost h.example\n  compress brotli\n  <buffer>\n    path /b\n    chunk_limit_size big\n  </buffer>",
    );
    let report = errors(&text);
    for message in [
        "'soon' is not a duration",
        "0 is out of range",
        "missing required parameter 'service_region'",
        "'brotli' is not one of gzip, none",
        "'big' is not a size",
    ] {
        assert!(
            report.contains(message),
            "expected {message:?} in:\n{report}"
        );
    }
    assert!(report.contains("5 error(s)"), "{report}");
}

#[test]
fn a_secret_looking_parameter_is_never_quoted() {
    let err = load(&pipeline(
        "",
        &at_match("  auth_token s3cr3t-T0KEN\n  compress brotli"),
    ))
    .unwrap_err()
    .to_string();
    assert!(!err.contains("s3cr3t-T0KEN"), "{err}");
}
