//! `flotilla-load --backend etcd` against a real etcd (one member, Debian's etcd-server,
//! which `scripts/setup.sh` installs): the baseline of `scripts/bench-vs-etcd.sh` must
//! send what it says, so a put is read back and no operation fails.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// A port free right now on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Stops etcd when the test ends, however it ends.
struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_etcd(dir: &std::path::Path) -> (Etcd, String) {
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "solo", "--data-dir"])
        .arg(dir)
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args([
            "--initial-cluster",
            &format!("solo={peer_url}"),
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start etcd ({e}); scripts/setup.sh installs it (Debian etcd-server)")
        });
    (Etcd(child), format!("127.0.0.1:{client}"))
}

/// The number after `"name":` in the part of `json` after `within` (the load report is
/// one flat line; this avoids a JSON dependency for four fields).
fn field(json: &str, within: &str, name: &str) -> u64 {
    let from = json
        .find(within)
        .unwrap_or_else(|| panic!("no {within} in {json}"));
    let rest = &json[from..];
    let at = rest
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("no {name} after {within} in {json}"));
    let digits: String = rest[at + name.len() + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a count in {json}"))
}

#[test]
fn the_etcd_backend_writes_what_it_reads_back() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (_etcd, endpoint) = start_etcd(dir.path());
    // The load generator waits (polling, up to 10 s) until the endpoint answers a get.
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-load"))
        .args([
            "--backend",
            "etcd",
            "--endpoints",
            &endpoint,
            "--clients",
            "4",
            "--keys",
            "50",
        ])
        .args([
            "--key-size",
            "8",
            "--ascii-keys",
            "--read-ratio",
            "0.5",
            "--preload",
            "--ops",
            "400",
            "--json",
        ])
        .output()
        .expect("flotilla-load runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "flotilla-load failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"backend\":\"etcd\""), "{stdout}");
    assert_eq!(field(&stdout, "\"duration_secs\"", "errors"), 0, "{stdout}");
    assert_eq!(field(&stdout, "\"duration_secs\"", "ops"), 400, "{stdout}");
    let (reads, writes) = (
        field(&stdout, "\"reads\"", "ops"),
        field(&stdout, "\"writes\"", "ops"),
    );
    assert!(
        reads > 0 && writes > 0 && reads + writes == 400,
        "reads {reads}, writes {writes}: {stdout}"
    );
    // Every key was preloaded, so every linearizable get finds a value.
    assert_eq!(field(&stdout, "\"reads\"", "misses"), 0, "{stdout}");
}
