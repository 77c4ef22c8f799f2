//! Rows of the Reliability table (docs/internals/reliability.md), written by the tests that prove them and collected by
//! `scripts/reliability-table`. A row is written only after its test's assertions held, so a
//! table made from a passing run says what was checked, not what was hoped.

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

/// Where rows go: `ECS_AMI_REPORT_DIR`, or `target/tmp/reliability`.
pub fn dir() -> PathBuf {
    std::env::var_os("ECS_AMI_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reliability"))
}

/// One scenario: `id` orders the table (`fault-03`), `outcome` says what CloudFormation got and
/// what the test checked, `leftovers` counts what AWS still held of the build afterwards
/// (`None` where the scenario creates nothing to audit).
pub fn record(id: &str, section: &str, scenario: &str, outcome: &str, leftovers: Option<usize>) {
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    let row = json!({
        "id": id, "section": section, "scenario": scenario, "outcome": outcome,
        "leftovers": leftovers,
    });
    // One write of one line to a file opened for appending: rows from tests running in
    // parallel do not interleave.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("rows.jsonl"))
        .unwrap();
    file.write_all(format!("{row}\n").as_bytes()).unwrap();
}

/// The row of a scenario audited on the local AWS, once the audit found nothing of its builds
/// left (`left`: what `Audit::leftovers` answered).
pub fn record_clean(id: &str, section: &str, scenario: &str, outcome: &str, left: &[String]) {
    assert!(left.is_empty(), "{id}: left behind: {left:?}");
    record(id, section, scenario, outcome, Some(0));
}
