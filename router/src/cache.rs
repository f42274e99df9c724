//! [`RangeCache`]: key → range descriptor and leader hint.
//!
//! Entries are keyed by their end key (an empty end, "unbounded", sorts last), so the
//! range holding `key` is the first entry whose end is above `key`, if its start is at or
//! below it. Inserting a descriptor removes every cached entry it overlaps that has an
//! older or equal epoch version, so information from splits replaces what it supersedes
//! and a stale descriptor never evicts a newer one (for the same range, a newer `conf_ver`
//! at the same version also wins).

use std::collections::BTreeMap;

use flotilla_raftstore::RangeDescriptor;

/// Sort key of a range end: unbounded after every real key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum EndKey {
    Key(Vec<u8>),
    Unbounded,
}

fn end_key(desc: &RangeDescriptor) -> EndKey {
    if desc.end.is_empty() {
        EndKey::Unbounded
    } else {
        EndKey::Key(desc.end.clone())
    }
}

#[derive(Debug, Clone)]
struct Entry {
    desc: RangeDescriptor,
    leader: Option<u64>,
}

/// Cached descriptors and leader hints.
#[derive(Debug, Default)]
pub struct RangeCache {
    by_end: BTreeMap<EndKey, Entry>,
}

impl RangeCache {
    /// An empty cache.
    pub fn new() -> RangeCache {
        RangeCache::default()
    }

    /// The cached range holding `key` and its leader hint (a node id).
    pub fn lookup(&self, key: &[u8]) -> Option<(RangeDescriptor, Option<u64>)> {
        let (_, e) = self
            .by_end
            .range((
                std::ops::Bound::Excluded(EndKey::Key(key.to_vec())),
                std::ops::Bound::Unbounded,
            ))
            .next()?;
        e.desc.contains(key).then(|| (e.desc.clone(), e.leader))
    }

    /// The leader hint of the cached range holding `key` (no copy of the descriptor).
    pub fn leader_of(&self, key: &[u8]) -> Option<u64> {
        let (_, e) = self
            .by_end
            .range((
                std::ops::Bound::Excluded(EndKey::Key(key.to_vec())),
                std::ops::Bound::Unbounded,
            ))
            .next()?;
        e.desc.contains(key).then_some(e.leader).flatten()
    }

    /// Caches `desc`, unless an overlapping cached range has a newer epoch version.
    /// Overlapping entries with older or equal versions are dropped. Returns whether it
    /// was inserted.
    pub fn insert(&mut self, desc: RangeDescriptor) -> bool {
        let overlapping: Vec<EndKey> = self
            .by_end
            .iter()
            .filter(|(_, e)| overlaps(&e.desc, &desc))
            .map(|(k, _)| k.clone())
            .collect();
        let newer = |old: &RangeDescriptor| {
            let (o, n) = (old.epoch(), desc.epoch());
            o.version > n.version
                || (old.range_id == desc.range_id
                    && o.version == n.version
                    && o.conf_ver > n.conf_ver)
        };
        if overlapping.iter().any(|k| newer(&self.by_end[k].desc)) {
            return false;
        }
        let mut leader = None;
        for k in overlapping {
            if let Some(old) = self.by_end.remove(&k) {
                if old.desc.range_id == desc.range_id && old.desc.epoch() == desc.epoch() {
                    leader = old.leader;
                }
            }
        }
        self.by_end.insert(end_key(&desc), Entry { desc, leader });
        true
    }

    /// Records `node_id` as the leader of `range_id`, if that range is cached.
    pub fn set_leader(&mut self, range_id: u64, node_id: Option<u64>) {
        if let Some(e) = self
            .by_end
            .values_mut()
            .find(|e| e.desc.range_id == range_id)
        {
            e.leader = node_id;
        }
    }

    /// Forgets `range_id`.
    pub fn invalidate(&mut self, range_id: u64) {
        self.by_end.retain(|_, e| e.desc.range_id != range_id);
    }

    /// Number of cached ranges.
    pub fn len(&self) -> usize {
        self.by_end.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.by_end.is_empty()
    }
}

fn overlaps(a: &RangeDescriptor, b: &RangeDescriptor) -> bool {
    let a_before_b_ends = b.end.is_empty() || a.start < b.end;
    let b_before_a_ends = a.end.is_empty() || b.start < a.end;
    a_before_b_ends && b_before_a_ends
}

#[cfg(test)]
mod tests {
    use flotilla_raftstore::{Epoch, RangeDescriptor};

    use super::*;

    fn desc(id: u64, start: &str, end: &str, version: u64) -> RangeDescriptor {
        RangeDescriptor {
            range_id: id,
            start: start.into(),
            end: end.into(),
            epoch: Some(Epoch {
                version,
                conf_ver: 1,
            }),
            replicas: Vec::new(),
            ..Default::default()
        }
    }

    #[test]
    fn lookup_finds_the_range_holding_a_key() {
        let mut c = RangeCache::new();
        c.insert(desc(1, "", "g", 1));
        c.insert(desc(2, "g", "p", 1));
        c.insert(desc(3, "p", "", 1));
        assert_eq!(c.lookup(b"a").unwrap().0.range_id, 1);
        assert_eq!(c.lookup(b"g").unwrap().0.range_id, 2, "start is inclusive");
        assert_eq!(c.lookup(b"ozz").unwrap().0.range_id, 2);
        assert_eq!(c.lookup(b"p").unwrap().0.range_id, 3, "end is exclusive");
        assert_eq!(c.lookup(b"\xff\xff").unwrap().0.range_id, 3);
    }

    #[test]
    fn a_gap_is_a_miss() {
        let mut c = RangeCache::new();
        c.insert(desc(1, "", "g", 1));
        c.insert(desc(3, "p", "", 1));
        assert!(c.lookup(b"k").is_none());
    }

    #[test]
    fn newer_epochs_replace_overlapping_entries_and_older_ones_are_refused() {
        let mut c = RangeCache::new();
        c.insert(desc(1, "", "", 1));
        c.set_leader(1, Some(2));
        // A split: the left half and the new right range, both at version 2.
        assert!(c.insert(desc(1, "", "m", 2)));
        assert!(c.insert(desc(7, "m", "", 2)));
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup(b"z").unwrap().0.range_id, 7);
        assert_eq!(
            c.lookup(b"a").unwrap(),
            (desc(1, "", "m", 2), None),
            "leader hint of the old shape dropped"
        );
        // A stale descriptor from before the split does not evict them.
        assert!(!c.insert(desc(1, "", "", 1)));
        assert_eq!(c.lookup(b"z").unwrap().0.range_id, 7);
    }

    #[test]
    fn a_newer_conf_ver_of_the_same_range_wins() {
        let mut c = RangeCache::new();
        let mut newer = desc(1, "", "", 3);
        newer.epoch = Some(Epoch {
            version: 3,
            conf_ver: 5,
        });
        assert!(c.insert(newer.clone()));
        let mut older = desc(1, "", "", 3);
        older.epoch = Some(Epoch {
            version: 3,
            conf_ver: 4,
        });
        assert!(!c.insert(older));
        assert_eq!(c.lookup(b"k").unwrap().0, newer);
    }

    #[test]
    fn leader_hints_survive_refreshing_the_same_descriptor() {
        let mut c = RangeCache::new();
        c.insert(desc(1, "", "", 1));
        c.set_leader(1, Some(3));
        c.insert(desc(1, "", "", 1));
        assert_eq!(c.lookup(b"k").unwrap().1, Some(3));
        c.invalidate(1);
        assert!(c.is_empty());
    }
}
