//! The proxy's own resources, and the facts they share with the fleet tools.
//!
//! - `orchestration://workflows/`: recent runs of every shard (newest first, bounded) and the
//!   saved workflows; `orchestration://workflows/{run_id}` is one run's full report, fetched
//!   from the shard that ran it.
//! - `servers://registry/`: every server, its state, what it offers, and its replicas with
//!   their balancer figures (added up over shards, see [`super::fleet`]).
//! - `metrics://performance/`: requests, errors and p50/p90/p99 per server and replica from
//!   the histograms, calls per tool, shards, and step statistics from recent runs.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use simd_json::prelude::*;

use std::rc::Rc;

use serde_json::json;

use super::engine::StepStatus;
use super::fleet::{self, Fleet, ReplicaView};
use super::{ArgError, Json};
use crate::config::Transport;
use crate::orchestration::ShardOrchestration;
use crate::registry::catalog::Item;
use crate::registry::{Catalog, ServerStatus};
use crate::shard::Shard;

/// Recent workflow runs and saved workflows.
pub const WORKFLOWS_URI: &str = "orchestration://workflows/";
/// The server registry.
pub const REGISTRY_URI: &str = "servers://registry/";
/// Performance figures.
pub const METRICS_URI: &str = "metrics://performance/";

const DEFINITIONS: &[&str] = &[
    r#"{"uri":"orchestration://workflows/","name":"workflow-runs","title":"Workflow runs","description":"Recent workflow runs on every shard with their status (newest first, at most 128), and the saved workflows. orchestration://workflows/{run_id} is one run's full report.","mimeType":"application/json"}"#,
    r#"{"uri":"servers://registry/","name":"server-registry","title":"Server registry","description":"Every upstream server: transport, state, tags, item counts, strategy, and each replica's state, picks, requests, failures and EWMA latency.","mimeType":"application/json"}"#,
    r#"{"uri":"metrics://performance/","name":"performance","title":"Performance","description":"Live figures: requests, errors and p50/p90/p99 latency per server and per replica, calls per tool, sessions per shard, and step statistics from recent workflow runs.","mimeType":"application/json"}"#,
];

/// The resource definitions as list items.
pub fn items() -> Vec<Item> {
    DEFINITIONS
        .iter()
        .map(|d| Item {
            server: usize::MAX,
            retry_safe: false,
            original: d
                .split("\"uri\":\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_default()
                .to_owned(),
            json: Bytes::from_static(d.as_bytes()),
            param_headers: Vec::new(),
        })
        .collect()
}

/// One server as the registry and the fleet tools show it.
#[derive(Clone, Debug, Serialize)]
pub struct ServerFacts {
    /// Configured name.
    pub name: String,
    /// Exposed-name prefix.
    pub prefix: String,
    /// `http` or `stdio`.
    pub transport: &'static str,
    /// `up`, `down` or `pending`.
    pub state: &'static str,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Configured tags.
    pub tags: Vec<String>,
    /// Tools it offers.
    pub tools: usize,
    /// Prompts it offers.
    pub prompts: usize,
    /// Resources it lists.
    pub resources: usize,
}

/// Facts about every configured server, by index.
pub fn server_facts(shard: &Shard, catalog: &Catalog) -> Vec<ServerFacts> {
    catalog
        .servers
        .iter()
        .zip(&catalog.status)
        .enumerate()
        .map(|(i, (id, status))| {
            let config = shard.config.servers.get(i);
            let (state, detail, counts) = match status {
                ServerStatus::Up(l) => (
                    "up",
                    None,
                    (l.tools.len(), l.prompts.len(), l.resources.len()),
                ),
                ServerStatus::Down(why) => ("down", Some(why.clone()), (0, 0, 0)),
                ServerStatus::Pending => ("pending", None, (0, 0, 0)),
            };
            ServerFacts {
                name: id.name.clone(),
                prefix: id.prefix.clone(),
                transport: match config.map(|c| &c.transport) {
                    Some(Transport::Stdio(_)) => "stdio",
                    _ => "http",
                },
                state,
                detail,
                tags: config.map(|c| c.tags.clone()).unwrap_or_default(),
                tools: counts.0,
                prompts: counts.1,
                resources: counts.2,
            }
        })
        .collect()
}

/// Statistics of one tool over the recent runs of this shard.
#[derive(Clone, Debug, Serialize)]
pub struct StepStats {
    /// Exposed tool name.
    pub tool: String,
    /// Its server's index, when it still exists.
    #[serde(skip)]
    pub server: Option<usize>,
    /// Calls that finished.
    pub calls: u64,
    /// Calls that failed (including those a fallback replaced).
    pub failures: u64,
    /// Mean duration, ms.
    pub mean_ms: u64,
    /// Longest duration, ms.
    pub max_ms: u64,
    /// The last failure's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Per-tool statistics from the runs this shard keeps.
pub fn recent_step_stats(shard: &Shard, catalog: &Catalog) -> Vec<StepStats> {
    let mut by_tool: BTreeMap<String, (u64, u64, u64, u64, Option<String>)> = BTreeMap::new();
    for run in shard.orchestration().runs().into_iter().rev() {
        let Some(report) = &run.report else {
            continue;
        };
        for step in &report.steps {
            let failed = match step.status {
                StepStatus::Succeeded => false,
                StepStatus::Failed | StepStatus::FellBack => true,
                _ => continue,
            };
            let e = by_tool.entry(step.tool.clone()).or_default();
            e.0 += 1;
            let ms = step.duration_ms.unwrap_or(0);
            e.2 += ms;
            e.3 = e.3.max(ms);
            if failed {
                e.1 += 1;
                e.4.clone_from(&step.error);
            }
        }
    }
    by_tool
        .into_iter()
        .map(
            |(tool, (calls, failures, total, max, last_error))| StepStats {
                server: catalog.tool(&tool).map(|(s, _)| s),
                tool,
                calls,
                failures,
                mean_ms: total / calls.max(1),
                max_ms: max,
                last_error,
            },
        )
        .collect()
}

/// Findings with recommendations, from server states and recent runs.
pub fn findings(shard: &Shard, catalog: &Catalog, only: Option<usize>) -> Vec<Json> {
    let mut out = Vec::new();
    let mut add = |kind: &str, subject: &str, detail: String, recommendation: String| {
        let mut f = Json::object();
        let _ = f.insert("kind", kind);
        let _ = f.insert("subject", subject);
        let _ = f.insert("detail", detail);
        let _ = f.insert("recommendation", recommendation);
        out.push(f);
    };
    for (i, f) in server_facts(shard, catalog).iter().enumerate() {
        if only.is_some_and(|s| s != i) {
            continue;
        }
        match f.state {
            "down" => add(
                "server_down",
                &f.name,
                f.detail.clone().unwrap_or_default(),
                format!("check that {} is running and reachable; its tools are hidden until it answers (the proxy retries with backoff)", f.name),
            ),
            "pending" => add(
                "server_not_reached",
                &f.name,
                "discovery has not reached it yet".into(),
                "wait for discovery, or check its url/command if this persists".into(),
            ),
            _ => {}
        }
    }
    for s in recent_step_stats(shard, catalog) {
        if only.is_some_and(|o| s.server != Some(o)) {
            continue;
        }
        if s.failures > 0 {
            add(
                "failing_tool",
                &s.tool,
                format!("{} of {} recent workflow calls failed; last: {}", s.failures, s.calls, s.last_error.clone().unwrap_or_default()),
                "check the arguments the workflow passes, or give the step retry/on_error \"fallback\"".into(),
            );
        }
        if s.calls > 0 && s.mean_ms >= 2_000 {
            add(
                "slow_tool",
                &s.tool,
                format!("mean {} ms, max {} ms over {} recent workflow calls", s.mean_ms, s.max_ms, s.calls),
                "run it in parallel with independent steps, raise its timeout_ms, or cache its result in a saved workflow input".into(),
            );
        }
    }
    out
}

/// Findings from live figures: failing and slow replicas, uneven load, hot tools, errors.
pub fn live_findings(fleet: &Fleet, only: Option<usize>) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut add = |kind: &str, server: &str, subject: String, detail: String, rec: String| {
        out.push(json!({
            "kind": kind, "server": server, "subject": subject,
            "detail": detail, "recommendation": rec,
        }));
    };
    for v in fleet
        .servers
        .iter()
        .filter(|v| only.is_none_or(|o| o == v.index))
    {
        let name = v.server.as_str();
        for r in v.replicas.iter().filter(|r| r.failing) {
            add(
                "failing_replica",
                name,
                r.url.clone(),
                format!(
                    "{} ({} of {} exchanges and {} of {} health checks failed, {} in a row; healthy on {}/{} shards){}",
                    r.state,
                    r.failed_exchanges,
                    r.exchanges,
                    r.failed_probes,
                    r.probes,
                    r.consecutive_failures,
                    r.healthy_on_shards,
                    r.shards,
                    r.last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
                ),
                format!(
                    "check that {} is running and reachable; until it is, drain it (replica drain = true in the configuration or through the admin API) so no new session is bound to it; the proxy already moves sessions off it and ejects it after failover_threshold failures",
                    r.url
                ),
            );
        }
        // Slow against its peers: the replica's typical latency over the median of the others.
        let typical = |r: &ReplicaView| -> Option<f64> {
            if r.latency.count >= MIN_SAMPLES {
                Some(r.latency.p50_ms)
            } else {
                r.ewma_ms.filter(|_| r.exchanges >= MIN_SAMPLES)
            }
        };
        let measured: Vec<(usize, f64)> = v
            .replicas
            .iter()
            .filter_map(|r| typical(r).map(|t| (r.replica, t)))
            .collect();
        if measured.len() >= 2 {
            for &(i, t) in &measured {
                let mut others: Vec<f64> = measured
                    .iter()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, t)| *t)
                    .collect();
                others.sort_by(f64::total_cmp);
                let median = others[others.len() / 2];
                if t >= SLOW_MIN_MS && t >= median.max(0.1) * SLOW_RATIO {
                    let url = v.replicas[i].url.clone();
                    let rec = if v.strategy == "least_latency" {
                        format!("it already gets less new work under least_latency; find why {url} is slow (load, network, its own upstreams), lower its weight, or drain it")
                    } else {
                        format!("switch {name} to strategy least_latency (now {}) so new work avoids it, lower its weight, or drain it while finding why {url} is slow", v.strategy)
                    };
                    add(
                        "slow_replica",
                        name,
                        url,
                        format!("typical latency {t:.2} ms against a median of {median:.2} ms for its peers"),
                        rec,
                    );
                }
            }
        }
        // Uneven load among replicas that can all take work, where the strategy means to share.
        let open: Vec<&ReplicaView> = v
            .replicas
            .iter()
            .filter(|r| !r.failing && !r.drain)
            .collect();
        let total: u64 = open.iter().map(|r| r.answered).sum();
        if open.len() >= 2 && total >= IMBALANCE_MIN_REQUESTS && v.strategy != "least_latency" {
            let weight_sum: f64 = open.iter().map(|r| f64::from(r.weight)).sum();
            for r in &open {
                let expected = if v.strategy == "weighted" {
                    f64::from(r.weight) / weight_sum
                } else {
                    1.0 / open.len() as f64
                };
                let share = r.answered as f64 / total as f64;
                if share > expected * 2.0 && share - expected > 0.2 {
                    add(
                        "imbalance",
                        name,
                        r.url.clone(),
                        format!(
                            "{:.0}% of {total} requests where {} gives it {:.0}%",
                            share * 100.0,
                            v.strategy,
                            expected * 100.0
                        ),
                        if v.stateless {
                            "check that its peers are healthy and reachable; if they are, the weights may not say what you mean".into()
                        } else {
                            format!("sessions are bound to one replica at initialize, so a few long sessions skew the load; mark {name} stateless = true if it keeps no per-session state, or spread clients over more sessions")
                        },
                    );
                }
            }
        }
        if v.requests >= ERROR_MIN_REQUESTS && v.errors as f64 >= v.requests as f64 * ERROR_RATIO {
            add(
                "error_ratio",
                name,
                name.to_owned(),
                format!("{} of {} forwarded requests failed", v.errors, v.requests),
                format!("look at {name}'s last errors in proxy__monitor_health and its own logs; a server that fails this often should be drained or fixed"),
            );
        }
    }
    let calls: u64 = fleet.tools.iter().map(|t| t.calls).sum();
    for t in &fleet.tools {
        let Some(v) = fleet.servers.iter().find(|v| v.index == t.server) else {
            continue;
        };
        if only.is_some_and(|o| o != t.server) {
            continue;
        }
        if t.calls >= ERROR_MIN_REQUESTS && t.errors as f64 >= t.calls as f64 * ERROR_RATIO {
            add(
                "failing_tool",
                &v.server,
                t.tool.clone(),
                format!("{} of {} calls failed", t.errors, t.calls),
                "check the arguments callers pass (the errors say why), or route around it with a workflow step's on_error \"fallback\"".into(),
            );
        }
        if calls >= HOT_MIN_CALLS && t.calls as f64 >= calls as f64 * HOT_SHARE {
            let mean = t.total_us as f64 / t.calls.max(1) as f64 / 1000.0;
            add(
                "hot_tool",
                &v.server,
                t.tool.clone(),
                format!("{} of {calls} tool calls ({:.0}%), mean {mean:.2} ms", t.calls, t.calls as f64 * 100.0 / calls as f64),
                format!(
                    "give {} more replicas{}; callers repeating the same call could cache its result",
                    v.server,
                    if v.stateless {
                        ""
                    } else {
                        ", or mark it stateless = true if it keeps no session state so each call is balanced on its own"
                    }
                ),
            );
        }
    }
    out
}

/// Samples a replica needs before its latency is compared with its peers'.
const MIN_SAMPLES: u64 = 5;
/// A replica this many times slower than its peers' median is slow...
const SLOW_RATIO: f64 = 3.0;
/// ...when it also takes at least this long (sub-millisecond differences do not matter).
const SLOW_MIN_MS: f64 = 5.0;
/// Requests before load shares mean anything.
const IMBALANCE_MIN_REQUESTS: u64 = 20;
/// Requests before an error ratio means anything, and the ratio that is high.
const ERROR_MIN_REQUESTS: u64 = 5;
const ERROR_RATIO: f64 = 0.2;
/// Tool calls before one tool can be hot, and the share that makes it hot.
const HOT_MIN_CALLS: u64 = 20;
const HOT_SHARE: f64 = 0.5;

/// The text of one of the proxy's resources; an unknown one is a bad `uri`.
pub async fn read(shard: &Rc<Shard>, uri: &str) -> Result<String, ArgError> {
    let catalog = shard.catalog();
    let state = &shard.orchestration();
    if uri == WORKFLOWS_URI {
        let all = fleet::gather(shard).await;
        let runs = fleet::merged_runs(&all);
        let (saved, saved_error) = match state.store.names() {
            Ok(n) => (n, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        return Ok(json!({
            "note": "runs started on every shard, newest first (each shard keeps its last 64; at most 128 are listed)",
            "shards_answered": all.len(),
            "shards": shard.nr_shards,
            "runs": runs,
            "saved_workflows": saved,
            "saved_workflows_error": saved_error,
        })
        .to_string());
    }
    if let Some(run_id) = uri.strip_prefix(WORKFLOWS_URI) {
        let run = fleet::find_run(shard, run_id).await.ok_or_else(|| {
            ArgError::new(
                "uri",
                format!("no run \"{run_id}\" (run ids are listed by {WORKFLOWS_URI}; each shard keeps its last 64)"),
            )
        })?;
        return Ok(run.to_string());
    }
    if uri == REGISTRY_URI {
        let fleet = fleet::fleet(shard).await;
        let facts = server_facts(shard, &catalog);
        let servers: Vec<serde_json::Value> = fleet
            .servers
            .iter()
            .map(|v| {
                let mut s = facts
                    .iter()
                    .find(|f| f.name == v.server)
                    .and_then(|f| serde_json::to_value(f).ok())
                    .unwrap_or_else(|| json!({"name": v.server}));
                s["state"] = v.state.into();
                s["strategy"] = v.strategy.clone().into();
                s["balanced_per"] = if v.stateless { "request" } else { "session" }.into();
                s["replicas"] = serde_json::to_value(&v.replicas).unwrap_or_default();
                if let Some(c) = v.children {
                    s["children"] = c.into();
                }
                s["requests"] = v.requests.into();
                s["errors"] = v.errors.into();
                s
            })
            .collect();
        return Ok(json!({
            "servers": servers,
            "catalog_generation": catalog.generation,
            "shards_answered": fleet.shards.len(),
        })
        .to_string());
    }
    if uri == METRICS_URI {
        let fleet = fleet::fleet(shard).await;
        let mut runs = BTreeMap::new();
        for r in fleet::merged_runs(&fleet.shards) {
            if let Some(status) = r["status"].as_str() {
                *runs.entry(status.to_owned()).or_insert(0u64) += 1;
            }
        }
        let servers: Vec<serde_json::Value> = fleet
            .servers
            .iter()
            .map(|v| {
                let replicas: Vec<serde_json::Value> = v
                    .replicas
                    .iter()
                    .map(|r| {
                        json!({
                            "replica": r.replica, "url": r.url, "state": r.state,
                            "picks": r.picks, "answered": r.answered, "exchanges": r.exchanges, "failed_exchanges": r.failed_exchanges, "probes": r.probes, "failed_probes": r.failed_probes,
                            "inflight": r.inflight, "ewma_ms": r.ewma_ms, "upstream": r.latency,
                        })
                    })
                    .collect();
                json!({
                    "server": v.server,
                    "requests": v.requests,
                    "errors": v.errors,
                    "error_ratio": if v.requests > 0 { (v.errors as f64 / v.requests as f64 * 1000.0).round() / 1000.0 } else { 0.0 },
                    "latency": v.latency,
                    "replicas": replicas,
                })
            })
            .collect();
        let tools: Vec<serde_json::Value> = fleet
            .tools
            .iter()
            .take(TOOLS_LISTED)
            .map(|t| {
                json!({
                    "server": fleet.servers.iter().find(|v| v.index == t.server).map(|v| v.server.clone()),
                    "tool": t.tool, "calls": t.calls, "errors": t.errors,
                    "mean_ms": (t.total_us as f64 / t.calls.max(1) as f64 / 10.0).round() / 100.0,
                    "max_ms": (t.max_us as f64 / 10.0).round() / 100.0,
                })
            })
            .collect();
        let shards: Vec<serde_json::Value> = fleet
            .shards
            .iter()
            .map(|f| json!({"shard": f.shard, "sessions": f.sessions, "requests_in_flight": f.requests_in_flight}))
            .collect();
        return Ok(json!({
            "unit": "ms",
            "note": "latency: the proxy's whole handling of forwarded requests per server; replicas' upstream: request sent to response head; counts since start, quantiles lag up to 1 s",
            "servers": servers,
            "tools": tools,
            "shards": shards,
            "runs": runs,
            "tools_in_recent_runs": recent_step_stats(shard, &catalog),
        })
        .to_string());
    }
    Err(ArgError::new("uri", format!("unknown resource \"{uri}\"")))
}

/// Most tools `metrics://performance/` lists (the busiest).
const TOOLS_LISTED: usize = 50;
