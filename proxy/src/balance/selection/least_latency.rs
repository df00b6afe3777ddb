//! Power of two choices on cost = latency average × (requests in flight + 1).
//!
//! Two candidates are drawn at random and the cheaper one taken. Two random draws avoid the
//! herd that "always the best" causes when every shard sees the same best replica. Costs
//! within [`TIE_RATIO`] of each other are a tie, broken at random, so equal replicas share
//! work. A replica never measured costs the average of its measured peers (see
//! `ReplicaStats::cost`), and an average not refreshed decays, so a replica that looked slow
//! once is tried again later.

use super::{Candidates, Rng, Selection};
use crate::balance::stats::SEED_LATENCY_US;

/// Costs closer than this ratio count as a tie, broken at random, so equal replicas share work.
const TIE_RATIO: f64 = 1.25;

/// The cheaper of two candidates drawn at random.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastLatency;

impl Selection for LeastLatency {
    fn select(&self, candidates: &Candidates<'_>, rng: &Rng) -> Option<usize> {
        let count = candidates.len();
        let first = rng.below(count);
        let a = candidates.nth(first)?;
        if count == 1 {
            return Some(a);
        }
        // A second draw among the others: skip a's position.
        let mut second = rng.below(count - 1);
        if second >= first {
            second += 1;
        }
        let b = candidates.nth(second)?;
        let replicas = candidates.replicas();
        let (sum, measured) = replicas
            .iter()
            .filter(|r| r.measured())
            .fold((0.0, 0u32), |(sum, n), r| (sum + r.latency_us(), n + 1));
        let unmeasured = if measured == 0 {
            SEED_LATENCY_US
        } else {
            sum / f64::from(measured)
        };
        let now = candidates.now();
        let (ca, cb) = (
            replicas[a].cost(now, unmeasured),
            replicas[b].cost(now, unmeasured),
        );
        if ca.max(cb) <= ca.min(cb) * TIE_RATIO {
            return Some(if rng.below(2) == 0 { a } else { b });
        }
        Some(if cb < ca { b } else { a })
    }
}
