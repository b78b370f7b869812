//! The README's first command, shortened: the demo ends with a zero-loss summary.

use crate::support::{binary, run};

#[test]
fn the_demo_delivers_every_event_written() {
    let (code, stdout, stderr) = run(binary().args([
        "demo",
        "--duration",
        "2s",
        "--rate",
        "400",
        "--rotate-every",
        "100",
    ]));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    assert!(summary.contains(", 0 lost,"), "{summary}");
    let rotations: u64 = summary
        .split(", ")
        .find(|p| p.ends_with("file rotations."))
        .and_then(|p| p.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(
        rotations > 0,
        "files were rotated during the run: {summary}"
    );
    assert!(stdout.contains("Every event written was delivered."));
}

/// `--outputs at,cloud-logs`: both destinations, through `@type copy`, receive every
/// event; the receiver's IAM tokens live 3 s, so they are renewed during the run.
#[test]
fn the_demo_to_activity_tracker_and_cloud_logs_delivers_every_event_to_both() {
    let (code, stdout, stderr) = run(binary().args([
        "demo",
        "--duration",
        "4s",
        "--rate",
        "300",
        "--outputs",
        "at,cloud-logs",
    ]));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let summary = stdout.lines().find(|l| l.starts_with("Summary:")).unwrap();
    assert!(summary.contains(", 0 lost,"), "{summary}");
    let logs = stdout
        .lines()
        .find(|l| l.starts_with("IBM Cloud Logs:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(logs.contains(", 0 lost;"), "{logs}");
    let tokens: u64 = logs
        .rsplit("; ")
        .next()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(tokens >= 2, "tokens renewed during the run: {logs}");
    let (code, _, err) = run(binary().args(["demo", "--outputs", "at,splunk"]));
    assert_eq!(code, 2, "{err}");
}
