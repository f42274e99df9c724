//! The `flotilla` client commands as scripts use them: the real binary against a 1-node
//! cluster, checking formats (escaped, hex, JSON), values from stdin and files, exit codes,
//! compare-and-swap and batches, scans longer than a page, a closed stdout, and the
//! error text for mistakes people make (a dead endpoint, bad hex, bad escapes).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{
    client_for, free_port, log_path, poll_until, serial, ClusterOpts, NodeProc, TestCluster, BIN,
    READY_TIMEOUT,
};
use flotilla_server::display::{hex, parse_escaped};
use serde_json::Value;

/// What one run of the binary did.
struct Run {
    code: i32,
    out: Vec<u8>,
    err: String,
}

impl Run {
    fn text(&self) -> String {
        String::from_utf8(self.out.clone()).expect("the output is UTF-8 text")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.out)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", self.text()))
    }

    /// The JSON document of a successful run, or its stderr (to poll on).
    fn json_if_ok(self) -> Result<Value, String> {
        if self.code == 0 {
            Ok(self.json())
        } else {
            Err(self.err)
        }
    }

    fn ok(self, what: &str) -> Run {
        assert_eq!(self.code, 0, "{what} failed: {}", self.err);
        self
    }
}

/// Runs `flotilla ARGS --endpoints EPS` with `stdin` as its input, to completion.
fn flotilla(eps: &str, args: &[&str], stdin: &[u8]) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--endpoints", eps])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flotilla");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for flotilla");
    feeder.join().expect("stdin feeder");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    Run {
        code: out.status.code().unwrap_or(-1),
        out: out.stdout,
        err,
    }
}

/// The pairs of `kv scan` text output: one `key<TAB>value` line each, both escaped.
fn scan_pairs(text: &str) -> Vec<(String, Vec<u8>)> {
    text.lines()
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            assert_eq!(fields.len(), 2, "one tab per scan line: {l:?}");
            (
                fields[0].to_string(),
                parse_escaped("scan value", fields[1]).expect("an escaped value"),
            )
        })
        .collect()
}

async fn one_node() -> (TestCluster, String) {
    let cluster = TestCluster::start(1, ClusterOpts::default()).await;
    let eps = cluster.endpoints().join(",");
    (cluster, eps)
}

const AWKWARD: &[u8] = b"two\nlines, a tab\t, a backslash \\, NUL \x00 and \xff\xfe";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_round_trip_through_hex_stdin_files_and_scan() {
    let _serial = serial().await;
    let (_cluster, eps) = one_node().await;
    let eps = eps.as_str();
    let bin_key = b"bin\x00\x01\\key\n";

    flotilla(
        eps,
        &["kv", "put", "--hex", &hex(bin_key), &hex(AWKWARD)],
        b"",
    )
    .ok("put --hex");
    let got = flotilla(eps, &["kv", "get", "--hex", &hex(bin_key)], b"").ok("get --hex");
    assert_eq!(
        got.text(),
        format!("{}\n", hex(AWKWARD)),
        "get --hex prints hex and a newline"
    );
    let got = flotilla(eps, &["kv", "get", "bin\\x00\\x01\\x5ckey\\x0a"], b"").ok("get escaped");
    assert_eq!(
        got.out,
        [AWKWARD, b"\n"].concat(),
        "get prints the raw bytes and a newline"
    );
    let got = flotilla(eps, &["kv", "get", "-n", "bin\\x00\\x01\\x5ckey\\x0a"], b"").ok("get -n");
    assert_eq!(got.out, AWKWARD, "get -n prints exactly the stored bytes");

    flotilla(eps, &["kv", "put", "from stdin é", "-"], AWKWARD).ok("put -");
    let got = flotilla(eps, &["kv", "get", "-n", "from stdin é"], b"").ok("get of the stdin value");
    assert_eq!(
        got.out, AWKWARD,
        "`-` reads the value's raw bytes from stdin"
    );
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), AWKWARD).expect("write the value file");
    let path = file.path().to_str().expect("a UTF-8 path");
    flotilla(eps, &["kv", "put", "from-file", "--value-file", path], b"").ok("put --value-file");
    let got = flotilla(eps, &["kv", "get", "-n", "from-file"], b"").ok("get of the file value");
    assert_eq!(got.out, AWKWARD, "--value-file reads the value's raw bytes");

    let scan = flotilla(eps, &["kv", "scan"], b"").ok("scan");
    let pairs = scan_pairs(&scan.text());
    assert_eq!(
        pairs.len(),
        3,
        "one line per pair although values hold newlines: {}",
        scan.text()
    );
    for (key, value) in &pairs {
        assert_eq!(value.as_slice(), AWKWARD, "scan's escaped value of {key}");
        let got = flotilla(eps, &["kv", "get", "-n", key], b"").ok("get of a scanned key");
        assert_eq!(
            &got.out, value,
            "the key {key} as scan printed it reads back"
        );
    }
    let scan = flotilla(eps, &["kv", "scan", "--hex"], b"").ok("scan --hex");
    for line in scan.text().lines() {
        let (key, value) = line.split_once('\t').expect("key<TAB>value");
        assert_eq!(value, hex(AWKWARD), "scan --hex prints hex values");
        let got = flotilla(eps, &["kv", "get", "--hex", key], b"").ok("get --hex of a scanned key");
        assert_eq!(got.text().trim_end(), value);
    }

    flotilla(eps, &["kv", "delete", "from-file"], b"").ok("delete");
    let gone = flotilla(eps, &["kv", "get", "from-file"], b"");
    assert_eq!(
        (gone.code, gone.out.len()),
        (1, 0),
        "an absent key exits 1 and prints nothing: {}",
        gone.err
    );
    assert!(
        gone.err.contains("key \"from-file\" not found"),
        "{}",
        gone.err
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_and_batch_report_their_outcome_in_the_exit_code() {
    let _serial = serial().await;
    let (_cluster, eps) = one_node().await;
    let eps = eps.as_str();
    let get = |key: &str| flotilla(eps, &["kv", "get", "-n", key], b"");

    flotilla(eps, &["kv", "cas", "k", "v1", "--absent"], b"").ok("cas --absent on an absent key");
    let again = flotilla(eps, &["kv", "cas", "k", "v9", "--absent"], b"");
    assert_eq!(
        again.code, 1,
        "cas --absent on a present key is not applied: {}",
        again.err
    );
    assert!(
        again.err.contains("not applied: key \"k\" holds \"v1\""),
        "{}",
        again.err
    );
    let wrong = flotilla(eps, &["kv", "cas", "k", "v2", "--expected", "v0"], b"");
    assert_eq!(
        wrong.code, 1,
        "a wrong --expected is not applied: {}",
        wrong.err
    );
    flotilla(eps, &["kv", "cas", "k", "v2", "--expected", "v1"], b"").ok("cas --expected");
    assert_eq!(get("k").out, b"v2");
    flotilla(eps, &["kv", "cas", "k", "-", "--expected", "v2"], AWKWARD)
        .ok("cas with the new value from stdin");
    assert_eq!(get("k").out, AWKWARD);
    let expected = hex(AWKWARD);
    flotilla(
        eps,
        &[
            "kv",
            "cas",
            "--hex",
            "6b",
            "--delete",
            "--expected",
            &expected,
        ],
        b"",
    )
    .ok("cas --delete --hex");
    assert_eq!(get("k").code, 1, "cas --delete removed the key");

    flotilla(
        eps,
        &[
            "kv", "batch", "put", "a", "1", "put", "b", "2\\x0a", "delete", "a",
        ],
        b"",
    )
    .ok("batch");
    assert_eq!(
        (get("a").code, get("b").out),
        (1, b"2\n".to_vec()),
        "the batch's writes applied in order"
    );
    let lines = b"put\tc\t3\\x09\r\n\ndelete\tb\nput\td\t\n";
    flotilla(eps, &["kv", "batch", "--file", "-"], lines).ok("batch --file -");
    assert_eq!(
        (get("b").code, get("c").out, get("d").out),
        (1, b"3\t".to_vec(), Vec::new())
    );

    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), b"put\tz\t1\nput z 2\n").expect("write the batch file");
    let path = file.path().to_str().expect("a UTF-8 path");
    let bad = flotilla(eps, &["kv", "batch", "-f", path], b"");
    assert_eq!(bad.code, 2, "a bad line is an error");
    assert!(
        bad.err
            .contains(&format!("{path} line 2: \"put z 2\" is not an op")),
        "{}",
        bad.err
    );
    assert_eq!(
        get("z").code,
        1,
        "nothing of a batch with a bad line is written"
    );
    let empty = flotilla(eps, &["kv", "batch"], b"");
    assert!(
        empty.code == 2 && empty.err.contains("no writes given"),
        "{}",
        empty.err
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_parses_for_every_command() {
    let _serial = serial().await;
    let (_cluster, eps) = one_node().await;
    let eps = eps.as_str();
    let json = |args: &[&str]| flotilla(eps, &[args, &["-o", "json"]].concat(), b"");

    assert_eq!(
        json(&["kv", "put", "j\\x01", "-"]).ok("put").json()["ok"],
        true
    );
    let put = flotilla(eps, &["kv", "put", "j\\x01", "-", "-o", "json"], AWKWARD).ok("put -o json");
    assert_eq!(put.json()["key"], "j\\x01");
    let got = json(&["kv", "get", "j\\x01"]).ok("get").json();
    assert_eq!(
        (got["found"].clone(), got["key"].clone()),
        (Value::Bool(true), Value::from("j\\x01"))
    );
    let value = got["value"].as_str().expect("the value as a string");
    assert_eq!(
        parse_escaped("value", value).unwrap(),
        AWKWARD,
        "the JSON value is escaped"
    );
    let absent = json(&["kv", "get", "nope"]);
    assert_eq!(absent.code, 1, "absent is still exit code 1 in JSON");
    assert_eq!(
        (
            absent.json()["found"].clone(),
            absent.json()["value"].clone()
        ),
        (Value::Bool(false), Value::Null)
    );
    let hexed = json(&["kv", "get", "--hex", "6a01"]).ok("get --hex").json();
    assert_eq!(hexed["value"], hex(AWKWARD));

    json(&["kv", "put", "j2", "two"]).ok("put");
    let scan = json(&["kv", "scan"]).ok("scan");
    let rows: Vec<Value> = scan
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let keys: Vec<&str> = rows
        .iter()
        .map(|r| r["key"].as_str().expect("key"))
        .collect();
    assert_eq!(
        keys,
        ["j\\x01", "j2"],
        "one JSON object per pair, in key order (\\x01 < 2)"
    );
    assert_eq!(rows[1]["value"], "two");

    let cas = json(&["kv", "cas", "j2", "three", "--expected", "zwei"]);
    assert_eq!(
        (
            cas.code,
            cas.json()["succeeded"].clone(),
            cas.json()["previous"].clone()
        ),
        (1, Value::Bool(false), Value::from("two"))
    );
    let batch = json(&["kv", "batch", "put", "j3", "3", "delete", "j2"])
        .ok("batch")
        .json();
    assert_eq!(batch["writes"], 2);
    assert_eq!(
        json(&["kv", "delete", "j3"]).ok("delete").json()["ok"],
        true
    );

    let status = json(&["status"]).ok("status").json();
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{status}");
    assert_eq!(
        (nodes[0]["live"].clone(), nodes[0]["error"].clone()),
        (Value::Bool(true), Value::Null)
    );

    let before = json(&["ranges"]).ok("ranges").json()["ranges"]
        .as_array()
        .expect("ranges")
        .len();
    let split = json(&["split", "m"]).ok("split").json();
    assert_eq!(
        (
            split["left"]["end"].clone(),
            split["right"]["start"].clone()
        ),
        (Value::from("m"), Value::from("m")),
        "{split}"
    );
    let ranges = json(&["ranges"]).ok("ranges").json();
    let ranges = ranges["ranges"].as_array().expect("ranges");
    assert_eq!(
        ranges.len(),
        before + 1,
        "one range more after the split: {ranges:?}"
    );
    let meta: Vec<bool> = ranges
        .iter()
        .map(|r| r["meta"].as_bool().expect("meta"))
        .collect();
    assert_eq!(meta.iter().filter(|m| **m).count(), 1, "{ranges:?}");
    let right = ranges
        .iter()
        .find(|r| r["range_id"] == split["right"]["range_id"])
        .expect("the right half");
    assert_eq!(
        (right["start"].clone(), right["end"].clone()),
        (Value::from("m"), split["right"]["end"].clone())
    );
    assert_eq!(
        ranges.iter().filter(|r| r["end"].is_null()).count(),
        1,
        "one range ends unbounded: {ranges:?}"
    );
    // `status` counts (no row per replica, `Store::summary`) agree with the rows of `ranges`:
    // the one node holds and leads every range, with its lease.
    let want = ranges.len() as u64;
    let counts = poll_until("status counts every range", READY_TIMEOUT, || {
        let status = json(&["status"]).ok("status").json();
        let n = &status["nodes"][0];
        let counts = [&n["replicas"], &n["leaders"], &n["leases"]].map(|v| v.as_u64().unwrap_or(0));
        let answer = if counts == [want; 3] {
            Ok(counts)
        } else {
            Err(format!("{status}"))
        };
        async move { answer }
    })
    .await;
    assert_eq!(counts, [want; 3]);
    for r in ranges {
        // Each range names the node that should lead it, one of its voters.
        let nodes: Vec<&Value> = r["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|x| &x["node_id"])
            .collect();
        assert!(
            nodes.contains(&&r["preferred_leader"]),
            "preferred leader outside the replicas: {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_prints_the_new_cluster_as_json() {
    let _serial = serial().await;
    let root = tempfile::tempdir().expect("temp dir");
    let held: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let (grpc, http) = (
        held[0].local_addr().unwrap().port(),
        held[1].local_addr().unwrap().port(),
    );
    drop(held);
    let listen = format!("127.0.0.1:{grpc}");
    let (dir, log) = (root.path().join("node1"), log_path(root.path(), "node1"));
    let mut node = NodeProc::on_ports(
        1,
        (grpc, http),
        dir,
        log,
        &["--join".to_string(), listen.clone()],
    );
    node.spawn();
    // Too many initial ranges: refused, naming the limit, and the node stays waiting.
    let (code, err) = poll_until(
        "a refused init through the waiting node",
        READY_TIMEOUT,
        || {
            let run = flotilla(&listen, &["init", "--initial-ranges", "2000000"], b"");
            async move {
                if run.err.contains("out of range") {
                    Ok((run.code, run.err))
                } else {
                    Err(run.err)
                }
            }
        },
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--initial-ranges 2000000 is out of range: give 1..=1048576"),
        "{err}"
    );
    let init = poll_until("init through the waiting node", READY_TIMEOUT, || {
        let run = flotilla(&listen, &["init", "-o", "json"], b"");
        async move { run.json_if_ok() }
    })
    .await;
    assert_eq!(
        init["nodes"],
        serde_json::json!([{"node_id": 1, "address": listen}]),
        "{init}"
    );
    let status = poll_until("status after init", READY_TIMEOUT, || {
        let run = flotilla(&listen, &["status", "-o", "json"], b"");
        async move { run.json_if_ok() }
    })
    .await;
    assert!(
        init["cluster_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{init}"
    );
    assert_eq!(
        init["cluster_id"], status["cluster_id"],
        "init and status name the same cluster"
    );
    let again = flotilla(&listen, &["init"], b"");
    assert_eq!(again.code, 2, "a second init is refused: {}", again.err);
    assert!(
        again.err.starts_with("error: AlreadyExists: "),
        "the server's code and message: {}",
        again.err
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_read_past_one_page_and_stop_quietly_at_a_closed_pipe() {
    let _serial = serial().await;
    let (cluster, eps) = one_node().await;
    let eps = eps.as_str();
    let client = client_for(&cluster.endpoints());
    let value = |i: usize| -> Vec<u8> {
        (0..200 << 10)
            .map(|j| b'a' + ((i + j) % 26) as u8)
            .collect()
    };
    for i in 0..30 {
        client
            .put(format!("big/{i:02}").as_bytes(), &value(i))
            .await
            .expect("put a 200 KiB value");
    }
    let (first, resume) = client.scan_page(b"", b"", 0, 0).await.expect("one page");
    assert!(
        resume.is_some() && first.len() < 30,
        "6 MB span more than one page ({} pairs)",
        first.len()
    );

    let check_all = |args: &[&str]| {
        let scan = flotilla(eps, args, b"").ok("scan");
        let pairs = scan_pairs(&scan.text());
        let want: Vec<String> = (0..30).map(|i| format!("big/{i:02}")).collect();
        assert_eq!(
            pairs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            want,
            "{args:?} prints every key"
        );
        assert!(
            pairs.iter().enumerate().all(|(i, (_, v))| *v == value(i)),
            "{args:?} prints every value"
        );
    };
    check_all(&["kv", "scan", "--limit", "0"]);
    check_all(&["kv", "scan", "--limit", "0", "--page-bytes", "300000"]);
    check_all(&["kv", "scan"]);
    let some = flotilla(
        eps,
        &["kv", "scan", "--limit", "7", "--page-bytes", "300000"],
        b"",
    )
    .ok("scan --limit 7");
    assert_eq!(
        scan_pairs(&some.text()).len(),
        7,
        "--limit caps the pairs across pages"
    );
    let json = flotilla(
        eps,
        &[
            "kv",
            "scan",
            "--limit",
            "0",
            "-o",
            "json",
            "--page-bytes",
            "1",
        ],
        b"",
    )
    .ok("scan json");
    assert_eq!(
        json.text()
            .lines()
            .filter(|l| serde_json::from_str::<Value>(l).is_ok())
            .count(),
        30
    );

    // `kv scan | head -1`: the reader goes away after one line of a 6 MB output.
    let mut child = Command::new(BIN)
        .args(["kv", "scan", "--limit", "0", "--endpoints", eps])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn scan");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read a line");
    assert!(
        line.starts_with("big/00\t"),
        "{}",
        &line[..line.len().min(40)]
    );
    let out = child.wait_with_output().expect("wait for the scan");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a closed pipe ends the scan with exit code 0: {err}"
    );
    assert!(
        !err.contains("panicked") && err.is_empty(),
        "quietly: {err}"
    );

    // `status | head -1` where the reader is gone before the first write.
    for args in [
        &["status"][..],
        &["kv", "get", "big/01"],
        &["ranges", "-o", "json"],
    ] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .args(["--endpoints", eps])
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run with a closed stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?} into a closed pipe exits 0: {err}"
        );
        assert!(
            !err.contains("panicked") && err.is_empty(),
            "{args:?} quietly: {err}"
        );
    }
}

/// Mistakes people make, each with an error that says what to fix. No cluster needed.
#[test]
fn errors_name_what_was_wrong() {
    let dead = format!("127.0.0.1:{}", free_port());
    let run = flotilla(&dead, &["kv", "get", "k"], b"");
    assert_eq!(run.code, 2, "{}", run.err);
    let want = format!(
        "error: cannot reach {dead}: connection refused — is a node running there? (--endpoints)"
    );
    assert_eq!(run.err.trim_end(), want);
    let two = format!("{dead},127.0.0.1:{}", free_port());
    let run = flotilla(&two, &["status"], b"");
    assert!(
        run.code == 2
            && run
                .err
                .contains(&format!("cannot reach any of {}", two.replace(',', ", "))),
        "{}",
        run.err
    );

    let cases: [(&[&str], &str); 6] = [
        (
            &["kv", "get", "--hex", "6g"],
            "bad --hex KEY \"6g\": 'g' at byte 1 is not a hex digit",
        ),
        (
            &["kv", "put", "6b", "--hex", "abc"],
            "bad --hex VALUE \"abc\": an odd number of hex digits (3)",
        ),
        (
            &["kv", "get", "a\\q"],
            "bad KEY \"a\\q\": \"\\q\" at byte 1 is not an escape",
        ),
        (
            &["kv", "cas", "k", "v", "--expected", "\\x"],
            "bad --expected \"\\x\"",
        ),
        (
            &["kv", "put", "k", "--value-file", "/nonexistent/v"],
            "cannot read --value-file /nonexistent/v",
        ),
        (&["split", "--hex", "zz"], "bad --hex KEY \"zz\""),
    ];
    for (args, want) in cases {
        let run = flotilla(&dead, args, b"");
        assert_eq!(run.code, 2, "{args:?}: {}", run.err);
        assert!(
            run.err.starts_with(&format!("error: {want}")),
            "{args:?}: {}",
            run.err
        );
    }
    let run = flotilla("127.0.0.1", &["status"], b"");
    assert_eq!(run.code, 2);
    assert!(
        run.err.contains("\"127.0.0.1\" is not HOST:PORT (no port)"),
        "names the value: {}",
        run.err
    );
}
