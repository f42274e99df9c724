//! The `flotilla demo` binary runs a 3-node cluster end to end and reports success.

use std::process::Command;

#[test]
fn demo_writes_reads_and_reports_ok() {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["demo", "--keys", "200", "--ranges", "4"])
        .output()
        .expect("run flotilla demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("read back 200/200 keys"), "{stdout}");
    assert!(
        stdout.contains("succeeded: true"),
        "the CAS succeeded: {stdout}"
    );
    assert!(
        stdout.contains("returned 200 pairs"),
        "the scan saw every key: {stdout}"
    );
    let table_rows = stdout
        .lines()
        .filter(|l| {
            l.trim_start().starts_with(|c: char| c.is_ascii_digit())
                && l.split_whitespace().count() == 6
        })
        .count();
    assert_eq!(
        table_rows, 5,
        "one status row per range (4 user ranges and the meta range), each with a leader: {stdout}"
    );
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}
