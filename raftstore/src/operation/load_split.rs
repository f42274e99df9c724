//! Splitting by load: a range whose request rate stays above `load_split_qps` for
//! `load_split_hot_secs` one-second windows is split at a key that divides its load in
//! two, so that leadership balance can spread the halves over the nodes (a range's load
//! is served by its one leader; ranges are the unit of spreading).
//!
//! How the key is found (CockroachDB's load-based splitter and TiKV's load-base-split
//! are the anchors; both sample request keys): while a range is hot, its leader keeps a
//! reservoir of [`SAMPLES`] request keys, and for each sample counts the later requests
//! that fall to its left (below it) and to its right (at or above it). When the range
//! has been hot long enough, the sample that splits those counts most evenly is the split
//! key — provided both sides got at least a quarter of them. A single hot key can never
//! qualify: every request to it falls to the right of any sample equal to it, and a
//! split elsewhere would leave its load on one side anyway, so such a range stays whole
//! (splitting it would only add a range). A range below the threshold forgets its
//! samples, so a uniformly loaded cluster splits only until each range is under it.
//!
//! Every request a leader accepts counts (reads served under the lease included); a scan
//! counts at its start key. The windows are measured on the store's monotonic clock (the
//! harness's manual clock in tests); ticks only decide when to look. The split itself is
//! an ordinary `Split` command, with the epoch the samples were taken under: a range
//! that split or changed meanwhile refuses it, as for size splits.

use std::time::Duration;

use crate::metapb::Epoch;
use crate::peer::Peer;
use crate::store::Store;

/// Keys kept in a hot range's reservoir.
pub(crate) const SAMPLES: usize = 20;
/// The length of one measuring window.
const WINDOW: Duration = Duration::from_secs(1);
/// Requests counted against the samples before a split key is trusted.
const MIN_COUNTED: u64 = 100;

/// One sampled key and the requests seen on either side of it since it was sampled.
#[derive(Debug, Clone)]
struct Sample {
    key: Vec<u8>,
    left: u64,
    right: u64,
}

/// A leader's view of its range's recent load.
#[derive(Debug, Default)]
pub(crate) struct LoadStats {
    window_start: Duration,
    in_window: u64,
    /// Consecutive windows at or above the threshold.
    hot_windows: u64,
    samples: Vec<Sample>,
    /// Requests offered to the reservoir since the range became hot.
    offered: u64,
    /// A small xorshift state for the reservoir (deterministic per range).
    rng: u64,
}

impl LoadStats {
    /// Counts one request to `key` at `now`; samples it while the range is hot.
    pub(crate) fn record(&mut self, key: &[u8], now: Duration, qps: u64) {
        if now.saturating_sub(self.window_start) >= WINDOW {
            self.close_window(now, qps);
        }
        self.in_window += 1;
        if self.hot_windows == 0 {
            return;
        }
        for s in &mut self.samples {
            if key < s.key.as_slice() {
                s.left += 1;
            } else {
                s.right += 1;
            }
        }
        self.offered += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(Sample {
                key: key.to_vec(),
                left: 0,
                right: 0,
            });
        } else {
            let j = (self.next_random() % self.offered) as usize;
            if j < SAMPLES {
                self.samples[j] = Sample {
                    key: key.to_vec(),
                    left: 0,
                    right: 0,
                };
            }
        }
    }

    /// Ends the current window (and any idle ones since): a range below the threshold
    /// cools down and forgets its samples.
    fn close_window(&mut self, now: Duration, qps: u64) {
        let elapsed = now.saturating_sub(self.window_start);
        let rate = self.in_window as f64 / elapsed.as_secs_f64().max(WINDOW.as_secs_f64());
        if qps > 0 && rate >= qps as f64 && elapsed < 2 * WINDOW {
            self.hot_windows += 1;
        } else {
            self.cool();
        }
        self.window_start = now;
        self.in_window = 0;
    }

    fn cool(&mut self) {
        self.hot_windows = 0;
        self.samples.clear();
        self.offered = 0;
    }

    /// The split key, once the range has been hot for `hot_windows` windows and a sample
    /// divides the requests seen around it evenly enough (see the module docs). `start`
    /// is the range's start, where no split can be.
    pub(crate) fn split_key(&self, hot_windows: u64, start: &[u8]) -> Option<Vec<u8>> {
        if self.hot_windows < hot_windows.max(1) {
            return None;
        }
        let best = self
            .samples
            .iter()
            .filter(|s| s.key.as_slice() > start && s.left + s.right >= MIN_COUNTED)
            .min_by_key(|s| {
                (
                    s.left.abs_diff(s.right) * 1000 / (s.left + s.right),
                    s.key.clone(),
                )
            })?;
        // Both sides carry at least a quarter of the load.
        let (small, total) = (best.left.min(best.right), best.left + best.right);
        (small * 4 >= total).then(|| best.key.clone())
    }

    fn next_random(&mut self) -> u64 {
        if self.rng == 0 {
            self.rng = 0x9E37_79B9_7F4A_7C15;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

impl Peer {
    /// Counts a request this leader accepted, for load splitting; true while the range
    /// is hot.
    pub(crate) fn record_load(&mut self, key: &[u8], now: Duration, qps: u64) -> bool {
        if qps == 0 || self.range_id == crate::keyspace::META_RANGE_ID {
            return false;
        }
        self.load.record(key, now, qps);
        self.load.hot_windows > 0
    }
}

impl Store {
    /// Proposes a split of every hot range whose samples found a key (called with the
    /// size checks' schedule; only ranges found hot are looked at, and they leave the set
    /// once they cool down or lose leadership). The samples are forgotten once a key is
    /// found.
    pub(crate) fn split_hot_ranges(&mut self) {
        let (qps, hot) = (self.cfg.load_split_qps, self.cfg.load_split_hot_secs);
        if qps == 0 {
            return;
        }
        let now = self.clock.now();
        let mut due: Vec<(u64, Epoch, Vec<u8>)> = Vec::new();
        let Store {
            hot_ranges, peers, ..
        } = self;
        hot_ranges.retain(|id| {
            let Some(peer) = peers.get_mut(id).filter(|p| p.is_leader()) else {
                return false;
            };
            if now.saturating_sub(peer.load.window_start) >= WINDOW {
                // No request closed the window: the range went quiet.
                peer.load.close_window(now, qps);
            }
            let d = peer.descriptor();
            if let Some(key) = peer.load.split_key(hot, &d.start) {
                due.push((d.range_id, d.epoch(), key));
                peer.load.cool();
            }
            peer.load.hot_windows > 0
        });
        for (range_id, epoch, key) in due {
            tracing::info!(range = range_id, key = %crate::keyspace::show_key(&key), "splitting a hot range by load");
            self.on_split_key(range_id, epoch, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per_sec` requests a second for `secs` seconds from `from` (threshold 100 qps);
    /// returns the time after the last.
    fn run(
        stats: &mut LoadStats,
        from: Duration,
        secs: u64,
        per_sec: u64,
        key: impl Fn(u64) -> Vec<u8>,
    ) -> Duration {
        for i in 0..secs * per_sec {
            let at = from + Duration::from_micros(i * 1_000_000 / per_sec);
            stats.record(&key(i), at, 100);
        }
        from + Duration::from_secs(secs)
    }

    const ZERO: Duration = Duration::ZERO;

    fn spread(i: u64) -> Vec<u8> {
        format!("k{:04}", (i * 7919) % 1000).into_bytes()
    }

    #[test]
    fn a_hot_range_splits_near_the_middle_of_its_load() {
        let mut s = LoadStats::default();
        run(&mut s, ZERO, 6, 500, spread);
        let key = s.split_key(3, b"").expect("a split key");
        let k = String::from_utf8(key).unwrap();
        assert!(("k0250".."k0750").contains(&k.as_str()), "{k}");
    }

    #[test]
    fn a_range_below_the_threshold_or_not_hot_long_enough_does_not_split() {
        let mut s = LoadStats::default();
        run(&mut s, ZERO, 10, 50, spread);
        assert_eq!(
            s.split_key(3, b""),
            None,
            "50 requests a second is under 100"
        );
        let mut s = LoadStats::default();
        run(&mut s, ZERO, 3, 500, spread);
        assert_eq!(s.split_key(5, b""), None, "hot for only two closed windows");
    }

    #[test]
    fn a_single_hot_key_is_never_split() {
        let mut s = LoadStats::default();
        run(&mut s, ZERO, 10, 1000, |_| b"hot".to_vec());
        assert_eq!(s.split_key(3, b""), None);
        // Mostly one key, a little around it: still no side gets a quarter.
        let mut s = LoadStats::default();
        run(&mut s, ZERO, 10, 1000, |i| {
            if i % 10 == 0 {
                spread(i)
            } else {
                b"k0500".to_vec()
            }
        });
        assert_eq!(s.split_key(3, b""), None);
    }

    #[test]
    fn a_range_that_cools_down_forgets_its_samples() {
        let mut s = LoadStats::default();
        let t = run(&mut s, ZERO, 4, 500, spread);
        run(&mut s, t, 3, 10, spread);
        assert_eq!(s.split_key(3, b""), None);
    }
}
