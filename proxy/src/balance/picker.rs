//! One server's picking state on one shard, and the pick itself: the candidates are found
//! once ([`Candidates`]), then the strategy in force chooses among them.

use std::time::Instant;

use super::panic::{self, Mode};
use super::selection::{Candidates, LeastLatency, Random, Rng, RoundRobin, Selection, Weighted};
use super::{ReplicaStats, Strategy};

/// Per-shard picking state: the round-robin turn and a small PRNG.
#[derive(Debug)]
pub struct Picker {
    round_robin: RoundRobin,
    rng: Rng,
}

impl Default for Picker {
    fn default() -> Self {
        Picker {
            round_robin: RoundRobin::default(),
            rng: Rng::from_entropy(),
        }
    }
}

impl Picker {
    /// A picker with a fixed seed, for tests and benchmarks.
    pub fn seeded(seed: u64) -> Picker {
        Picker {
            round_robin: RoundRobin::default(),
            rng: Rng::seeded(seed),
        }
    }

    /// Picks a replica for new work, skipping `exclude`: among those available, or under the
    /// panic rule among all that may be tried ([`panic`]).
    pub fn pick(
        &self,
        strategy: Strategy,
        replicas: &[ReplicaStats],
        exclude: Option<usize>,
        now: Instant,
    ) -> Option<usize> {
        let mode = Mode::of(replicas, now);
        self.pick_in(mode, strategy, replicas, exclude, now)
    }

    /// [`pick`](Self::pick) in a `mode` the caller already worked out.
    pub fn pick_in(
        &self,
        mode: panic::Mode,
        strategy: Strategy,
        replicas: &[ReplicaStats],
        exclude: Option<usize>,
        now: Instant,
    ) -> Option<usize> {
        let candidates = Candidates::new(replicas, mode, exclude, now);
        if candidates.is_empty() {
            return None;
        }
        let rng = &self.rng;
        match strategy {
            Strategy::LeastLatency => LeastLatency.select(&candidates, rng),
            Strategy::RoundRobin => self.round_robin.select(&candidates, rng),
            Strategy::Weighted => Weighted.select(&candidates, rng),
            Strategy::Random => Random.select(&candidates, rng),
        }
    }
}
