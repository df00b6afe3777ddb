//! Replica statistics of the whole proxy: gathered from every shard ([`gather`]) and added up
//! by one rule ([`merge`]). The admin API's replica routes and the proxy's fleet tools and
//! resources both read them from here, so they show the same figures.
//!
//! Each shard keeps its own statistics of each replica (`balance::ReplicaStats` in its
//! `UpstreamClient`) and its own latency histogram of it; nothing is shared or locked. Each
//! other shard is asked for its figures over the mesh ([`Mesh::ask`]), the histogram sent as
//! (value, count) pairs that rebuild it exactly.

use std::rc::Rc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{strategy_label, ASK_TIMEOUT};
use crate::balance::ReplicaSnapshot;
use crate::metrics::latency::{self, Quantiles};
use crate::shard::{Mesh, Shard};
use crate::upstream::table::ShardUpstreams;
use crate::upstream::Upstream;

/// One server on one shard.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerFigures {
    /// Registry index.
    pub index: usize,
    /// Name.
    pub name: String,
    /// Strategy in force on this shard.
    pub strategy: String,
    /// HTTP replicas (stdio servers list none: their children are bound round robin).
    pub replicas: Vec<ReplicaFigures>,
}

/// One replica on one shard.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReplicaFigures {
    /// Its URL.
    pub url: String,
    /// Its statistics.
    pub stats: ReplicaSnapshot,
    /// Upstream latency of the client requests it answered (request to response head), as
    /// the (µs, count) pairs of the shard's histogram (`metrics::latency::to_counts`).
    pub latency: Vec<(u64, u64)>,
}

/// This shard's figures of every live server, or of server `only`.
pub fn local(shard: &Shard, only: Option<usize>) -> Vec<ServerFigures> {
    let now = Instant::now();
    let registry = shard.registry();
    registry
        .live()
        .filter(|(i, _)| only.is_none_or(|o| o == *i))
        .filter_map(|(i, e)| {
            let upstream = shard.upstreams().get(i)?;
            let (strategy, replicas) = match &*upstream {
                Upstream::Http(c) => (
                    strategy_label(c.balancer.strategy()),
                    (0..c.replica_count())
                        .map(|r| ReplicaFigures {
                            url: c.replica_url(r),
                            stats: c.balancer.stats[r].snapshot(now),
                            latency: latency::to_counts(&c.replica_latency(r)),
                        })
                        .collect(),
                ),
                Upstream::Stdio { .. } => ("round_robin", Vec::new()),
            };
            Some(ServerFigures {
                index: i,
                name: e.config.name.clone(),
                strategy: strategy.to_owned(),
                replicas,
            })
        })
        .collect()
}

/// Every shard's figures, as [`gather`] found them.
#[derive(Debug, Default)]
pub struct Gathered {
    /// The figures of each shard that answered, this shard's first.
    pub shards: Vec<Vec<ServerFigures>>,
    /// Shards that did not answer in time.
    pub missing: Vec<usize>,
}

impl Gathered {
    /// Server `index` on each shard that answered and knows it.
    pub fn server(&self, index: usize) -> Vec<&ServerFigures> {
        self.shards
            .iter()
            .filter_map(|f| f.iter().find(|s| s.index == index))
            .collect()
    }
}

/// Every shard's figures of every live server (or of server `only`), this shard's first; a
/// shard that does not answer in time is left out and named in [`Gathered::missing`].
pub async fn gather(shard: &Rc<Shard>, only: Option<usize>) -> Gathered {
    let mut gathered = Gathered {
        shards: vec![local(shard, only)],
        missing: Vec::new(),
    };
    for peer in (0..shard.nr_shards).filter(|p| *p != shard.id) {
        let work = move |owner: Rc<Shard>| async move { local(&owner, only) };
        match Mesh::ask(shard, peer, ASK_TIMEOUT, work).await {
            Some(f) => gathered.shards.push(f),
            None => gathered.missing.push(peer),
        }
    }
    gathered
}

/// One replica, its shards' figures added up.
#[derive(Clone, Debug, Default)]
pub struct ReplicaTotals {
    /// Shards whose figures were added.
    pub shards: usize,
    /// Of those, shards whose health checks say it is up.
    pub healthy_shards: usize,
    /// Its weight, as the last shard has it.
    pub weight: u32,
    /// Draining on any shard.
    pub drain: bool,
    /// Times the balancer chose it.
    pub picks: u64,
    /// Client requests sent to it that ended (each attempt).
    pub requests: u64,
    /// Client requests it did not answer.
    pub failures: u64,
    /// HTTP exchanges with it other than health checks.
    pub exchanges: u64,
    /// Exchanges that failed.
    pub failed_exchanges: u64,
    /// Health checks that ended.
    pub probes: u64,
    /// Health checks that failed.
    pub failed_probes: u64,
    /// Requests in flight on it.
    pub inflight: u64,
    /// Most failed requests in a row on any shard.
    pub consecutive_failures: u32,
    /// Longest remaining ejection on any shard, ms (0: circuit closed everywhere).
    pub ejected_for_ms: u64,
    /// Latency average (EWMA) in µs over the shards that measured it, weighted by exchanges.
    pub ewma_us: Option<f64>,
    /// The newest failure any shard saw: how long ago (ms) and its message.
    pub last_error: Option<(u64, String)>,
    /// Upstream latency of the client requests it answered, every shard's histogram merged.
    pub latency: Quantiles,
}

/// Adds up one replica's figures from each shard that has it.
pub fn merge(seen: &[&ReplicaFigures]) -> ReplicaTotals {
    let mut t = ReplicaTotals {
        shards: seen.len(),
        ..ReplicaTotals::default()
    };
    let mut histogram = None;
    let (mut weighted, mut weight_sum) = (0.0, 0.0);
    for f in seen {
        let s = &f.stats;
        t.weight = s.weight;
        t.drain |= s.drain;
        t.healthy_shards += usize::from(s.healthy);
        t.picks += s.picks;
        t.requests += s.requests;
        t.failures += s.failures;
        t.exchanges += s.exchanges;
        t.failed_exchanges += s.failed_exchanges;
        t.probes += s.probes;
        t.failed_probes += s.failed_probes;
        t.inflight += u64::from(s.inflight);
        t.consecutive_failures = t.consecutive_failures.max(s.consecutive_failures);
        t.ejected_for_ms = t.ejected_for_ms.max(s.ejected_for_ms);
        if let Some(e) = s.ewma_us {
            // Each shard's EWMA sums up the latencies that shard saw. The fleet's average is
            // the one per exchange, so a shard counts as much as the exchanges behind its
            // figure: a shard that sent one request must not weigh as much as one that sent
            // thousands (a plain mean of the shards' averages would let it). A shard with a
            // figure but no exchange counted still counts once.
            let w = (s.exchanges as f64).max(1.0);
            weighted += e * w;
            weight_sum += w;
        }
        if let (Some(msg), Some(ago)) = (&s.last_error, s.last_error_ago_ms) {
            if t.last_error.as_ref().is_none_or(|(a, _)| ago < *a) {
                t.last_error = Some((ago, msg.clone()));
            }
        }
        latency::add_into(&mut histogram, &latency::from_counts(&f.latency));
    }
    t.ewma_us = (weight_sum > 0.0).then(|| weighted / weight_sum);
    t.latency = Quantiles::of(&histogram);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(ewma_us: Option<f64>, exchanges: u64) -> ReplicaFigures {
        ReplicaFigures {
            url: "http://r/mcp".into(),
            stats: ReplicaSnapshot {
                weight: 1,
                healthy: true,
                exchanges,
                ewma_us,
                ..ReplicaSnapshot::default()
            },
            latency: Vec::new(),
        }
    }

    #[test]
    fn the_latency_average_weighs_each_shard_by_its_exchanges() {
        // One request at 1 ms on one shard, three at 3 ms on the other: 2.5 ms per exchange.
        let (a, b) = (figures(Some(1000.0), 1), figures(Some(3000.0), 3));
        assert_eq!(merge(&[&a, &b]).ewma_us, Some(2500.0));
        // A shard that never measured it does not pull the average down.
        let c = figures(None, 0);
        assert_eq!(merge(&[&a, &c]).ewma_us, Some(1000.0));
        assert_eq!(merge(&[&c]).ewma_us, None);
    }

    #[test]
    fn histograms_of_every_shard_are_merged() {
        let mut a = figures(None, 0);
        let mut b = figures(None, 0);
        a.latency = vec![(1000, 2)];
        b.latency = vec![(5000, 1)];
        let t = merge(&[&a, &b]);
        assert_eq!(t.latency.count, 3);
        assert!(
            t.latency.max >= 5000 && t.latency.p50 < 5000,
            "{:?}",
            t.latency
        );
    }

    #[test]
    fn the_newest_failure_is_kept() {
        let mut a = figures(None, 0);
        let mut b = figures(None, 0);
        a.stats.last_error = Some("old".into());
        a.stats.last_error_ago_ms = Some(900);
        b.stats.last_error = Some("new".into());
        b.stats.last_error_ago_ms = Some(10);
        assert_eq!(merge(&[&a, &b]).last_error, Some((10, "new".to_owned())));
    }
}
