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
//! gathers every shard's and adds them up by the fleet's one rule
//! ([`crate::orchestration::fleet::replicas`], which the proxy's fleet tools read too):
//! counts are summed, a replica is healthy when every shard's checks say so and ejected when
//! any shard ejected it, latency quantiles come from the shards' histograms merged, the
//! latency average is weighted by each shard's exchanges. A shard that does not answer in
//! time is left out and named in `shards_missing`.

use std::rc::Rc;

use serde_json::{json, Value};

use super::api::{answer, error, refuse_unauthorized, registry_error, PREFIX};
use super::{servers, Response};
use crate::config::Transport;
use crate::http::{Method, Request};
use crate::orchestration::fleet::replicas::{self, ReplicaFigures};
use crate::orchestration::fleet::strategy_label;
use crate::registry::servers::Entry;
use crate::shard::Shard;

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
                match servers::set_replica_drain(shard, name, i, drain).await {
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
    if let (Transport::Stdio(cmd), None) = (&entry.config.transport, only) {
        return answer(200, stdio_json(shard, index, &entry, cmd));
    }
    if let Err(e) = registry.check_replica(name, &entry, only.unwrap_or(0)) {
        return registry_error(&e);
    }
    // Every shard's view, this one's first; a shard that does not answer is named.
    let gathered = replicas::gather(shard, Some(index)).await;
    let views = gathered.server(index);
    let replicas: Vec<Value> = (0..entry.replica_count())
        .filter(|r| only.is_none_or(|o| o == *r))
        .map(|r| {
            let seen: Vec<&ReplicaFigures> =
                views.iter().filter_map(|s| s.replicas.get(r)).collect();
            replica_json(&entry, r, &seen)
        })
        .collect();
    let mut body = json!({
        "server": entry.config.name,
        "index": index,
        "state": entry.state.label(),
        "strategy": strategy_label(entry.config.balance.strategy),
        "stateless": entry.config.balance.stateless,
        "shards": shard.nr_shards,
        "shards_missing": gathered.missing,
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

/// A stdio server's one program as its only replica: listed like an HTTP replica (status,
/// why it is down), but not drainable on its own, and the answer says so.
fn stdio_json(
    shard: &Shard,
    index: usize,
    entry: &Entry,
    cmd: &crate::config::StdioCommand,
) -> Value {
    let (status, why, _) = super::api::status_of(shard, index);
    let command = std::iter::once(cmd.command.as_str())
        .chain(cmd.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    json!({
        "server": entry.config.name,
        "index": index,
        "state": entry.state.label(),
        "transport": "stdio",
        "strategy": Value::Null,
        "shards": shard.nr_shards,
        "shards_missing": [],
        "drainable": false,
        "note": format!(
            "a stdio server runs one program, started per session: it cannot be drained one \
             replica at a time; `mcpctl servers drain {}` drains the whole server",
            entry.config.name
        ),
        "replicas": [{
            "index": 0,
            "url": Value::Null,
            "command": command,
            "status": status,
            "drain": entry.state == crate::registry::servers::ServerState::Draining,
            "healthy": status == "up",
            "last_error": why,
        }],
    })
}

/// One replica, its shards' views added up.
fn replica_json(entry: &Entry, replica: usize, seen: &[&ReplicaFigures]) -> Value {
    let config = match &entry.config.transport {
        Transport::Http { replicas, .. } => replicas.get(replica),
        Transport::Stdio(_) => None,
    };
    let t = replicas::merge(seen);
    let unhealthy = t.shards - t.healthy_shards;
    let ejected_for_ms = (t.ejected_for_ms > 0).then_some(t.ejected_for_ms);
    let ewma_ms = t.ewma_us.map(|us| us / 1000.0);
    let q = t.latency;
    // The newest failure any shard saw: what an operator asks first of a replica that is out.
    let last_error = t.last_error.as_ref();
    let drained = entry.replica_drained(replica);
    let drained_by = match (drained, entry.replica_drain.get(&replica)) {
        (true, Some(_)) => json!("api"),
        (true, None) => json!("config"),
        (false, _) => Value::Null,
    };
    let status = if drained {
        "drained"
    } else if unhealthy > 0 && unhealthy == t.shards {
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
        "inflight": t.inflight,
        "picks": t.picks,
        "requests": t.requests,
        "errors": t.failures,
        "probes": t.probes,
        "probe_errors": t.failed_probes,
        "consecutive_failures": t.consecutive_failures,
        "last_error": last_error.map(|(_, m)| m),
        "last_error_ago_ms": last_error.map(|(ago, _)| ago),
        "ewma_ms": ewma_ms.map(|v| (v * 1000.0).round() / 1000.0),
        "latency_us": {
            "count": q.count, "p50": q.p50, "p90": q.p90, "p99": q.p99, "p99_9": q.p999, "max": q.max,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::balance::ReplicaSnapshot;
    use crate::registry::servers::{Origin, ServerState};

    fn entry() -> Entry {
        let text = r#"
[[servers]]
name = "pair"
replicas = [{ url = "http://127.0.0.1:1/mcp" }, { url = "http://127.0.0.1:2/mcp" }]
"#;
        let config = crate::config::Config::from_toml_str(text, "t").expect("config");
        Entry {
            config: config.servers[0].clone(),
            origin: Origin::Config,
            state: ServerState::Active,
            spec: None,
            replica_drain: BTreeMap::new(),
        }
    }

    fn shard_saw(ewma_us: f64, exchanges: u64) -> ReplicaFigures {
        ReplicaFigures {
            url: "http://127.0.0.1:1/mcp".into(),
            stats: ReplicaSnapshot {
                weight: 1,
                healthy: true,
                ewma_us: Some(ewma_us),
                exchanges,
                requests: exchanges,
                ..ReplicaSnapshot::default()
            },
            latency: Vec::new(),
        }
    }

    #[test]
    fn the_latency_average_counts_each_shard_by_its_exchanges() {
        // One shard sent the replica one request (1 ms), the other three (3 ms each): the
        // replica's average per exchange is 2.5 ms, as the fleet tools show it.
        let (light, busy) = (shard_saw(1000.0, 1), shard_saw(3000.0, 3));
        let listed = replica_json(&entry(), 0, &[&light, &busy]);
        assert_eq!(listed["ewma_ms"], json!(2.5), "{listed}");
        assert_eq!(listed["requests"], json!(4), "{listed}");
        let fleet = crate::orchestration::fleet::replicas::merge(&[&light, &busy]);
        assert_eq!(fleet.ewma_us.map(|us| us / 1000.0), Some(2.5));
    }
}
