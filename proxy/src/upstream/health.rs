//! Active health checks: each shard pings every replica of every HTTP server on its own.
//!
//! A shard's view of a replica is its own (like its latency statistics), so no health state
//! crosses cores. A replica is marked unhealthy after `failover_threshold` missed checks in a
//! row and healthy again after [`RECOVERY_CHECKS`] good ones; sessions bound to an unhealthy
//! replica move to another on their next request, unless too few replicas are left for that
//! (the balancer's panic rule, `balance::panic`). Shard 0 logs the changes.

use std::cell::Cell;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::shard::Shard;
use crate::upstream::table::ShardUpstreams;
use crate::upstream::{Upstream, UpstreamClient};

/// Good checks in a row that bring an unhealthy replica back.
pub const RECOVERY_CHECKS: u32 = 2;

thread_local! {
    /// Whether this shard's checks run; until then servers installed are picked up by
    /// [`start`], after it by [`watch`].
    static STARTED: Cell<bool> = const { Cell::new(false) };
}

/// Starts the checks of every HTTP server of `shard`.
pub fn start(shard: &Rc<Shard>) {
    STARTED.with(|s| s.set(true));
    for index in 0..shard.upstreams().len() {
        if let Some(upstream) = shard.upstreams().get(index) {
            spawn_checks(shard, &upstream);
        }
    }
}

/// Starts the checks of an upstream installed while the proxy runs (a server added or
/// replaced through the live registry). The checks of the upstream it replaces stop by
/// themselves: each check first makes sure its client is still the one in its slot.
pub fn watch(shard: &Rc<Shard>, upstream: &Upstream) {
    if STARTED.with(Cell::get) {
        spawn_checks(shard, upstream);
    }
}

fn spawn_checks(shard: &Rc<Shard>, upstream: &Upstream) {
    if let Upstream::Http(client) = upstream {
        for replica in 0..client.replica_count() {
            let (client, shard) = (client.clone(), Rc::downgrade(shard));
            glommio::spawn_local(check_forever(shard, client, replica)).detach();
        }
    }
}

/// True while `client` is what its shard uses for its server (not removed, not replaced).
fn current(shard: &Shard, client: &Rc<UpstreamClient>) -> bool {
    match shard.upstreams().get(client.index).as_deref() {
        Some(Upstream::Http(c)) => Rc::ptr_eq(c, client),
        _ => false,
    }
}

async fn check_forever(shard: Weak<Shard>, client: Rc<UpstreamClient>, replica: usize) {
    let interval = client.config.balance.health_check_interval;
    let threshold = client.config.balance.failover_threshold;
    let limit = interval
        .min(client.config.timeout)
        .max(Duration::from_millis(100));
    let (mut misses, mut hits) = (0u32, 0u32);
    if shard.upgrade().is_some_and(|s| s.id == 0) {
        crate::metrics::fleet::healthy(client.name(), &client.replica_url(replica), true);
    }
    loop {
        glommio::timer::sleep(interval).await;
        let Some(shard_id) = shard
            .upgrade()
            .filter(|s| current(s, &client))
            .map(|s| s.id)
        else {
            return;
        };
        if client.probe(replica, limit).await {
            misses = 0;
            hits += 1;
            if !healthy(&client, replica) && hits >= RECOVERY_CHECKS {
                client.balancer.set_healthy(replica, true);
                if shard_id == 0 {
                    crate::metrics::fleet::healthy(
                        client.name(),
                        &client.replica_url(replica),
                        true,
                    );
                    log::info!(
                        "replica {replica} of {} ({}) is healthy again",
                        client.name(),
                        client.replica_url(replica)
                    );
                }
            }
        } else {
            hits = 0;
            misses += 1;
            if healthy(&client, replica) && misses >= threshold {
                client.balancer.set_healthy(replica, false);
                if shard_id == 0 {
                    crate::metrics::fleet::healthy(
                        client.name(),
                        &client.replica_url(replica),
                        false,
                    );
                    log::warn!(
                        "replica {replica} of {} ({}) is unhealthy: {misses} health checks missed",
                        client.name(),
                        client.replica_url(replica)
                    );
                }
            }
        }
    }
}

/// The health checks' last verdict on `replica` of `client`.
fn healthy(client: &UpstreamClient, replica: usize) -> bool {
    client
        .balancer
        .stats
        .get(replica)
        .is_some_and(|s| s.healthy.get())
}
