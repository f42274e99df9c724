//! The README's secure 3-node quick start, pasted as is into a shell (issue 14: `init` used to
//! run before the nodes listened and fail). Only the line that says where the binary is
//! changes: the test's own build.

mod common;

use std::process::Command;

use common::*;

/// The shell block of README.md that follows the line containing `marker`.
fn readme_block(marker: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let after = &readme[readme.find(marker).expect("marker in README")..];
    let start = after.find("```sh\n").expect("a shell block") + "```sh\n".len();
    after[start..start + after[start..].find("```").unwrap()].to_string()
}

#[tokio::test]
async fn the_readme_three_node_block_works_when_pasted() {
    let _serial = serial().await;
    let block = readme_block("A secure 3-node cluster on one machine");
    let (binary_line, rest) = block.split_once('\n').unwrap();
    assert!(
        binary_line.starts_with("F=${CARGO_TARGET_DIR:-target}/release/flotilla"),
        "{binary_line}"
    );
    let dir = tempfile::tempdir().unwrap();
    // Every node the block starts is stopped when the shell ends, whatever happened.
    let script = format!("set -e\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\nF={BIN}\n{rest}");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the block failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("initialized cluster"), "{stdout}");
    assert!(
        stdout.matches(" yes ").count() >= 3
            || stdout.lines().filter(|l| l.contains("yes")).count() >= 3,
        "three live nodes:\n{stdout}"
    );
    for d in ["n1", "n2", "n3"] {
        assert!(
            dir.path().join(d).join("db").exists(),
            "{d} holds no database"
        );
    }
}
