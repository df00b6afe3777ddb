//! The children of a stdio server (`replicas = N`): sessions spread in turn.
//!
//! A child serves its sessions one message at a time and keeps no statistics here (it is
//! neither health checked nor ejected: its link restarts it), so spreading sessions evenly is
//! what balances them.

use super::selection::RoundRobin;

/// One stdio server's children, as one shard binds sessions to them.
#[derive(Debug)]
pub struct Children {
    count: usize,
    turns: RoundRobin,
}

impl Children {
    /// `count` children (at least one).
    pub fn new(count: usize) -> Children {
        Children {
            count: count.max(1),
            turns: RoundRobin::default(),
        }
    }

    /// How many children there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The child a new client session is bound to at `initialize` (kept in its sealed id);
    /// `None` when there is only one, so there is nothing to keep.
    pub fn bind(&self) -> Option<usize> {
        (self.count > 1).then(|| self.turns.turn() % self.count)
    }

    /// The child a session's handle talks to: its binding, or, for a session bound to none,
    /// the next turn. A bound session does not move the turn, or every bound session would
    /// also move it and a shard would hand every session the same child.
    pub fn serving(&self, bound: Option<usize>) -> usize {
        bound.unwrap_or_else(|| self.turns.turn()) % self.count
    }
}
