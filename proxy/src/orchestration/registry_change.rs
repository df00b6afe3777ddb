//! Putting a new live registry in force, on shard 0: saved in the state directory first (when
//! there is one), then published to every shard, whose discovery and catalog follow. The
//! admin API's server changes and the balancing changes of `proxy__balance_load` both end
//! here, so "saved, then applied" holds for each of them.
//!
//! Saving is a small synchronous write and fsync: changes are rare, and doing it inline (no
//! await between computing the registry and publishing it) is what keeps two changes made on
//! the same thread from interleaving and losing one another.

use std::rc::Rc;
use std::sync::Arc;

use crate::discovery::ShardDiscovery;
use crate::registry::servers::{self, Registry, RegistryError};
use crate::shard::Shard;

/// Saves `next` and applies it everywhere.
pub fn commit(shard: &Rc<Shard>, next: Registry) -> Result<Arc<Registry>, RegistryError> {
    save(shard, &next)?;
    Ok(publish(shard, next))
}

/// Writes `next` to the state directory, if there is one, so it outlives a restart.
pub fn save(shard: &Shard, next: &Registry) -> Result<(), RegistryError> {
    match &shard.config.proxy.state_dir {
        Some(dir) => servers::save_state(dir, &next.state_doc()),
        None => Ok(()),
    }
}

/// Puts `next` in force on every shard (after [`save`]).
pub fn publish(shard: &Rc<Shard>, next: Registry) -> Arc<Registry> {
    let next = Arc::new(next);
    shard.publish_registry(next.clone());
    next
}
