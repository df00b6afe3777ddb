//! Choosing among the replicas that may take new work: one file per strategy, each a
//! [`Selection`] over the same [`Candidates`].
//!
//! - [`least_latency`]: power of two choices on latency × load.
//! - [`round_robin`]: each candidate in turn.
//! - [`weighted`]: at random, in proportion to the weights.
//! - [`random`]: at random, evenly.
//!
//! Which replicas are candidates (the panic rule, the replica a retry moves off) is decided
//! once, in [`Candidates::new`], so no strategy can forget it; a strategy only chooses.
//! Nothing here allocates: candidates are found by scanning the replicas, never collected.

pub mod least_latency;
pub mod random;
pub mod round_robin;
pub mod weighted;

use std::cell::Cell;
use std::time::Instant;

pub use least_latency::LeastLatency;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted::Weighted;

use super::panic::Mode;
use super::ReplicaStats;

/// One way of choosing a replica among the candidates.
pub trait Selection {
    /// The index (into all replicas) of one of `candidates`, which is not empty; draws what
    /// it needs at random from `rng`.
    fn select(&self, candidates: &Candidates<'_>, rng: &Rng) -> Option<usize>;
}

/// The replicas a pick may return at `now`: those `mode` lets take new work, less `exclude`
/// (the replica a retry moves off).
pub struct Candidates<'a> {
    replicas: &'a [ReplicaStats],
    mode: Mode,
    exclude: Option<usize>,
    now: Instant,
    count: usize,
}

impl<'a> Candidates<'a> {
    /// The candidates among `replicas`.
    pub fn new(
        replicas: &'a [ReplicaStats],
        mode: Mode,
        exclude: Option<usize>,
        now: Instant,
    ) -> Candidates<'a> {
        let mut candidates = Candidates {
            replicas,
            mode,
            exclude,
            now,
            count: 0,
        };
        candidates.count = candidates.iter().count();
        candidates
    }

    /// True when replica `i` is a candidate.
    pub fn contains(&self, i: usize) -> bool {
        Some(i) != self.exclude
            && self
                .replicas
                .get(i)
                .is_some_and(|r| self.mode.takes_new_work(r, self.now))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Their indices, in replica order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.replicas.len()).filter(|i| self.contains(*i))
    }

    /// The index of the `n`-th candidate (from 0).
    pub fn nth(&self, n: usize) -> Option<usize> {
        self.iter().nth(n)
    }

    /// Every replica, candidate or not (a strategy may compare with the others).
    pub fn replicas(&self) -> &'a [ReplicaStats] {
        self.replicas
    }

    /// When the pick happens.
    pub fn now(&self) -> Instant {
        self.now
    }
}

/// A small per-shard PRNG (xorshift64*): a statistically decent draw without a dependency
/// or a syscall.
#[derive(Debug)]
pub struct Rng(Cell<u64>);

impl Rng {
    /// Seeded from the OS.
    pub fn from_entropy() -> Rng {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Rng::seeded(u64::from_le_bytes(seed))
    }

    /// With a fixed seed, for tests and benchmarks.
    pub fn seeded(seed: u64) -> Rng {
        Rng(Cell::new(seed | 1))
    }

    /// A number in `0..below` (`below` > 0).
    pub fn below(&self, below: usize) -> usize {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % below as u64) as usize
    }
}
