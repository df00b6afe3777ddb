//! What each layer keeps on a shard and hears from it, put together when the shard is built.
//!
//! The shard context knows none of these layers; this is the one place that names them all.
//! Hook order matters: the upstreams follow a new registry or catalog before the sessions
//! are told, so a session that reacts at once finds its servers.

use std::rc::{Rc, Weak};
use std::sync::Arc;

use crate::config::Config;
use crate::discovery;
use crate::mcp::{bridge, session};
use crate::orchestration;
use crate::shard::{Shard, Wiring};
use crate::upstream::table::{self, Upstreams};

/// The locals and hooks of shard `id` (`this` is the shard being built).
pub fn shard_wiring(this: &Weak<Shard>, id: usize, config: &Arc<Config>) -> Wiring {
    let mut wiring = Wiring::default();
    wiring
        .local(Upstreams::for_config(this, id, config))
        .on_registry(Box::new(table::follow_registry))
        .on_catalog(Box::new(table::follow_catalog))
        .local(session::Sessions::new(config))
        .local(session::local::directory())
        .local(bridge::BridgeSessions::default())
        .on_catalog(Box::new(session::local::follow_catalog))
        .local(orchestration::OrchestrationState::new(config))
        .on_catalog(Box::new(orchestration::follow_catalog))
        .local(discovery::Running::default())
        .local(crate::endpoint::member_forward::MemberLinks::new(config));
    wiring
}

/// Builds shard `id` with every layer's locals and hooks.
pub fn build_shard(
    id: usize,
    nr_shards: usize,
    config: Arc<Config>,
    mesh: crate::shard::Mesh,
) -> Rc<Shard> {
    let wiring_config = config.clone();
    Shard::new(id, nr_shards, config, mesh, move |this| {
        shard_wiring(this, id, &wiring_config)
    })
}
