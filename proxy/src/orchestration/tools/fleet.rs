//! The fleet tools: `monitor_health`, `balance_load` (which may also change a server's
//! balancing) and `optimize_performance`, all built on the fleet view of every shard.

use std::rc::Rc;

use super::args::Args;
use simd_json::prelude::*;

use super::tool_result;
use crate::orchestration::{fleet, resources, ArgError, Json};
use crate::registry::Catalog;
use crate::shard::Shard;
use crate::upstream::table::ShardUpstreams;
use crate::upstream::Upstream;

pub(super) async fn monitor_health(
    shard: &Rc<Shard>,
    catalog: &Catalog,
    args: &Json,
) -> Result<String, ArgError> {
    let a = Args::new(args, &["server"])?;
    let only = a.server_opt(catalog, "server")?;
    let fleet = fleet::fleet(shard).await;
    let failures = resources::recent_step_stats(shard, catalog);
    let servers: Vec<serde_json::Value> = fleet
        .servers
        .iter()
        .filter(|v| only.is_none_or(|s| s == v.index))
        .map(|v| {
            let replicas: Vec<serde_json::Value> = v
                .replicas
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "replica": r.replica,
                        "url": r.url,
                        "state": r.state,
                        "failing": r.failing,
                        "healthy_on_shards": format!("{}/{}", r.healthy_on_shards, r.shards),
                        "consecutive_failures": r.consecutive_failures,
                        "circuit": if r.ejected_for_ms > 0 { "open" } else { "closed" },
                        "ejected_for_ms": r.ejected_for_ms,
                        "exchanges": r.exchanges,
                        "failed_exchanges": r.failed_exchanges,
                        "probes": r.probes,
                        "failed_probes": r.failed_probes,
                        "last_error": r.last_error,
                        "last_error_ago_ms": r.last_error_ago_ms,
                    })
                })
                .collect();
            let recent: Vec<serde_json::Value> = failures
                .iter()
                .filter(|s| s.server == Some(v.index) && s.failures > 0)
                .filter_map(|s| serde_json::to_value(s).ok())
                .collect();
            let failing = v.replicas.iter().filter(|r| r.failing).count();
            serde_json::json!({
                "server": v.server,
                "state": v.state,
                "detail": v.detail,
                "transport": v.transport,
                "replicas_failing": failing,
                "replicas": replicas,
                "children": v.children,
                "requests": v.requests,
                "errors": v.errors,
                "recent_step_failures": recent,
            })
        })
        .collect();
    let out = serde_json::json!({
        "servers": servers,
        "shards_answered": fleet.shards.len(),
        "shards": shard.nr_shards,
    });
    Ok(tool_result(&out, false))
}

/// Checks the `weights` argument against `server`'s replicas: index or URL to a weight.
fn parse_weights(
    shard: &Shard,
    server: usize,
    weights: &Json,
) -> Result<Vec<(usize, u32)>, ArgError> {
    let urls: Vec<String> = match shard.upstreams().get(server).as_deref() {
        Some(Upstream::Http(c)) => (0..c.replica_count()).map(|r| c.replica_url(r)).collect(),
        _ => {
            return Err(ArgError::new(
                "weights",
                "this server has no HTTP replicas to weigh",
            ))
        }
    };
    let mut out = Vec::new();
    for (key, value) in weights.as_object().into_iter().flatten() {
        let field = format!("weights.{key}");
        let replica = key
            .parse::<usize>()
            .ok()
            .filter(|i| *i < urls.len())
            .or_else(|| urls.iter().position(|u| u == key.as_str()))
            .ok_or_else(|| {
                ArgError::new(
                    field.clone(),
                    format!(
                        "no such replica; use an index from 0 to {} or one of: {}",
                        urls.len().saturating_sub(1),
                        urls.join(", ")
                    ),
                )
            })?;
        let weight = value
            .as_u64()
            .filter(|w| (1..=1000).contains(w))
            .ok_or_else(|| {
                ArgError::new(
                    field,
                    "must be an integer from 1 to 1000 (drain a replica to take it out)",
                )
            })?;
        out.push((replica, weight as u32));
    }
    if out.is_empty() {
        return Err(ArgError::new(
            "weights",
            "give at least one replica's weight",
        ));
    }
    Ok(out)
}

pub(super) async fn balance_load(
    shard: &Rc<Shard>,
    catalog: &Catalog,
    args: &Json,
) -> Result<String, ArgError> {
    let a = Args::new(args, &["server", "strategy", "weights"])?;
    let only = a.server_opt(catalog, "server")?;
    let strategy = match a.str_opt("strategy")? {
        None => None,
        Some(name) => Some(fleet::strategy_named(name).ok_or_else(|| {
            ArgError::new(
                "strategy",
                "must be least_latency, round_robin, weighted or random",
            )
        })?),
    };
    let weights = a.obj_opt("weights")?;
    let mut changed = None;
    if strategy.is_some() || weights.is_some() {
        let server = only.ok_or_else(|| {
            ArgError::new("server", "name the server whose strategy or weights change")
        })?;
        let weights = match weights {
            Some(w) => parse_weights(shard, server, w)?,
            None => Vec::new(),
        };
        if !shard.config.proxy.allow_fleet_changes {
            let out = serde_json::json!({
                "error": "changing the fleet through MCP is disabled: set allow_fleet_changes = true in the [proxy] section of the configuration (and restart), or change the server through the admin API",
                "flag": "[proxy] allow_fleet_changes",
            });
            return Ok(tool_result(&out, true));
        }
        let name = catalog
            .servers
            .get(server)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let change = fleet::BalanceChange {
            server: name,
            strategy,
            weights,
        };
        match fleet::set_balance(shard, change).await {
            Ok(v) => changed = Some(v),
            Err(e) => {
                let out = serde_json::json!({"error": e});
                return Ok(tool_result(&out, true));
            }
        }
    }
    let fleet = fleet::fleet(shard).await;
    let servers: Vec<serde_json::Value> = fleet
        .servers
        .iter()
        .filter(|v| only.is_none_or(|s| s == v.index))
        .map(|v| {
            let total: u64 = v.replicas.iter().map(|r| r.answered).sum();
            let replicas: Vec<serde_json::Value> = v
                .replicas
                .iter()
                .map(|r| {
                    let share = if total > 0 {
                        (r.answered as f64 / total as f64 * 1000.0).round() / 1000.0
                    } else {
                        0.0
                    };
                    serde_json::json!({
                        "replica": r.replica,
                        "url": r.url,
                        "state": r.state,
                        "weight": r.weight,
                        "drain": r.drain,
                        "picks": r.picks,
                        "answered": r.answered,
                        "share": share,
                        "inflight": r.inflight,
                        "ewma_ms": r.ewma_ms,
                        "latency": r.latency,
                    })
                })
                .collect();
            // A strategy just changed is shown as set even if a shard has not applied it yet.
            let strategy = changed
                .as_ref()
                .filter(|c| c["server"] == v.server.as_str())
                .and_then(|c| c["strategy"].as_str().map(str::to_owned))
                .unwrap_or_else(|| v.strategy.clone());
            serde_json::json!({
                "server": v.server,
                "state": v.state,
                "strategy": strategy,
                "balanced_per": if v.stateless { "request" } else { "session" },
                "replicas": replicas,
                "children": v.children,
            })
        })
        .collect();
    let shards: Vec<serde_json::Value> = fleet
        .shards
        .iter()
        .map(|f| {
            serde_json::json!({
                "shard": f.shard,
                "sessions": f.sessions,
                "requests_in_flight": f.requests_in_flight,
            })
        })
        .collect();
    let mut out = serde_json::json!({
        "servers": servers,
        "shards": shards,
        "note": "picks: times the balancer chose the replica (once per new session, or per request for stateless servers); answered: forwarded requests it answered (health checks are not counted); share: its part of the server's answered requests",
    });
    if let Some(c) = changed {
        out["changed"] = c;
    }
    Ok(tool_result(&out, false))
}

pub(super) async fn optimize_performance(
    shard: &Rc<Shard>,
    catalog: &Catalog,
    args: &Json,
) -> Result<String, ArgError> {
    let a = Args::new(args, &["server"])?;
    let only = a.server_opt(catalog, "server")?;
    let fleet = fleet::fleet(shard).await;
    let mut findings = resources::live_findings(&fleet, only);
    findings.extend(
        resources::findings(shard, catalog, only)
            .into_iter()
            .filter_map(|f| serde_json::from_str(&f.encode()).ok()),
    );
    let out = serde_json::json!({
        "findings": findings,
        "shards_answered": fleet.shards.len(),
    });
    Ok(tool_result(&out, false))
}
