//! Per-replica admin routes: list and show the replicas of a server with each one's state and
//! statistics, drain and enable one replica.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /api/v1/servers/{name}/replicas` | the server and every replica |
//! | `GET /api/v1/servers/{name}/replicas/{i}` | one replica |
//! | `POST /api/v1/servers/{name}/replicas/{i}/drain` | drain it (live, every shard, persisted) |
//! | `POST /api/v1/servers/{name}/replicas/{i}/enable` | let it take new work again |
//!
//! Every shard keeps its own statistics of each replica (see [`crate::balance`]), so a list
//! asks every shard over the mesh and adds the answers up: counts are summed, a replica is
//! healthy when every shard's checks say so and ejected when any shard ejected it, latency
//! quantiles come from the shards' histograms merged. A shard that does not answer within
//! [`QUERY_LIMIT`] is left out and named in `shards_missing`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::api::{answer, error, refuse_unauthorized, registry_error, PREFIX};
use super::{servers, Response};
use crate::balance::ReplicaSnapshot;
use crate::config::{Strategy, Transport};
use crate::http::{Method, Request};
use crate::metrics::latency::{add_into, Quantiles};
use crate::registry::servers::Entry;
use crate::shard::Shard;
use crate::upstream::table::ShardUpstreams;
use crate::upstream::Upstream;

/// How long a list waits for each other shard's statistics.
pub const QUERY_LIMIT: Duration = Duration::from_secs(2);

/// One shard's view of one replica, sent to shard 0 for a list.
#[derive(Clone, Debug, Default)]
pub struct ReplicaReport {
    /// The balancer's statistics.
    pub stats: ReplicaSnapshot,
    /// Upstream latencies of client requests, in microseconds (the client's histogram: the
    /// same one the fleet views read).
    pub latency: Option<hdrhistogram::Histogram<u64>>,
}

/// This shard's view of every replica of server `server` (empty unless it is an HTTP server).
pub fn local_report(shard: &Shard, server: usize) -> Vec<ReplicaReport> {
    let Some(upstream) = shard.upstreams().get(server) else {
        return Vec::new();
    };
    let Upstream::Http(client) = &*upstream else {
        return Vec::new();
    };
    let now = Instant::now();
    client
        .stats
        .iter()
        .enumerate()
        .map(|(i, s)| ReplicaReport {
            stats: s.snapshot(now),
            latency: client.replica_latency(i),
        })
        .collect()
}

/// Answers the per-replica routes; `None` when `request` is for another route.
pub async fn route(shard: &Rc<Shard>, token: &str, request: &Request) -> Option<Response> {
    let path = request
        .path()
        .strip_prefix(PREFIX)?
        .trim_end_matches('/')
        .to_owned();
    let segments: Vec<&str> = path.split('/').collect();
    let (name, rest) = match segments.as_slice() {
        ["servers", name, "replicas", rest @ ..] => (*name, rest),
        _ => return None,
    };
    if let Some(refused) = refuse_unauthorized(token, request) {
        return Some(refused);
    }
    let get = request.method == Method::Get;
    let post = request.method == Method::Post;
    let response = match rest {
        [] if get => list(shard, name, None).await,
        [index] if get => match parse_index(shard, name, index) {
            Ok(i) => list(shard, name, Some(i)).await,
            Err(r) => r,
        },
        [index, action @ ("drain" | "enable")] if post => match parse_index(shard, name, index) {
            Ok(i) => {
                let drain = *action == "drain";
                match servers::set_replica_drain(shard, name, i, drain) {
                    Ok(_) => list(shard, name, Some(i)).await,
                    Err(e) => registry_error(&e),
                }
            }
            Err(r) => r,
        },
        [] | [_] => error(405, "method", format!("use GET on {}", request.path())),
        [_, "drain" | "enable"] => error(405, "method", format!("use POST on {}", request.path())),
        _ => error(
            404,
            "not_found",
            "no such route: use /api/v1/servers/NAME/replicas[/INDEX[/drain|/enable]]",
        ),
    };
    Some(response)
}

/// A replica index from the path: a number naming a replica the server has.
fn parse_index(shard: &Shard, name: &str, text: &str) -> Result<usize, Response> {
    let registry = shard.registry();
    let (_, entry) = registry.get(name).map_err(|e| registry_error(&e))?;
    let count = entry.replica_count();
    let Ok(index) = text.parse::<usize>() else {
        let range = if count > 0 {
            format!("0 to {}", count - 1)
        } else {
            "none (it is a stdio server)".to_owned()
        };
        return Err(error(
            400,
            "invalid",
            format!(
                "replica index \"{text}\" is not a number; server \"{name}\" has replicas {range}"
            ),
        ));
    };
    registry
        .check_replica(name, entry, index)
        .map_err(|e| registry_error(&e))?;
    Ok(index)
}

/// Server `name` and its replicas (or only replica `only`), with every shard's statistics.
async fn list(shard: &Rc<Shard>, name: &str, only: Option<usize>) -> Response {
    let registry = shard.registry();
    let (index, entry) = match registry.get(name) {
        Ok((i, e)) => (i, e.clone()),
        Err(e) => return registry_error(&e),
    };
    if let Err(e) = registry.check_replica(name, &entry, only.unwrap_or(0)) {
        return registry_error(&e);
    }
    // Every shard's view, this one's first; a shard that does not answer is named.
    let mut views = vec![local_report(shard, index)];
    let mut missing = Vec::new();
    for peer in (0..shard.nr_shards).filter(|p| *p != shard.id) {
        let work = move |owner: Rc<Shard>| async move { local_report(&owner, index) };
        match crate::shard::Mesh::ask(shard, peer, QUERY_LIMIT, work).await {
            Some(view) => views.push(view),
            None => missing.push(peer),
        }
    }
    let replicas: Vec<Value> = (0..entry.replica_count())
        .filter(|r| only.is_none_or(|o| o == *r))
        .map(|r| replica_json(&entry, r, &views))
        .collect();
    let mut body = json!({
        "server": entry.config.name,
        "index": index,
        "state": entry.state.label(),
        "strategy": strategy_name(&entry),
        "stateless": entry.config.balance.stateless,
        "shards": shard.nr_shards,
        "shards_missing": missing,
    });
    match only {
        Some(_) => {
            if let Some(one) = replicas.into_iter().next() {
                body["replica"] = one;
            }
        }
        None => body["replicas"] = replicas.into(),
    }
    answer(200, body)
}

fn strategy_name(entry: &Entry) -> &'static str {
    match entry.config.balance.strategy {
        Strategy::LeastLatency => "least_latency",
        Strategy::RoundRobin => "round_robin",
        Strategy::Weighted => "weighted",
        Strategy::Random => "random",
    }
}

/// One replica, its shards' views added up.
fn replica_json(entry: &Entry, replica: usize, views: &[Vec<ReplicaReport>]) -> Value {
    let config = match &entry.config.transport {
        Transport::Http { replicas, .. } => replicas.get(replica),
        Transport::Stdio(_) => None,
    };
    let mine: Vec<&ReplicaReport> = views.iter().filter_map(|v| v.get(replica)).collect();
    let sum = |f: fn(&ReplicaSnapshot) -> u64| mine.iter().map(|r| f(&r.stats)).sum::<u64>();
    let unhealthy = mine.iter().filter(|r| !r.stats.healthy).count();
    let ejected_for_ms = mine
        .iter()
        .map(|r| r.stats.ejected_for_ms)
        .filter(|ms| *ms > 0)
        .max();
    let measured: Vec<f64> = mine.iter().filter_map(|r| r.stats.ewma_us).collect();
    let ewma_ms = (!measured.is_empty())
        .then(|| measured.iter().sum::<f64>() / measured.len() as f64 / 1000.0);
    let mut latency = None;
    for r in &mine {
        add_into(&mut latency, &r.latency);
    }
    let q = Quantiles::of(&latency);
    // The newest failure any shard saw: what an operator asks first of a replica that is out.
    let last_error = mine
        .iter()
        .filter_map(|r| Some((r.stats.last_error_ago_ms?, r.stats.last_error.as_ref()?)))
        .min_by_key(|(ago, _)| *ago);
    let drained = entry.replica_drained(replica);
    let drained_by = match (drained, entry.replica_drain.get(&replica)) {
        (true, Some(_)) => json!("api"),
        (true, None) => json!("config"),
        (false, _) => Value::Null,
    };
    let status = if drained {
        "drained"
    } else if unhealthy > 0 && unhealthy == mine.len() {
        "unhealthy"
    } else if ejected_for_ms.is_some() {
        "ejected"
    } else if unhealthy > 0 {
        "degraded"
    } else {
        "active"
    };
    json!({
        "index": replica,
        "url": config.map(|c| c.url.to_string()),
        "weight": config.map(|c| c.weight),
        "status": status,
        "drain": drained,
        "drained_by": drained_by,
        "healthy": unhealthy == 0,
        "unhealthy_shards": unhealthy,
        "ejected": ejected_for_ms.is_some(),
        "ejected_for_ms": ejected_for_ms,
        "inflight": sum(|s| u64::from(s.inflight)),
        "picks": sum(|s| s.picks),
        "requests": sum(|s| s.requests),
        "errors": sum(|s| s.failures),
        "probes": sum(|s| s.probes),
        "probe_errors": sum(|s| s.failed_probes),
        "consecutive_failures": mine.iter().map(|r| r.stats.consecutive_failures).max().unwrap_or(0),
        "last_error": last_error.map(|(_, m)| m),
        "last_error_ago_ms": last_error.map(|(ago, _)| ago),
        "ewma_ms": ewma_ms.map(|v| (v * 1000.0).round() / 1000.0),
        "latency_us": {
            "count": q.count, "p50": q.p50, "p90": q.p90, "p99": q.p99, "p99_9": q.p999, "max": q.max,
        },
    })
}
