//! At random, evenly.

use super::{Candidates, Rng, Selection};

/// Any candidate, each as likely.
#[derive(Debug, Default, Clone, Copy)]
pub struct Random;

impl Selection for Random {
    fn select(&self, candidates: &Candidates<'_>, rng: &Rng) -> Option<usize> {
        candidates.nth(rng.below(candidates.len()))
    }
}
