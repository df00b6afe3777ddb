//! The upstream servers and what they offer.
//!
//! - [`catalog`]: an immutable snapshot of every server's tools, prompts and resources under
//!   their exposed (namespaced) names. Shard 0 builds it; every shard holds an `Arc` of it.
//! - [`servers`]: the set of servers as it changes at run time (admin API, reload).
//! - [`state_file`]: what of it differs from the configuration, persisted in the state
//!   directory.
//! - [`follow`]: moving to a registry decided elsewhere (a fleet's shared one), indices kept.

pub mod catalog;
pub mod follow;
pub mod servers;
pub mod state_file;

pub use catalog::{Catalog, ServerIdentity, ServerListing, ServerStatus};
