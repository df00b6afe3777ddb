//! The upstream servers and what they offer.
//!
//! - [`catalog`]: an immutable snapshot of every server's tools, prompts and resources under
//!   their exposed (namespaced) names. Shard 0 builds it; every shard holds an `Arc` of it.
//! - [`discovery`]: shard 0's task that lists each server, retries the ones that are down and
//!   re-lists a server when it says its lists changed.
//! - [`live`]: the set of servers as it changes at run time (admin API, reload), persisted in
//!   the state directory.

pub mod catalog;
pub mod discovery;
pub mod live;

pub use catalog::{Catalog, ServerIdentity, ServerListing, ServerStatus};
