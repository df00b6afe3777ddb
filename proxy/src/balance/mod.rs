//! Choosing a replica, and what each shard knows about the replicas to choose.
//!
//! Nothing here knows about HTTP or MCP. Each shard keeps its own statistics for the replicas
//! of each server, so picking takes no lock and allocates nothing. [`Balancer`] is the one
//! place that decides which replica serves a request; everything else here is its parts.
//!
//! - [`balancer`]: one server's replicas on one shard: every decision (binding at
//!   `initialize`, opening and moving upstream sessions, retries, per-request picks for
//!   stateless servers) and the bookkeeping of each exchange's outcome.
//! - [`children`]: the children of a stdio server, sessions spread in turn.
//! - [`picker`]: the pick itself: candidates found once, the strategy in force chooses.
//! - [`selection`]: the strategies, one file each, behind the [`Selection`] trait.
//! - [`stats`]: one replica's latency average, load, counts and flags ([`ReplicaStats`]).
//! - [`circuit`]: ejection after failures in a row, half-open, closed by an answer; the pause
//!   a replica asks for.
//! - [`panic`]: when too few replicas are available, try them anyway.
//! - [`retry_budget`]: how many retries a shard may still spend on a server.

pub mod balancer;
pub mod children;
pub mod circuit;
pub mod panic;
pub mod picker;
pub mod retry_budget;
pub mod selection;
pub mod stats;

pub use crate::config::Strategy;
pub use balancer::{Balancer, InFlight, ReplicaSpec};
pub use children::Children;
pub use circuit::{Transition, HOLD_MAX};
pub use picker::Picker;
pub use retry_budget::RetryBudget;
pub use selection::{Candidates, Selection};
pub use stats::{ReplicaSnapshot, ReplicaStats, Traffic};

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
