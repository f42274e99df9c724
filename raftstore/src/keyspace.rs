//! The layout of the replicated key space: which keys hold user data and which hold the
//! cluster's own metadata.
//!
//! The store itself treats keys as opaque bytes; this module is the one place that says
//! how the router and the bootstrap code carve them up:
//!
//! - `[ "", "u" )` is the **meta range** (always range [`META_RANGE_ID`], never split). It
//!   holds one [`MetaEntry`](crate::metapb::MetaEntry) per range, under
//!   `"m" + end key` (`"m\xff"` for the last, unbounded range), so the range holding a key
//!   is the first record whose key sorts strictly above `"m" + key`.
//! - `[ "u", ∞ )` is user data: user key `k` is stored as `"u" + k`, so user keys sort
//!   naturally and can never collide with metadata.

use crate::metapb::{Epoch, RangeDescriptor, Replica};

/// The id of the meta range.
pub const META_RANGE_ID: u64 = 1;
/// The first byte of every user key as stored.
pub const USER_PREFIX: u8 = b'u';
/// The first byte of every meta record key.
pub const META_PREFIX: u8 = b'm';

/// The stored form of user key `key`.
pub fn user_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(USER_PREFIX);
    k.extend_from_slice(key);
    k
}

/// The user key of a stored key, or `None` for a key outside the user span.
pub fn decode_user_key(stored: &[u8]) -> Option<&[u8]> {
    match stored.split_first() {
        Some((&USER_PREFIX, rest)) => Some(rest),
        _ => None,
    }
}

/// A stored key as people read it: a user key without its prefix, printable ASCII as is
/// and other bytes as `\xNN` (`""` for the empty user key); a key of the meta span as
/// `meta:…`.
pub fn show_key(stored: &[u8]) -> String {
    match decode_user_key(stored) {
        Some([]) => "\"\"".to_string(),
        Some(user) => escape(user),
        None if stored.is_empty() => "-inf".to_string(),
        None => format!("meta:{}", escape(stored)),
    }
}

/// A range's end as people read it: [`show_key`], or `+inf` when unbounded.
pub fn show_end(stored: &[u8]) -> String {
    if stored.is_empty() {
        "+inf".to_string()
    } else {
        show_key(stored)
    }
}

/// Bytes as printable ASCII, other bytes (and `\`) as `\xNN`.
pub fn escape(b: &[u8]) -> String {
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

/// The stored end of the user span for an exclusive user bound (empty: unbounded).
pub fn user_end(end: &[u8]) -> Vec<u8> {
    if end.is_empty() {
        Vec::new()
    } else {
        user_key(end)
    }
}

/// The meta record key of a range ending at `end` (stored form; empty = unbounded).
pub fn meta_key(end: &[u8]) -> Vec<u8> {
    if end.is_empty() {
        return vec![META_PREFIX, 0xff];
    }
    let mut k = Vec::with_capacity(end.len() + 1);
    k.push(META_PREFIX);
    k.extend_from_slice(end);
    k
}

/// The end of every meta scan.
pub fn meta_scan_end() -> Vec<u8> {
    vec![META_PREFIX + 1]
}

/// True for a stored key inside the meta range.
pub fn is_meta_key(key: &[u8]) -> bool {
    key < [USER_PREFIX].as_slice()
}

/// The ranges of a new cluster: the meta range, then `user_ranges` ranges covering the
/// user span, split evenly ([`even_split_point`]), each replicated on
/// nodes `1..=nodes` (replica id = `range_id * 100 + node_id`).
pub fn initial_ranges(user_ranges: u64, nodes: u64) -> Vec<RangeDescriptor> {
    let replicas = |range_id: u64| -> Vec<Replica> {
        (1..=nodes)
            .map(|n| Replica::voter(n, range_id * 100 + n))
            .collect()
    };
    initial_ranges_with(user_ranges, replicas)
}

/// Like [`initial_ranges`], replicated on the nodes `node_ids` (any ids; a replica's id is
/// its node's id, unique within each range). The server bootstraps clusters with this.
pub fn initial_ranges_on(user_ranges: u64, node_ids: &[u64]) -> Vec<RangeDescriptor> {
    let replicas =
        |_: u64| -> Vec<Replica> { node_ids.iter().map(|&n| Replica::voter(n, n)).collect() };
    initial_ranges_with(user_ranges, replicas)
}

/// Like [`initial_ranges_on`], but each range on `factor` of the nodes (all of them when
/// there are no more): range `i` of the list (the meta range is 0) on the nodes at
/// positions `i, i+1, …` of the sorted ids, so replicas and preferred leaders spread
/// evenly from the start and placement has nothing to move.
pub fn initial_ranges_placed(
    user_ranges: u64,
    node_ids: &[u64],
    factor: usize,
) -> Vec<RangeDescriptor> {
    let mut ids = node_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let take = factor.clamp(1, ids.len().max(1));
    let replicas = |range_id: u64| -> Vec<Replica> {
        if ids.is_empty() {
            // No node to place on (callers always name one): ranges without replicas.
            return Vec::new();
        }
        let first = (range_id - META_RANGE_ID) as usize;
        let mut chosen: Vec<u64> = (0..take).map(|j| ids[(first + j) % ids.len()]).collect();
        chosen.sort_unstable();
        chosen.into_iter().map(|n| Replica::voter(n, n)).collect()
    };
    initial_ranges_with(user_ranges, replicas)
}

/// The most user ranges a cluster may start with (`init --initial-ranges`); more is
/// refused ([`check_initial_ranges`]). A cluster with more ranges gets them by splitting.
pub const MAX_INITIAL_RANGES: u64 = 1 << 20;

/// Refuses a count of initial ranges outside `1..=MAX_INITIAL_RANGES`, saying what to do.
pub fn check_initial_ranges(count: u64) -> Result<(), String> {
    if (1..=MAX_INITIAL_RANGES).contains(&count) {
        return Ok(());
    }
    Err(format!(
        "--initial-ranges {count} is out of range: give 1..={MAX_INITIAL_RANGES} (ranges split by themselves as they grow)"
    ))
}

/// Split point `j` (`0 < j < count`) of `count` even ranges over the binary key space: the
/// first two key bytes while 65,536 ranges or fewer (the layout clusters have always had),
/// the first four above, so that every count up to [`MAX_INITIAL_RANGES`] splits evenly.
pub fn even_split_point(j: u64, count: u64) -> Vec<u8> {
    if count <= 1 << 16 {
        ((j << 16) / count).min(u16::MAX as u64).to_be_bytes()[6..].to_vec()
    } else {
        ((j << 32) / count).min(u32::MAX as u64).to_be_bytes()[4..].to_vec()
    }
}

fn initial_ranges_with(
    user_ranges: u64,
    replicas: impl Fn(u64) -> Vec<Replica>,
) -> Vec<RangeDescriptor> {
    // (Callers check the count first; the clamp only keeps this total.)
    let count = user_ranges.clamp(1, MAX_INITIAL_RANGES);
    let epoch = Some(Epoch {
        version: 1,
        conf_ver: 1,
    });
    let mut out = vec![RangeDescriptor {
        range_id: META_RANGE_ID,
        start: Vec::new(),
        end: vec![USER_PREFIX],
        epoch,
        replicas: replicas(META_RANGE_ID),
        ..Default::default()
    }];
    let bound = |j: u64| -> Vec<u8> {
        match j {
            0 => vec![USER_PREFIX],
            j if j == count => Vec::new(),
            j => user_key(&even_split_point(j, count)),
        }
    };
    for i in 0..count {
        let range_id = META_RANGE_ID + 1 + i;
        let (start, end) = (bound(i), bound(i + 1));
        out.push(RangeDescriptor {
            range_id,
            start,
            end,
            epoch,
            replicas: replicas(range_id),
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_ranges_are_placed_on_factor_nodes_in_turn() {
        let ranges = initial_ranges_placed(5, &[4, 1, 2, 3, 5], 3);
        assert_eq!(ranges.len(), 6);
        let nodes = |d: &RangeDescriptor| d.replicas.iter().map(|r| r.node_id).collect::<Vec<_>>();
        assert_eq!(
            nodes(&ranges[0]),
            vec![1, 2, 3],
            "the meta range starts on the lowest ids"
        );
        assert_eq!(nodes(&ranges[3]), vec![1, 4, 5]);
        let mut per_node = std::collections::BTreeMap::new();
        for d in &ranges {
            for r in &d.replicas {
                *per_node.entry(r.node_id).or_insert(0) += 1;
            }
        }
        assert!(per_node.values().all(|&c| c == 3 || c == 4), "{per_node:?}");
        let few = initial_ranges_placed(2, &[7], 3);
        assert!(
            few.iter().all(|d| nodes(d) == vec![7]),
            "fewer nodes than the factor: all of them"
        );
        let none = initial_ranges_placed(2, &[], 3);
        assert!(
            none.len() == 3 && none.iter().all(|d| d.replicas.is_empty()),
            "no nodes: no replicas, no panic"
        );
    }

    #[test]
    fn keys_are_shown_as_users_wrote_them() {
        assert_eq!(show_key(b"u\x00a\\"), "\\x00a\\x5c");
        assert_eq!(show_key(b"u"), "\"\"");
        assert_eq!(show_key(b""), "-inf");
        assert_eq!(show_key(b"m\xff"), "meta:m\\xff");
        assert_eq!(show_end(b""), "+inf");
        let e = crate::Error::KeyNotInRange {
            key: b"ub".to_vec(),
            range_id: 3,
            start: b"u".to_vec(),
            end: b"ua".to_vec(),
        };
        assert_eq!(e.to_string(), "key b is not in range 3 [\"\", a)");
    }

    #[test]
    fn meta_lookup_finds_the_covering_record() {
        let ends: Vec<Vec<u8>> = vec![user_key(b"g"), user_key(b"p"), Vec::new()];
        let mut records: Vec<Vec<u8>> = ends.iter().map(|e| meta_key(e)).collect();
        records.sort();
        let find = |key: &[u8]| {
            records
                .iter()
                .position(|r| r.as_slice() > meta_key(key).as_slice())
        };
        assert_eq!(find(&user_key(b"a")), Some(0));
        assert_eq!(
            find(&user_key(b"g")),
            Some(1),
            "a range's end key belongs to the next range"
        );
        assert_eq!(find(&user_key(b"zzz")), Some(2));
        assert_eq!(find(&user_key(&[0xff; 300])), Some(2));
    }

    #[test]
    fn initial_ranges_tile_the_key_space() {
        let ranges = initial_ranges(4, 3);
        assert_eq!(ranges.len(), 5);
        assert!(ranges[0].contains(&meta_key(b"")) && !ranges[0].contains(&user_key(b"")));
        for w in ranges.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert!(ranges.last().unwrap().end.is_empty());
        assert!(is_meta_key(&meta_key(&user_key(b"x"))) && !is_meta_key(&user_key(b"")));
        assert_eq!(decode_user_key(&user_key(b"k")), Some(b"k".as_slice()));
    }

    #[test]
    fn a_hundred_thousand_ranges_tile_the_key_space_and_too_many_are_refused() {
        for count in [65_536, 65_537, 100_000, MAX_INITIAL_RANGES] {
            let ranges = initial_ranges_placed(count, &[1, 2, 3], 3);
            assert_eq!(
                ranges.len() as u64,
                count + 1,
                "the meta range and {count} user ranges"
            );
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert!(
                    w[1].end.is_empty() || w[1].start < w[1].end,
                    "empty range {:?}",
                    w[1]
                );
            }
            assert!(ranges.last().unwrap().end.is_empty());
        }
        // Up to 65,536 the bounds are the two-byte ones clusters have always had.
        assert_eq!(initial_ranges(4, 1)[2].start, user_key(&[0x40, 0x00]));
        assert_eq!(even_split_point(1, 100_000).len(), 4);
        assert!(check_initial_ranges(100_000).is_ok());
        let err = check_initial_ranges(MAX_INITIAL_RANGES + 1).unwrap_err();
        assert!(
            err.contains("--initial-ranges 1048577 is out of range") && err.contains("1..=1048576"),
            "{err}"
        );
        assert!(check_initial_ranges(0).is_err());
    }
}
