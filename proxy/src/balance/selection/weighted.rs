//! At random, in proportion to the weights (`weight` of each replica, at least 1).

use super::{Candidates, Rng, Selection};

/// A candidate drawn with probability weight / sum of the candidates' weights.
#[derive(Debug, Default, Clone, Copy)]
pub struct Weighted;

impl Selection for Weighted {
    fn select(&self, candidates: &Candidates<'_>, rng: &Rng) -> Option<usize> {
        let replicas = candidates.replicas();
        let weight = |i: usize| u64::from(replicas[i].weight.get());
        let total: u64 = candidates.iter().map(weight).sum();
        let mut point = rng.below(total as usize) as u64;
        candidates.iter().find(|i| {
            let w = weight(*i);
            if point < w {
                true
            } else {
                point -= w;
                false
            }
        })
    }
}
