//! The store's clock: real monotonic time, judged where safety depends on it.
//!
//! Ticks schedule work (heartbeats, elections, timeouts, balance). They are not a clock:
//! a process that is frozen (`SIGSTOP`), starved of CPU or paused in a VM executes no
//! ticks while other nodes' time runs on. Everything that protects safety by waiting — a
//! leader's lease, a node's store-liveness support for another, the no-vote window after
//! a restart or after a replica replaced an uninitialized one — is therefore stamped and
//! judged against a [`Clock`] read at the moment it is used (`lease.rs` says what each
//! proof assumes of it).
//!
//! [`MonotonicClock`] reads `Instant` (the OS's monotonic clock); the deterministic
//! harness gives each store a [`ManualClock`] that it advances by one tick interval per
//! tick, so a test can stall a store (its clock runs, it executes nothing) or let a
//! clock run slow or stand still. [`SkewedClock`] runs a clock at a different rate, for
//! fault injection in multi-process tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Monotonic time since an arbitrary origin fixed when the clock was made.
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since the clock's origin; never decreases.
    fn now(&self) -> Duration;
}

/// The OS's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> MonotonicClock {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to (the deterministic harness).
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// The OS's monotonic clock running at `rate` times real speed (1.0: real time), for
/// injecting clock drift into a real process. A rate far from 1 breaks the bound that
/// `max_clock_offset_ticks` promises (`lease.rs`): that is what it is for.
#[derive(Debug, Clone, Copy)]
pub struct SkewedClock {
    origin: Instant,
    rate: f64,
}

impl SkewedClock {
    pub fn new(rate: f64) -> SkewedClock {
        SkewedClock {
            origin: Instant::now(),
            rate: rate.max(0.0),
        }
    }
}

impl Clock for SkewedClock {
    fn now(&self) -> Duration {
        self.origin.elapsed().mul_f64(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new();
        assert_eq!(c.now(), Duration::ZERO);
        c.advance(Duration::from_millis(100));
        c.advance(Duration::from_millis(50));
        assert_eq!(c.now(), Duration::from_millis(150));
    }

    #[test]
    fn a_skewed_clock_runs_at_its_rate() {
        let fast = SkewedClock::new(1000.0);
        let real = Instant::now();
        while real.elapsed() < Duration::from_millis(2) {}
        assert!(
            fast.now() >= Duration::from_millis(1000),
            "a thousand times 2 ms is at least 1 s"
        );
    }
}
