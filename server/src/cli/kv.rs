//! `flotilla kv ...`: single-key commands, scans page by page, compare-and-swap and
//! batches, with their argument and file formats.

use std::io::{self, Read};
use std::path::PathBuf;

use flotilla_raftstore::metapb::WriteOp;
use serde_json::json;

use super::{note, Failure, KvCmd, Out, Outcome, Remote, EXIT_NO, EXIT_OK};
use crate::display::{self, Encoding};

/// `flotilla kv ...`.
pub(super) async fn kv(r: &Remote, out: &mut Out, enc: Encoding, cmd: KvCmd) -> Outcome {
    match cmd {
        KvCmd::Put {
            key,
            value,
            value_file,
        } => {
            let key = enc.parse("KEY", &key)?;
            let value = read_value(enc, value, value_file)?;
            r.check(r.client.put(&key, &value).await)?;
            out.show(String::new, || json!({"ok": true, "key": enc.show(&key)}))?;
            Ok(EXIT_OK)
        }
        KvCmd::Delete { key } => {
            let key = enc.parse("KEY", &key)?;
            r.check(r.client.delete(&key).await)?;
            out.show(String::new, || json!({"ok": true, "key": enc.show(&key)}))?;
            Ok(EXIT_OK)
        }
        KvCmd::Get { key, no_newline } => {
            get(r, out, enc, &enc.parse("KEY", &key)?, no_newline).await
        }
        KvCmd::Scan {
            start,
            end,
            limit,
            page_bytes,
        } => {
            let (start, end) = (enc.parse("START", &start)?, enc.parse("END", &end)?);
            scan(r, out, enc, (&start, &end), limit, page_bytes).await
        }
        KvCmd::Cas {
            key,
            new,
            expected,
            absent: _,
            value_file,
            delete,
        } => {
            let key = enc.parse("KEY", &key)?;
            let expected = expected.map(|e| enc.parse("--expected", &e)).transpose()?;
            let new = if delete {
                None
            } else {
                Some(read_value(enc, new, value_file)?)
            };
            cas(r, out, enc, &key, expected.as_deref(), new.as_deref()).await
        }
        KvCmd::Batch { ops, file } => {
            let ops = match file {
                Some(source) => parse_batch_file(enc, &source, &read_source(&source)?)?,
                None => parse_batch_args(enc, &ops)?,
            };
            batch(r, out, ops).await
        }
    }
}

async fn batch(r: &Remote, out: &mut Out, ops: Vec<WriteOp>) -> Outcome {
    if ops.is_empty() {
        let e = "kv batch: no writes given; pass OPs (put KEY VALUE, delete KEY) or --file FILE";
        return Err(Failure::Error(e.to_string()));
    }
    let writes = ops.len();
    r.check(r.client.batch(ops).await)?;
    out.show(String::new, || json!({"ok": true, "writes": writes}))?;
    Ok(EXIT_OK)
}

/// A value given as an argument (escaped or hex; `-`: stdin's raw bytes) or a file.
fn read_value(
    enc: Encoding,
    value: Option<String>,
    file: Option<PathBuf>,
) -> Result<Vec<u8>, String> {
    match (value.as_deref(), file) {
        (_, Some(path)) => std::fs::read(&path)
            .map_err(|e| format!("cannot read --value-file {}: {e}", path.display())),
        (Some("-"), None) => read_source("-"),
        (Some(v), None) => enc.parse("VALUE", v),
        (None, None) => {
            Err("no value given: pass VALUE, `-` (stdin) or --value-file PATH".to_string())
        }
    }
}

/// The bytes of FILE, or of stdin for `-`.
fn read_source(source: &str) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    if source == "-" {
        io::stdin()
            .lock()
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        Ok(buf)
    } else {
        std::fs::read(source).map_err(|e| format!("cannot read {source}: {e}"))
    }
}

async fn get(r: &Remote, out: &mut Out, enc: Encoding, key: &[u8], no_newline: bool) -> Outcome {
    let value = r.check(r.client.get(key).await)?;
    if out.json {
        out.json(
            &json!({"key": enc.show(key), "found": value.is_some(), "value": value.as_deref().map(|v| enc.show(v))}),
        )?;
    } else if let Some(v) = &value {
        match enc {
            Encoding::Escaped => out.bytes(v)?,
            Encoding::Hex => out.bytes(display::hex(v).as_bytes())?,
        }
        if !no_newline {
            out.bytes(b"\n")?;
        }
    } else {
        note(&format!("key \"{}\" not found", enc.show(key)));
    }
    Ok(if value.is_some() { EXIT_OK } else { EXIT_NO })
}

/// Prints `[start, end)` page by page (so memory stays bounded however much it holds),
/// at most `limit` pairs (0: all).
async fn scan(
    r: &Remote,
    out: &mut Out,
    enc: Encoding,
    (start, end): (&[u8], &[u8]),
    limit: u32,
    page_bytes: u64,
) -> Outcome {
    let mut from = start.to_vec();
    let mut printed = 0u32;
    loop {
        let want = if limit == 0 { 0 } else { limit - printed };
        let (mut pairs, resume) =
            r.check(r.client.scan_page(&from, end, want, page_bytes).await)?;
        if limit != 0 {
            pairs.truncate(want as usize);
        }
        if pairs.is_empty() && resume.as_deref() == Some(from.as_slice()) {
            let at = enc.show(&from);
            return Err(Failure::Error(format!(
                "the server returned an empty page at \"{at}\" that resumes there"
            )));
        }
        for (k, v) in &pairs {
            out.show(
                || scan_line(enc, k, v),
                || json!({"key": enc.show(k), "value": enc.show(v)}),
            )?;
        }
        out.flush()?;
        printed += pairs.len() as u32;
        match resume {
            Some(k) if limit == 0 || printed < limit => from = k,
            _ => return Ok(EXIT_OK),
        }
    }
}

/// One line of `kv scan`: `key<TAB>value<NEWLINE>`, both encoded (so neither holds a tab
/// or a newline).
pub fn scan_line(enc: Encoding, key: &[u8], value: &[u8]) -> String {
    format!("{}\t{}\n", enc.show(key), enc.show(value))
}

async fn cas(
    r: &Remote,
    out: &mut Out,
    enc: Encoding,
    key: &[u8],
    expected: Option<&[u8]>,
    new: Option<&[u8]>,
) -> Outcome {
    let (succeeded, previous) = r.check(r.client.compare_and_swap(key, expected, new).await)?;
    if out.json {
        let previous = previous.as_deref().map(|p| enc.show(p));
        out.json(&json!({"key": enc.show(key), "succeeded": succeeded, "previous": previous}))?;
    } else if !succeeded {
        let now = match &previous {
            Some(p) => format!("holds \"{}\"", enc.show(p)),
            None => "is absent".to_string(),
        };
        note(&format!(
            "compare-and-swap not applied: key \"{}\" {now}",
            enc.show(key)
        ));
    }
    Ok(if succeeded { EXIT_OK } else { EXIT_NO })
}

/// The writes of `kv batch put K V delete K ...`.
pub fn parse_batch_args(enc: Encoding, args: &[String]) -> Result<Vec<WriteOp>, String> {
    let mut ops = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let n = i + 1;
        let arg = |j: usize, what: &str| match args.get(i + j) {
            Some(a) => enc.parse(&format!("{what} (argument {})", n + j), a),
            None => Err(format!(
                "kv batch: `{}` (argument {n}) needs {}",
                args[i],
                if args[i] == "put" {
                    "KEY and VALUE"
                } else {
                    "KEY"
                }
            )),
        };
        match args[i].as_str() {
            "put" => {
                ops.push(WriteOp::put(arg(1, "KEY")?, arg(2, "VALUE")?));
                i += 3;
            }
            "delete" => {
                ops.push(WriteOp::delete(arg(1, "KEY")?));
                i += 2;
            }
            other => {
                return Err(format!(
                "kv batch: argument {n} is {other:?}; expected an op: put KEY VALUE or delete KEY"
            ))
            }
        }
    }
    Ok(ops)
}

/// The writes of a batch file: one `put<TAB>KEY<TAB>VALUE` or `delete<TAB>KEY` a line
/// (empty lines skipped, a trailing `\r` dropped). `source` names the file in errors.
pub fn parse_batch_file(enc: Encoding, source: &str, text: &[u8]) -> Result<Vec<WriteOp>, String> {
    let name = if source == "-" {
        "stdin".to_string()
    } else {
        source.to_string()
    };
    let mut ops = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let parsed = std::str::from_utf8(line)
            .map_err(|_| "not UTF-8 text; write other bytes as \\xNN".to_string())
            .and_then(|line| parse_batch_line(enc, line));
        match parsed {
            Ok(Some(op)) => ops.push(op),
            Ok(None) => {}
            Err(e) => return Err(format!("kv batch: {name} line {}: {e}", i + 1)),
        }
    }
    Ok(ops)
}

/// One line of a batch file (`None`: an empty line).
pub fn parse_batch_line(enc: Encoding, line: &str) -> Result<Option<WriteOp>, String> {
    if line.is_empty() {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split('\t').collect();
    match fields.as_slice() {
        ["put", k, v] => Ok(Some(WriteOp::put(enc.parse("key", k)?, enc.parse("value", v)?))),
        ["delete", k] => Ok(Some(WriteOp::delete(enc.parse("key", k)?))),
        ["put", ..] => Err(format!("put takes put<TAB>KEY<TAB>VALUE, found {} tab-separated fields", fields.len())),
        ["delete", ..] => Err(format!("delete takes delete<TAB>KEY, found {} tab-separated fields", fields.len())),
        [op, ..] => Err(format!(
            "{} is not an op; expected put<TAB>KEY<TAB>VALUE or delete<TAB>KEY (fields are separated by tabs)",
            display::quote(op)
        )),
        [] => Ok(None),
    }
}
