//! [`EntryCache`]: the recent tail of one replica's Raft log, kept in memory so that the
//! hot reads of a busy range never reach RocksDB.
//!
//! Under load raft-rs reads the log back almost at once: the entries a round just made
//! durable are committed and fetched for apply a round or two later, a leader sends the
//! same entries to a follower whose append was answered late, and every append response
//! asks for the term of an index near the tail. Served from RocksDB, each of those was an
//! iterator or a point lookup through the memtable's skip list; a profile of 100-client puts
//! on a 3-node cluster had 8 % of all server CPU in them (TiKV keeps an entry cache for
//! the same reason).
//!
//! The cache holds a contiguous run of entries ending at the log's last index. It is
//! filled by `append` when the entries are staged: raft-rs reads from storage only the
//! entries below its unstable offset, which moves past them only after the batch is
//! durable, so nothing is read from the cache before it is on disk. It is trimmed from the
//! front once every replica has the entries and this one has applied them, when the log is
//! truncated, and whenever it holds more than [`EntryCache::MAX_BYTES`] (a follower that is
//! far behind reads from disk). A snapshot clears it. An idle range's cache is empty.

use std::collections::VecDeque;

use protobuf::Message as _;
use raft::prelude::Entry;

/// Entries read for raft-rs, within its size limit: the first entry is always taken, and
/// then entries while their running size stays within `max_size`.
pub struct Fetched {
    pub entries: Vec<Entry>,
    pub size: u64,
    pub max_size: u64,
}

impl Fetched {
    pub fn new(max_size: u64, capacity: usize) -> Fetched {
        Fetched {
            entries: Vec::with_capacity(capacity),
            size: 0,
            max_size,
        }
    }

    /// Takes `entry` (of `bytes` encoded) unless the limit stops it; false once it does.
    pub fn take(&mut self, entry: Entry, bytes: u64) -> bool {
        self.size += bytes;
        if !self.entries.is_empty() && self.size > self.max_size {
            return false;
        }
        self.entries.push(entry);
        true
    }

    /// True once an entry was refused for the limit.
    pub fn full(&self) -> bool {
        self.size > self.max_size
    }
}

/// A contiguous run of recent log entries (see the module docs).
#[derive(Default)]
pub struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl EntryCache {
    /// The most one replica keeps; past it the oldest entries are dropped.
    pub const MAX_BYTES: usize = 256 * 1024;

    /// Adds freshly appended entries, first dropping any cached entry they replace (a
    /// conflicting tail) or that they do not continue (a gap).
    pub fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        self.truncate_from(first.index);
        if self
            .entries
            .back()
            .is_some_and(|e| e.index + 1 != first.index)
        {
            self.clear();
        }
        for e in new {
            self.bytes += e.compute_size() as usize;
            self.entries.push_back(e.clone());
        }
        while self.bytes > Self::MAX_BYTES && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    /// Drops every entry with an index below `index`.
    pub fn trim_before(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index < index) {
            self.pop_front();
        }
    }

    /// Drops everything (a snapshot replaced the log).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The first cached index, if any entry is cached.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    /// The term of entry `index`, when it is cached.
    pub fn term(&self, index: u64) -> Option<u64> {
        self.get(index).map(|e| e.term)
    }

    /// Takes the cached entries `[low, high)` into `into` until its size limit stops it.
    /// Returns false when the run is not all cached.
    pub fn fetch(&self, low: u64, high: u64, into: &mut Fetched) -> bool {
        let Some(first) = self.first_index() else {
            return false;
        };
        if low < first || high > first + self.entries.len() as u64 {
            return false;
        }
        let run = self
            .entries
            .range((low - first) as usize..(high - first) as usize);
        for e in run {
            if !into.take(e.clone(), e.compute_size() as u64) {
                break;
            }
        }
        true
    }

    /// Number of cached entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.first_index()?;
        index
            .checked_sub(first)
            .and_then(|i| self.entries.get(i as usize))
    }

    fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.index >= index) {
            let e = self.entries.pop_back().expect("checked non-empty");
            self.bytes -= e.compute_size() as usize;
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.compute_size() as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EntryCache, Fetched};
    use raft::prelude::Entry;

    fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
        (from..=to)
            .map(|index| Entry {
                index,
                term,
                data: vec![0; 100].into(),
                ..Default::default()
            })
            .collect()
    }

    fn fetched(cache: &EntryCache, low: u64, high: u64, max: u64) -> Option<Vec<(u64, u64)>> {
        let mut into = Fetched::new(max, 0);
        cache
            .fetch(low, high, &mut into)
            .then(|| into.entries.iter().map(|e| (e.index, e.term)).collect())
    }

    #[test]
    fn a_conflicting_append_replaces_the_tail() {
        let mut cache = EntryCache::default();
        cache.append(&entries(6, 10, 1));
        cache.append(&entries(8, 9, 2));
        assert_eq!(cache.len(), 4);
        assert_eq!(
            fetched(&cache, 6, 10, u64::MAX),
            Some(vec![(6, 1), (7, 1), (8, 2), (9, 2)])
        );
        assert_eq!(cache.term(10), None, "the replaced entry is gone");
        assert_eq!(fetched(&cache, 6, 11, u64::MAX), None, "not all cached");
    }

    #[test]
    fn a_gap_restarts_the_cache() {
        let mut cache = EntryCache::default();
        cache.append(&entries(6, 8, 1));
        cache.append(&entries(20, 21, 1));
        assert_eq!(cache.first_index(), Some(20));
        assert_eq!(cache.term(7), None);
    }

    #[test]
    fn trimming_and_the_size_cap_drop_the_oldest_entries() {
        let mut cache = EntryCache::default();
        cache.append(&entries(1, 10, 1));
        cache.trim_before(4);
        assert_eq!(cache.first_index(), Some(4));
        assert_eq!(fetched(&cache, 3, 5, u64::MAX), None, "3 was trimmed");
        // Each entry is a little over 100 bytes: two fit under 250.
        assert_eq!(fetched(&cache, 4, 10, 250), Some(vec![(4, 1), (5, 1)]));
        assert_eq!(
            fetched(&cache, 4, 10, 0),
            Some(vec![(4, 1)]),
            "the first entry always comes"
        );
        cache.append(&entries(11, 11 + (EntryCache::MAX_BYTES / 100) as u64, 1));
        assert!(
            cache.len() < EntryCache::MAX_BYTES / 100,
            "capped at {} entries",
            cache.len()
        );
        assert!(cache.first_index().unwrap() > 11);
    }
}
