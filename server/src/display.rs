//! How keys and values are shown to people and read back from them.
//!
//! Two encodings, each a round trip: the *escaped* form (printable ASCII as is, any other
//! byte as `\xNN`, so a backslash is `\x5c`), which is what the CLI prints and reads by
//! default, and the *hex* form (two lowercase digits per byte), chosen with `--hex`.
//! Every key `kv scan` prints can be passed back to `kv get` unchanged.
//!
//! Range bounds are shown in user terms: stored keys without the user prefix, the open
//! ends as `-inf` / `+inf`, and the meta span as such.

/// How byte strings are written on the command line and in the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Printable ASCII as is, other bytes as `\xNN` (see [`bytes`]).
    Escaped,
    /// Two hex digits per byte (see [`hex`]).
    Hex,
}

impl Encoding {
    /// `--hex` given or not.
    pub fn hex_if(hex: bool) -> Encoding {
        if hex {
            Encoding::Hex
        } else {
            Encoding::Escaped
        }
    }

    /// `b` in this encoding.
    pub fn show(self, b: &[u8]) -> String {
        match self {
            Encoding::Escaped => bytes(b),
            Encoding::Hex => hex(b),
        }
    }

    /// The bytes `text` stands for; `what` names the argument in the error.
    pub fn parse(self, what: &str, text: &str) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Escaped => parse_escaped(what, text),
            Encoding::Hex => parse_hex(what, text),
        }
    }
}

/// A byte string for display: printable ASCII as is, other bytes (and `\`) as `\xNN`.
pub fn bytes(b: &[u8]) -> String {
    flotilla_raftstore::keyspace::escape(b)
}

/// The bytes of escaped text (the inverse of [`bytes`]). A backslash must start `\xNN`
/// (either case); every other character stands for its UTF-8 bytes, so a key typed with
/// non-ASCII letters means those letters' bytes. `what` names the argument in errors.
pub fn parse_escaped(what: &str, text: &str) -> Result<Vec<u8>, String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let digits = b.get(i + 2..i + 4).filter(|_| b.get(i + 1) == Some(&b'x'));
        match digits.and_then(|d| Some((hex_digit(d[0])? << 4) | hex_digit(d[1])?)) {
            Some(byte) => out.push(byte),
            None => {
                let bad = String::from_utf8_lossy(&b[i..b.len().min(i + 4)]).into_owned();
                return Err(format!(
                    "bad {what} {}: {} at byte {i} is not an escape; write other bytes as \\xNN \
                     (a backslash is \\x5c), or give the argument with --hex",
                    quote(text),
                    quote(&bad)
                ));
            }
        }
        i += 4;
    }
    Ok(out)
}

/// A byte string as lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// The bytes of hex text (either case, no prefix, no separators). `what` names the
/// argument in errors.
pub fn parse_hex(what: &str, text: &str) -> Result<Vec<u8>, String> {
    let b = text.as_bytes();
    if let Some(i) = b.iter().position(|&c| hex_digit(c).is_none()) {
        let c = text[i..].chars().next().unwrap_or_default();
        return Err(format!(
            "bad --hex {what} {}: {c:?} at byte {i} is not a hex digit",
            quote(text)
        ));
    }
    if b.len() % 2 == 1 {
        return Err(format!(
            "bad --hex {what} {}: an odd number of hex digits ({})",
            quote(text),
            b.len()
        ));
    }
    Ok(b.chunks(2)
        .map(|d| (hex_digit(d[0]).unwrap_or(0) << 4) | hex_digit(d[1]).unwrap_or(0))
        .collect())
}

/// `text` in double quotes for an error message, as typed: only control characters are
/// escaped (a backslash stays one backslash).
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// A range bound (stored form) for display: `-inf` / `+inf` for the open ends, `meta…`
/// inside the meta span, otherwise the user key (the same form errors use).
pub fn key(stored: &[u8]) -> String {
    flotilla_raftstore::keyspace::show_key(stored)
}

/// The end bound of a range (empty: unbounded).
pub fn end_key(stored: &[u8]) -> String {
    flotilla_raftstore::keyspace::show_end(stored)
}

/// A range's replicas as `flotilla ranges` shows them: node ids, with the role of any
/// replica that is not a plain voter (`4(learner)`).
pub fn replicas(d: &flotilla_raftstore::RangeDescriptor) -> String {
    let one = |r: &flotilla_raftstore::Replica| match r.role() {
        flotilla_raftstore::metapb::ReplicaRole::Voter => r.node_id.to_string(),
        role => format!("{}({})", r.node_id, role.name()),
    };
    d.replicas.iter().map(one).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_the_one_errors_use() {
        // `key`/`end_key` are keyspace's own (tested there); `bytes` must agree with them.
        assert_eq!(bytes(b"a\x00\\"), "a\\x00\\x5c");
        assert_eq!(key(b"ua\x00\\"), bytes(b"a\x00\\"));
    }

    #[test]
    fn every_byte_round_trips_through_both_encodings() {
        let all: Vec<u8> = (0..=255).collect();
        for enc in [Encoding::Escaped, Encoding::Hex] {
            for b in 0..=255u8 {
                let shown = enc.show(&[b]);
                assert_eq!(
                    enc.parse("KEY", &shown),
                    Ok(vec![b]),
                    "{enc:?} byte {b:#04x} shown as {shown}"
                );
            }
            assert_eq!(
                enc.parse("KEY", &enc.show(&all)),
                Ok(all.clone()),
                "{enc:?} all bytes at once"
            );
        }
        let escaped = bytes(&all);
        assert!(
            escaped.bytes().all(|c| (0x20..0x7f).contains(&c)),
            "escaped text is printable: {escaped}"
        );
        assert!(!escaped.contains('\t') && !escaped.contains('\n'));
        assert_eq!(
            bytes(&parse_escaped("KEY", &escaped).unwrap()),
            escaped,
            "the printed form is canonical"
        );
    }

    #[test]
    fn escaped_text_reads_leniently_and_rejects_bad_escapes() {
        assert_eq!(
            parse_escaped("KEY", "a\\x0A\\xffb"),
            Ok(b"a\n\xffb".to_vec()),
            "either case"
        );
        assert_eq!(
            parse_escaped("KEY", "é\t"),
            Ok("é\t".as_bytes().to_vec()),
            "other characters as UTF-8"
        );
        assert_eq!(parse_escaped("KEY", ""), Ok(Vec::new()));
        for bad in ["a\\", "a\\\\", "\\x4", "\\xg0", "\\n", "x\\X41"] {
            let err = parse_escaped("KEY", bad).expect_err(bad);
            assert!(
                err.starts_with(&format!("bad KEY \"{bad}\":")),
                "names the argument and the input: {err}"
            );
            assert!(
                err.contains("\\x5c"),
                "says how to write a backslash: {err}"
            );
        }
        let err = parse_escaped("VALUE", "ab\\q").unwrap_err();
        assert!(
            err.starts_with(r#"bad VALUE "ab\q": "\q" at byte 2 is not an escape"#),
            "{err}"
        );
        assert_eq!(
            quote("a\\\t\"é"),
            "\"a\\\\t\"é\"",
            "control characters escaped, the rest as typed"
        );
    }

    #[test]
    fn hex_reads_either_case_and_rejects_bad_digits() {
        assert_eq!(parse_hex("KEY", "00ff0A"), Ok(vec![0, 0xff, 0x0a]));
        assert_eq!(parse_hex("KEY", ""), Ok(Vec::new()));
        assert_eq!(hex(b"\x00\xab"), "00ab");
        let err = parse_hex("KEY", "abc").unwrap_err();
        assert_eq!(
            err,
            "bad --hex KEY \"abc\": an odd number of hex digits (3)"
        );
        let err = parse_hex("VALUE", "0x12").unwrap_err();
        assert_eq!(
            err,
            "bad --hex VALUE \"0x12\": 'x' at byte 1 is not a hex digit"
        );
        let err = parse_hex("KEY", "aé").unwrap_err();
        assert!(err.contains("'é' at byte 1"), "{err}");
    }
}
