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
