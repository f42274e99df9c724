//! What the clients measured: a latency histogram (microseconds) per kind of operation,
//! successes, reads that found nothing, and errors by gRPC code.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The longest latency the histograms tell apart (an hour, in microseconds).
const MAX_MICROS: u64 = 3_600_000_000;

/// The outcome of one operation.
pub enum Outcome {
    /// Done (a read that found its key).
    Ok,
    /// A read that found no value.
    Miss,
    /// Failed: the gRPC code's name (or `ClientTimeout`), and the message.
    Err(String, String),
}

/// Measurements of one kind of operation (reads or writes).
pub struct Kind {
    pub latency: Histogram<u64>,
    pub misses: u64,
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each code in `errors`.
    pub samples: BTreeMap<String, String>,
}

impl Kind {
    fn new() -> Kind {
        let latency = Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds");
        Kind {
            latency,
            misses: 0,
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
        }
    }

    /// Operations that succeeded (misses included).
    pub fn ok(&self) -> u64 {
        self.latency.len()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn record(&mut self, outcome: Outcome, took: Duration) {
        match outcome {
            Outcome::Err(code, message) => {
                *self.errors.entry(code.clone()).or_default() += 1;
                self.samples.entry(code).or_insert(message);
            }
            ok => {
                self.misses += matches!(ok, Outcome::Miss) as u64;
                self.latency
                    .saturating_record(took.as_micros().clamp(1, MAX_MICROS as u128) as u64);
            }
        }
    }

    fn merge(&mut self, other: &Kind) {
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds");
        self.misses += other.misses;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        for (code, message) in &other.samples {
            self.samples
                .entry(code.clone())
                .or_insert_with(|| message.clone());
        }
    }

    /// Latency at quantile `q`, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        self.latency.mean() / 1000.0
    }
}

/// Measurements of one client, or of all merged.
pub struct Stats {
    pub reads: Kind,
    pub writes: Kind,
    /// When the last measured operation ended.
    pub last: Option<Instant>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            reads: Kind::new(),
            writes: Kind::new(),
            last: None,
        }
    }
}

impl Stats {
    pub fn record(&mut self, write: bool, outcome: Outcome, took: Duration, at: Instant) {
        let kind = if write {
            &mut self.writes
        } else {
            &mut self.reads
        };
        kind.record(outcome, took);
        self.last = self.last.max(Some(at));
    }

    pub fn merge(&mut self, other: &Stats) {
        self.reads.merge(&other.reads);
        self.writes.merge(&other.writes);
        self.last = self.last.max(other.last);
    }

    /// Successful operations.
    pub fn ok(&self) -> u64 {
        self.reads.ok() + self.writes.ok()
    }

    pub fn error_count(&self) -> u64 {
        self.reads.error_count() + self.writes.error_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_counts_and_latencies() {
        let now = Instant::now();
        let mut a = Stats::default();
        a.record(false, Outcome::Ok, Duration::from_micros(500), now);
        a.record(false, Outcome::Miss, Duration::from_micros(1500), now);
        let mut b = Stats::default();
        b.record(true, Outcome::Ok, Duration::from_millis(2), now);
        b.record(
            true,
            Outcome::Err("Unavailable".into(), "down".into()),
            Duration::from_millis(9),
            now,
        );
        a.merge(&b);
        assert_eq!((a.ok(), a.error_count(), a.reads.misses), (3, 1, 1));
        assert!((a.reads.max_ms() - 1.5).abs() < 0.01);
        assert!((a.writes.quantile_ms(0.5) - 2.0).abs() < 0.01);
    }
}
