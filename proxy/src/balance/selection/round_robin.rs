//! Each candidate in turn.

use std::cell::Cell;

use super::{Candidates, Rng, Selection};

/// The turn of the next pick; shared by every pick of one server on one shard.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: Cell<usize>,
}

impl RoundRobin {
    /// Takes the current turn and moves on to the next one.
    pub fn turn(&self) -> usize {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        n
    }
}

impl Selection for RoundRobin {
    fn select(&self, candidates: &Candidates<'_>, _: &Rng) -> Option<usize> {
        candidates.nth(self.turn() % candidates.len())
    }
}
