//! Which key an operation touches, and the bytes of that key.
//!
//! Keys are numbered `0..keys`. Key `i` is `key_size` bytes: for uniform and zipfian, two
//! bytes of a hash of `i` and then `i` in zero-padded decimal, so that consecutive
//! indexes land all over the key space (and over ranges pre-split on the first two
//! bytes); for sequential, `i` in zero-padded decimal alone, so that key order is index
//! order and writes append at the end of the key space.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::SmallRng;
use rand::Rng;

use super::args::Distribution;

/// Bytes of hash in front of a spread key.
const PREFIX: usize = 2;

/// How keys are spelled.
#[derive(Clone, Copy, Debug)]
pub struct KeySpace {
    size: usize,
    hashed: bool,
}

impl KeySpace {
    /// Keys of `size` bytes for `keys` indexes; `hashed` spreads them (see the module doc).
    pub fn new(size: usize, keys: u64, hashed: bool) -> Result<KeySpace, String> {
        let need = decimal_digits(keys - 1) + if hashed { PREFIX } else { 0 };
        if size < need {
            return Err(format!(
                "--key-size {size} is too small for {keys} distinct keys (need {need})"
            ));
        }
        Ok(KeySpace { size, hashed })
    }

    /// The key of index `i`. (Sequential indexes past 10^key_size wrap around.)
    pub fn key(&self, i: u64) -> Vec<u8> {
        let mut k = vec![0u8; self.size];
        let digits = if self.hashed {
            k[..PREFIX].copy_from_slice(&((splitmix64(i) >> 48) as u16).to_be_bytes());
            &mut k[PREFIX..]
        } else {
            &mut k[..]
        };
        put_decimal(digits, i);
        k
    }
}

/// Writes `v` in decimal, zero-padded on the left to fill `out` (keeping the low digits).
fn put_decimal(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

fn decimal_digits(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// A well-mixing 64-bit hash (the splitmix64 finaliser).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over the 8 little-endian bytes of `v`, as YCSB scrambles zipfian ranks.
pub fn fnv64(mut v: u64) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for _ in 0..8 {
        h ^= v & 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
        v >>= 8;
    }
    h
}

/// YCSB's zipfian generator (Gray et al., "Quickly generating billion-record synthetic
/// databases"): rank 0 is the most popular, P(rank k) ∝ 1 / (k+1)^theta.
#[derive(Clone, Copy, Debug)]
pub struct Zipfian {
    n: u64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl Zipfian {
    /// Ranks `0..n`; `theta` in (0, 1).
    pub fn new(n: u64, theta: f64) -> Zipfian {
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2, theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipfian {
            n,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
            half_pow_theta: 0.5f64.powf(theta),
        }
    }

    /// The rank for a uniform draw `u` in [0, 1).
    pub fn rank(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1.min(self.n - 1);
        }
        let r = self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (r as u64).min(self.n - 1)
    }
}

/// Σ_{i=1..n} 1/i^theta: summed exactly up to a million terms, the rest by the integral
/// with the trapezoid correction (relative error far below 1e-9 there).
fn zeta(n: u64, theta: f64) -> f64 {
    const EXACT: u64 = 1_000_000;
    let m = n.min(EXACT);
    let head: f64 = (1..=m).map(|i| (i as f64).powf(-theta)).sum();
    if n == m {
        return head;
    }
    let (nf, mf) = (n as f64, m as f64);
    let integral = (nf.powf(1.0 - theta) - mf.powf(1.0 - theta)) / (1.0 - theta);
    head + integral + (nf.powf(-theta) - mf.powf(-theta)) / 2.0
}

/// Picks the index of each operation's key.
#[derive(Debug)]
pub struct Chooser {
    kind: Distribution,
    keys: u64,
    zipf: Option<Zipfian>,
    /// Sequential: the next index to write (so also how many were handed out).
    next: AtomicU64,
}

impl Chooser {
    pub fn new(kind: Distribution, keys: u64, theta: f64) -> Chooser {
        let zipf = (kind == Distribution::Zipfian).then(|| Zipfian::new(keys, theta));
        Chooser {
            kind,
            keys,
            zipf,
            next: AtomicU64::new(0),
        }
    }

    /// Sequential: the next write goes to index `next` (after a preload of `0..next`).
    pub fn set_next(&self, next: u64) {
        self.next.store(next, Ordering::Relaxed);
    }

    /// The index a read or a write touches.
    pub fn pick(&self, rng: &mut SmallRng, write: bool) -> u64 {
        match self.kind {
            Distribution::Uniform => rng.gen_range(0..self.keys),
            Distribution::Zipfian => {
                let rank = self
                    .zipf
                    .as_ref()
                    .expect("zipfian chooser")
                    .rank(rng.gen::<f64>());
                fnv64(rank) % self.keys
            }
            Distribution::Sequential if write => self.next.fetch_add(1, Ordering::Relaxed),
            Distribution::Sequential => {
                let written = self.next.load(Ordering::Relaxed);
                let window = written.min(self.keys);
                if window == 0 {
                    return 0;
                }
                written - 1 - rng.gen_range(0..window)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn spread_keys_are_distinct_and_sized() {
        let ks = KeySpace::new(8, 1_000_000, true).unwrap();
        let keys: std::collections::HashSet<_> = (0..1_000_000).map(|i| ks.key(i)).collect();
        assert_eq!(keys.len(), 1_000_000);
        assert!(keys.iter().all(|k| k.len() == 8));
        assert!(KeySpace::new(7, 1_000_000, true).is_err());
        assert_eq!(&ks.key(42)[2..], b"000042");
    }

    #[test]
    fn sequential_keys_sort_by_index() {
        let ks = KeySpace::new(10, 1000, false).unwrap();
        assert!((0..5000).all(|i| ks.key(i) < ks.key(i + 1)));
        assert_eq!(ks.key(7), b"0000000007");
    }

    #[test]
    fn zeta_tail_matches_exact_sum() {
        let exact: f64 = (1..=3_000_000u64).map(|i| (i as f64).powf(-0.99)).sum();
        assert!((zeta(3_000_000, 0.99) - exact).abs() / exact < 1e-9);
    }

    /// Ranks 0 and 1 are exact; beyond, Gray's generator follows the law in aggregate (it
    /// over-weights rank 2 by about 15% at n = 1000), so the test checks cumulative shares.
    #[test]
    fn zipfian_follows_the_law() {
        let (n, theta) = (1000u64, 0.99);
        let z = Zipfian::new(n, theta);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0u64; n as usize];
        let draws = 2_000_000;
        for _ in 0..draws {
            counts[z.rank(rng.gen()) as usize] += 1;
        }
        let zn = zeta(n, theta);
        for k in [1usize, 2, 10, 100, 500] {
            let expect = draws as f64 * zeta(k as u64, theta) / zn;
            let got = counts[..k].iter().sum::<u64>() as f64;
            assert!(
                (got - expect).abs() / expect < 0.05,
                "ranks below {k}: {got} vs {expect}"
            );
        }
    }

    #[test]
    fn sequential_reads_recent_writes() {
        let c = Chooser::new(Distribution::Sequential, 10, 0.0);
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(c.pick(&mut rng, false), 0);
        c.set_next(100);
        assert_eq!(c.pick(&mut rng, true), 100);
        assert!((0..1000).all(|_| (91..=100).contains(&c.pick(&mut rng, false))));
    }
}
