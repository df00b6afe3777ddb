//! Active health checks: each shard pings every replica of every HTTP server on its own.
//!
//! A shard's view of a replica is its own (like its latency statistics), so no health state
//! crosses cores. A replica is marked unhealthy after `failover_threshold` missed checks in a
//! row and healthy again after [`RECOVERY_CHECKS`] good ones; sessions bound to an unhealthy
//! replica move to another on their next request. Shard 0 logs the changes.

use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::shard::Shard;
use crate::transport::upstream::{Upstream, UpstreamClient};

/// Good checks in a row that bring an unhealthy replica back.
pub const RECOVERY_CHECKS: u32 = 2;

/// Starts the checks of every HTTP server of `shard`.
pub fn start(shard: &Rc<Shard>) {
    for index in 0..shard.upstreams.len() {
        let Some(upstream) = shard.upstreams.get(index) else {
            continue;
        };
        if let Upstream::Http(client) = &*upstream {
            for replica in 0..client.replica_count() {
                let (client, shard) = (client.clone(), Rc::downgrade(shard));
                glommio::spawn_local(check_forever(shard, client, replica)).detach();
            }
        }
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
        let Some(shard_id) = shard.upgrade().map(|s| s.id) else {
            return;
        };
        let stats = &client.stats[replica];
        if client.probe(replica, limit).await {
            misses = 0;
            hits += 1;
            if !stats.healthy.get() && hits >= RECOVERY_CHECKS {
                stats.healthy.set(true);
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
            if stats.healthy.get() && misses >= threshold {
                stats.healthy.set(false);
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
