//! How keys are shown to people: printable ASCII as is, other bytes as `\xNN`; stored
//! keys without the user prefix (the meta span is shown as such).

use flotilla_raftstore::keyspace::{decode_user_key, USER_PREFIX};

/// A byte string for display.
pub fn bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            out.push(c as char);
        } else {
            out.push_str(&format!("\\x{c:02x}"));
        }
    }
    out
}

/// A range bound (stored form) for display: `-inf` / `+inf` for the open ends, `meta…`
/// inside the meta span, otherwise the user key.
pub fn key(stored: &[u8]) -> String {
    match decode_user_key(stored) {
        Some([]) => "\"\"".to_string(),
        Some(user) => bytes(user),
        None if stored.is_empty() => "-inf".to_string(),
        None if stored == [USER_PREFIX] => "\"\"".to_string(),
        None => format!("meta:{}", bytes(stored)),
    }
}

/// The end bound of a range (empty: unbounded).
pub fn end_key(stored: &[u8]) -> String {
    if stored.is_empty() {
        "+inf".to_string()
    } else {
        key(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_well() {
        assert_eq!(bytes(b"a\x00\\"), "a\\x00\\x5c");
        assert_eq!(key(b""), "-inf");
        assert_eq!(key(b"u"), "\"\"");
        assert_eq!(key(b"ukey"), "key");
        assert_eq!(end_key(b""), "+inf");
    }
}
