//! The proxy's own tools: their definitions, argument checking and dispatch.
//!
//! Every argument is checked before anything runs; a bad one is answered with -32602 naming
//! the field (also in `error.data.field`). Results carry `structuredContent` and the same
//! JSON as text, for clients that read only text.

use std::rc::Rc;

use bytes::Bytes;
use simd_json::prelude::*;

use super::engine::{self, Cancel, Executor, RunStatus, StepError};
use super::workflow::Workflow;
use super::{fleet, plan, resources, ArgError, Json, TOOL_PREFIX};
use crate::mcp::routing::{forward, Answer};
use crate::mcp::session::{Session, STANDALONE};
use crate::orchestration::ShardOrchestration;
use crate::protocol::jsonrpc::{self, code, Id};
use crate::registry::catalog::Item;
use crate::registry::Catalog;
use crate::shard::Shard;
use crate::upstream::cancel::CancelOnDrop;
use crate::upstream::table::ShardUpstreams;
use crate::upstream::Upstream;

/// `search_tools`.
pub const SEARCH_TOOLS: &str = "proxy__search_tools";
/// `orchestrate_workflow`.
pub const ORCHESTRATE_WORKFLOW: &str = "proxy__orchestrate_workflow";
/// `plan_workflow`.
pub const PLAN_WORKFLOW: &str = "proxy__plan_workflow";
/// `discover_servers`.
pub const DISCOVER_SERVERS: &str = "proxy__discover_servers";
/// `monitor_health`.
pub const MONITOR_HEALTH: &str = "proxy__monitor_health";
/// `balance_load`.
pub const BALANCE_LOAD: &str = "proxy__balance_load";
/// `optimize_performance`.
pub const OPTIMIZE_PERFORMANCE: &str = "proxy__optimize_performance";
/// `call_tool`: the generic call for `tool_exposure = "search"`.
pub const CALL_TOOL: &str = "proxy__call_tool";

/// Most tools `search_tools` returns.
const MAX_K: u64 = 50;

/// The tool definitions, as listed.
const DEFINITIONS: &[&str] = &[
    r#"{"name":"proxy__search_tools","title":"Search tools","description":"Find the upstream tools that fit a plain-language need: ranks every tool of every server (BM25 over names, descriptions, parameters and server tags) and returns the best k with their input schemas. Call the one you pick by its name, or with proxy__call_tool.","inputSchema":{"type":"object","properties":{"query":{"type":"string","description":"What you need done, in plain words"},"k":{"type":"integer","minimum":1,"maximum":50,"description":"How many tools to return (default 5)"},"server":{"type":"string","description":"Only tools of this server"}},"required":["query"],"additionalProperties":false}}"#,
    r#"{"name":"proxy__orchestrate_workflow","title":"Run a workflow","description":"Run a workflow: a DAG of tool calls across servers. Steps have id, tool (server__tool), arguments (templates {{inputs.x}}, {{steps.ID.text}}, {{steps.ID/json/pointer}} into structuredContent or JSON text), depends_on, timeout_ms, retry {attempts, backoff_ms} and on_error abort|continue|fallback (with fallback {tool, arguments}). Independent steps run in parallel (max_parallel, default 4). Returns every step's result and timing; sends a progress notification per step when the request has a progressToken; honours cancellation.","inputSchema":{"type":"object","properties":{"workflow":{"type":"object","description":"An inline workflow: {name?, max_parallel?, steps: [...]}"},"name":{"type":"string","description":"The name of a saved workflow (instead of workflow)"},"inputs":{"type":"object","description":"Values for {{inputs.NAME}} templates"}},"additionalProperties":false}}"#,
    r#"{"name":"proxy__plan_workflow","title":"Plan a workflow","description":"Turn a goal and the capabilities it needs into a candidate workflow: the best tool per capability, arguments wired by matching parameter names to inputs and earlier steps' outputs. Edit it, then run it with proxy__orchestrate_workflow.","inputSchema":{"type":"object","properties":{"goal":{"type":"string","description":"What the workflow should achieve"},"capabilities":{"type":"array","items":{"type":"string"},"minItems":1,"maxItems":16,"description":"One plain-language capability per step, in order"},"inputs":{"type":"array","items":{"type":"string"},"description":"Names of the inputs you will provide"}},"required":["goal","capabilities"],"additionalProperties":false}}"#,
    r#"{"name":"proxy__discover_servers","title":"Discover servers","description":"List the upstream servers with their state, tool counts and tags; filter by tag, by a capability (servers with a matching tool) or by health.","inputSchema":{"type":"object","properties":{"tag":{"type":"string","description":"Only servers with this configured tag"},"capability":{"type":"string","description":"Only servers offering a tool for this need"},"health":{"type":"string","enum":["up","down","pending"],"description":"Only servers in this state"}},"additionalProperties":false}}"#,
    r#"{"name":"proxy__monitor_health","title":"Monitor health","description":"Health of every upstream server and each of its replicas, added up over the proxy's shards: discovery state, replica state (healthy, unhealthy from health checks, ejected with the circuit open, failing, draining), consecutive failures, request failures and the last error; plus tool failures in recent workflow runs.","inputSchema":{"type":"object","properties":{"server":{"type":"string","description":"Only this server"}},"additionalProperties":false}}"#,
    r#"{"name":"proxy__balance_load","title":"Balance load","description":"Show how work is spread over each server's replicas (picks, requests, in flight, EWMA latency, p50/p99, weight, strategy), added up over shards. With strategy and/or weights, change a server's balancing live (saved, applied on every shard, sessions kept); the proxy must allow it with [proxy] allow_fleet_changes = true.","inputSchema":{"type":"object","properties":{"server":{"type":"string","description":"Only this server (required to change it)"},"strategy":{"type":"string","enum":["least_latency","round_robin","weighted","random"],"description":"New balancing strategy"},"weights":{"type":"object","additionalProperties":{"type":"integer","minimum":1,"maximum":1000},"description":"New weights by replica index (\"0\") or URL"}},"additionalProperties":false}}"#,
    r#"{"name":"proxy__optimize_performance","title":"Optimize performance","description":"Findings from live metrics, each with a concrete recommendation: unreachable servers, failing or slow replicas (against their peers), uneven load, hot tools, high error ratios, and tools that fail or are slow in recent workflow runs.","inputSchema":{"type":"object","properties":{"server":{"type":"string","description":"Only findings about this server"}},"additionalProperties":false}}"#,
    r#"{"name":"proxy__call_tool","title":"Call a tool","description":"Call any upstream tool by its exposed name (as proxy__search_tools returns it) with its arguments.","inputSchema":{"type":"object","properties":{"name":{"type":"string","description":"The tool's exposed name (server__tool)"},"arguments":{"type":"object","description":"The tool's arguments"}},"required":["name"],"additionalProperties":false}}"#,
];

/// The tool definitions as list items.
pub fn items() -> Vec<Item> {
    DEFINITIONS
        .iter()
        .map(|d| {
            let name = d
                .split("\"name\":\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_default();
            Item {
                // No upstream server: an index past every server's, which every view shows.
                server: usize::MAX,
                original: name.to_owned(),
                // The proxy's own tools never reach an upstream replica.
                retry_safe: false,
                json: Bytes::from_static(d.as_bytes()),
                param_headers: Vec::new(),
            }
        })
        .collect()
}

/// One call of a proxy tool, with what answering it needs.
pub struct Call {
    /// The shard of the session.
    pub shard: Rc<Shard>,
    /// The calling session.
    pub session: Rc<Session>,
    /// The request id.
    pub id: Id,
    /// The tool name.
    pub name: String,
    /// Its arguments (an object).
    pub arguments: Json,
    /// `_meta.progressToken`, when the caller wants progress.
    pub progress_token: Option<Json>,
    /// Whether the client takes an SSE answer.
    pub accepts_sse: bool,
}

/// Checks a tool's arguments: known fields only, and typed accessors naming the field.
struct Args<'a>(&'a Json);

impl<'a> Args<'a> {
    fn new(v: &'a Json, allowed: &[&str]) -> Result<Args<'a>, ArgError> {
        if let Some(obj) = v.as_object() {
            if let Some(bad) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(ArgError::new(
                    bad.as_str(),
                    format!("unknown argument; this tool takes {}", allowed.join(", ")),
                ));
            }
        }
        Ok(Args(v))
    }

    fn str_opt(&self, field: &str) -> Result<Option<&'a str>, ArgError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                Some(s) if !s.trim().is_empty() => Ok(Some(s)),
                _ => Err(ArgError::new(field, "must be a non-empty string")),
            },
        }
    }

    fn str_req(&self, field: &str) -> Result<&'a str, ArgError> {
        self.str_opt(field)?
            .ok_or_else(|| ArgError::new(field, "is required: a non-empty string"))
    }

    fn obj_opt(&self, field: &str) -> Result<Option<&'a Json>, ArgError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(v) if v.is_object() => Ok(Some(v)),
            Some(_) => Err(ArgError::new(field, "must be an object")),
        }
    }

    fn int_opt(&self, field: &str, lo: u64, hi: u64) -> Result<Option<u64>, ArgError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
                _ => Err(ArgError::new(
                    field,
                    format!("must be an integer from {lo} to {hi}"),
                )),
            },
        }
    }

    fn strings_opt(&self, field: &str, max: usize) -> Result<Option<Vec<String>>, ArgError> {
        let Some(v) = self.0.get(field) else {
            return Ok(None);
        };
        let list = v
            .as_array()
            .ok_or_else(|| ArgError::new(field, "must be an array of strings"))?;
        if list.len() > max {
            return Err(ArgError::new(
                field,
                format!("may hold at most {max} items"),
            ));
        }
        list.iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ArgError::new(format!("{field}[{i}]"), "must be a non-empty string")
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An optional server name, which must be configured.
    fn server_opt(&self, catalog: &Catalog, field: &str) -> Result<Option<usize>, ArgError> {
        match self.str_opt(field)? {
            None => Ok(None),
            Some(name) => catalog.server_index(name).map(Some).ok_or_else(|| {
                let known: Vec<&str> = catalog.servers.iter().map(|s| s.name.as_str()).collect();
                ArgError::new(
                    field,
                    format!(
                        "unknown server \"{name}\"; configured: {}",
                        known.join(", ")
                    ),
                )
            }),
        }
    }
}

/// Runs one proxy tool.
pub async fn dispatch(call: Call) -> Answer {
    let catalog = call.shard.catalog();
    let shard = &call.shard;
    let outcome = match call.name.as_str() {
        SEARCH_TOOLS => search_tools(shard, &call.session, &catalog, &call.arguments),
        PLAN_WORKFLOW => plan_workflow(shard, &catalog, &call.arguments),
        DISCOVER_SERVERS => discover_servers(shard, &catalog, &call.arguments),
        MONITOR_HEALTH => monitor_health(shard, &catalog, &call.arguments).await,
        BALANCE_LOAD => balance_load(shard, &catalog, &call.arguments).await,
        OPTIMIZE_PERFORMANCE => optimize_performance(shard, &catalog, &call.arguments).await,
        ORCHESTRATE_WORKFLOW => return orchestrate(call, &catalog).await,
        CALL_TOOL => return call_tool(call, &catalog).await,
        other => Err(ArgError::new(
            "name",
            format!("unknown tool \"{other}\"; the proxy's own tools start with {TOOL_PREFIX}"),
        )),
    };
    match outcome {
        Ok(result) => Answer::Json(jsonrpc::result_body(&call.id, result.as_bytes())),
        Err(e) => Answer::Json(e.to_body(&call.id)),
    }
}

/// A tool result whose structured content is `value` (an object), also given as text.
pub(crate) fn tool_result<T: serde::Serialize>(value: &T, is_error: bool) -> String {
    let text = super::to_json_text(value);
    let mut out = Vec::with_capacity(text.len() * 2 + 80);
    out.extend_from_slice(b"{\"content\":[{\"type\":\"text\",\"text\":");
    jsonrpc::write_json_string(&mut out, &text);
    out.extend_from_slice(b"}],\"structuredContent\":");
    out.extend_from_slice(text.as_bytes());
    if is_error {
        out.extend_from_slice(b",\"isError\":true");
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

fn search_tools(
    shard: &Shard,
    session: &Session,
    catalog: &Catalog,
    args: &Json,
) -> Result<String, ArgError> {
    let a = Args::new(args, &["query", "k", "server"])?;
    let query = a.str_req("query")?;
    let k = a.int_opt("k", 1, MAX_K)?.unwrap_or(5) as usize;
    let server = a.server_opt(catalog, "server")?;
    let index = shard.orchestration().index(catalog, &shard.config);
    // Only what the client's policy lets it call is found.
    let policy = session.auth.policy();
    let allowed = |d: &super::search::Doc| {
        policy
            .as_ref()
            .is_none_or(|p| p.tool(crate::auth::server_name(catalog, d.server), &d.name))
    };
    let hits = index.search(query, k, |d| {
        server.is_none_or(|s| d.server == s) && allowed(d)
    });
    let tools: Vec<Json> = hits
        .iter()
        .map(|h| {
            let mut t = Json::object();
            let _ = t.insert("name", h.doc.name.clone());
            let _ = t.insert(
                "server",
                catalog
                    .servers
                    .get(h.doc.server)
                    .map_or(String::new(), |s| s.name.clone()),
            );
            let _ = t.insert("score", (h.score * 1000.0).round() / 1000.0);
            for field in ["title", "description", "inputSchema", "outputSchema"] {
                if let Some(v) = h.doc.json.get(field) {
                    let _ = t.insert(field, v.clone());
                }
            }
            t
        })
        .collect();
    let mut out = Json::object();
    let _ = out.insert("query", query);
    let _ = out.insert("tools_indexed", index.len() as u64);
    let _ = out.insert("tools", Json::Array(Box::new(tools)));
    Ok(tool_result(&out, false))
}

fn plan_workflow(shard: &Shard, catalog: &Catalog, args: &Json) -> Result<String, ArgError> {
    let a = Args::new(args, &["goal", "capabilities", "inputs"])?;
    let goal = a.str_req("goal")?;
    let capabilities = a
        .strings_opt("capabilities", 16)?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ArgError::new(
                "capabilities",
                "is required: 1 to 16 plain-language capabilities",
            )
        })?;
    let inputs = a.strings_opt("inputs", 64)?.unwrap_or_default();
    let index = shard.orchestration().index(catalog, &shard.config);
    let planned = plan::plan(goal, &capabilities, &inputs, &index);
    Ok(tool_result(&planned, false))
}

fn discover_servers(shard: &Shard, catalog: &Catalog, args: &Json) -> Result<String, ArgError> {
    let a = Args::new(args, &["tag", "capability", "health"])?;
    let tag = a.str_opt("tag")?;
    let capability = a.str_opt("capability")?;
    let health = match a.str_opt("health")? {
        None => None,
        Some(h @ ("up" | "down" | "pending")) => Some(h),
        Some(_) => {
            return Err(ArgError::new(
                "health",
                "must be \"up\", \"down\" or \"pending\"",
            ))
        }
    };
    let matching: Option<Vec<(usize, String)>> = capability.map(|c| {
        let index = shard.orchestration().index(catalog, &shard.config);
        index
            .search(c, 20, |_| true)
            .iter()
            .map(|h| (h.doc.server, h.doc.name.clone()))
            .collect()
    });
    let servers: Vec<Json> = resources::server_facts(shard, catalog)
        .into_iter()
        .enumerate()
        .filter(|(_, f)| health.is_none_or(|h| f.state == h))
        .filter(|(_, f)| tag.is_none_or(|t| f.tags.iter().any(|x| x.eq_ignore_ascii_case(t))))
        .filter_map(|(i, f)| {
            let mut v = simd_json::serde::to_owned_value(&f).ok()?;
            if let Some(m) = &matching {
                let tools: Vec<Json> = m
                    .iter()
                    .filter(|(s, _)| *s == i)
                    .map(|(_, n)| Json::from(n.clone()))
                    .collect();
                if tools.is_empty() {
                    return None;
                }
                let _ = v.insert("matching_tools", Json::Array(Box::new(tools)));
            }
            Some(v)
        })
        .collect();
    let mut out = Json::object();
    let _ = out.insert("servers", Json::Array(Box::new(servers)));
    Ok(tool_result(&out, false))
}

async fn monitor_health(
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

async fn balance_load(
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

async fn optimize_performance(
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

/// `call_tool`: forwarded like a client's own `tools/call` of that tool.
async fn call_tool(call: Call, catalog: &Catalog) -> Answer {
    let checked = (|| {
        let a = Args::new(&call.arguments, &["name", "arguments"])?;
        let name = a.str_req("name")?;
        let arguments = a
            .obj_opt("arguments")?
            .cloned()
            .unwrap_or_else(Json::object);
        if super::is_own_tool(name) {
            return Err(ArgError::new("name", "call the proxy's own tools directly"));
        }
        let (server, original) = catalog
            .tool(name)
            .filter(|(s, _)| call.session.auth.permits_tool(catalog, *s, name))
            .ok_or_else(|| {
                // A tool the client's policy hides gets the words of one that does not exist.
                let why = super::check_step_tool(catalog, name).err().unwrap_or_else(|| {
                    format!("unknown tool \"{name}\"; proxy__search_tools finds tools by what they do")
                });
                ArgError::new("name", why)
            })?;
        Ok((server, original.to_owned(), arguments))
    })();
    let (server, original, arguments) = match checked {
        Ok(x) => x,
        Err(e) => return Answer::Json(e.to_body(&call.id)),
    };
    let mut params = Json::object();
    let _ = params.insert("name", original);
    let _ = params.insert("arguments", arguments);
    if let Some(token) = call.progress_token {
        let mut meta = Json::object();
        let _ = meta.insert("progressToken", token);
        let _ = params.insert("_meta", meta);
    }
    let body = jsonrpc::request_body(&call.id, "tools/call", params.encode().as_bytes());
    let mut buf = body.to_vec();
    let msg = match jsonrpc::parse(&mut buf) {
        Ok(m) => m,
        Err(e) => {
            return Answer::Json(jsonrpc::error_body(
                Some(&call.id),
                code::INTERNAL_ERROR,
                &e.to_string(),
            ))
        }
    };
    forward::request(
        &call.session,
        server,
        call.id.clone(),
        msg,
        forward::Delivery::own(call.accepts_sse),
    )
    .await
}

/// Steps call upstream tools through the session's own upstream sessions, as its client would.
struct SessionExecutor {
    session: Rc<Session>,
    catalog: std::sync::Arc<Catalog>,
}

impl Executor for SessionExecutor {
    fn call(
        &self,
        tool: &str,
        arguments: Json,
    ) -> futures_lite::future::BoxedLocal<Result<Json, StepError>> {
        let found = self
            .catalog
            .tool(tool)
            .filter(|(s, _)| self.session.auth.permits_tool(&self.catalog, *s, tool))
            .map(|(s, o)| (s, o.to_owned()));
        let session = self.session.clone();
        let tool = tool.to_owned();
        Box::pin(async move {
            let (server, original) = found.ok_or_else(|| StepError::Rejected {
                code: code::INVALID_PARAMS.into(),
                message: format!("unknown tool \"{tool}\""),
            })?;
            let upstream = session
                .upstream(server)
                .ok_or_else(|| StepError::Upstream(format!("no upstream for {tool}")))?;
            let mut params = Json::object();
            let _ = params.insert("name", original);
            let _ = params.insert("arguments", arguments);
            let id = upstream.next_id();
            let body = jsonrpc::request_body(&id, "tools/call", params.encode().as_bytes());
            // Dropped before the answer (the run was cancelled or the step timed out): the
            // server is told to stop, as the client's own cancellation would tell it.
            let mut pending = CancelOnDrop::new(
                upstream.clone(),
                id.clone(),
                "the workflow step was cancelled",
            );
            let answer = upstream.request_as(&id, &body).await;
            pending.disarm();
            let answer = answer.map_err(|e| StepError::Upstream(e.to_string()))?;
            let mut buf = answer.to_vec();
            // Read as every upstream message is (a repeated member name is refused), so a
            // step's result has the one meaning the client will see.
            let mut msg = Json::from(jsonrpc::parse(&mut buf).map_err(|e| {
                StepError::Upstream(format!("{tool} answered with invalid JSON-RPC: {e}"))
            })?);
            if let Some(err) = msg.get("error") {
                return Err(StepError::Rejected {
                    code: err.get_i64("code").unwrap_or(0),
                    message: err.get_str("message").unwrap_or("no message").to_owned(),
                });
            }
            msg.remove("result")
                .ok()
                .flatten()
                .ok_or_else(|| StepError::Upstream(format!("{tool} answered without a result")))
        })
    }
}

/// `orchestrate_workflow`: validate, then run; streamed when progress is asked for.
async fn orchestrate(call: Call, catalog: &std::sync::Arc<Catalog>) -> Answer {
    let prepared = (|| {
        let a = Args::new(&call.arguments, &["workflow", "name", "inputs"])?;
        let inputs = a.obj_opt("inputs")?.cloned().unwrap_or_else(Json::object);
        // Steps may only name tools the client may call; a hidden one reads as unknown.
        let check = |t: &str| {
            super::check_step_tool(catalog, t)?;
            match catalog.tool(t) {
                Some((s, _)) if !call.session.auth.permits_tool(catalog, s, t) => Err(format!(
                    "unknown tool \"{t}\"; proxy__search_tools finds tools by what they do"
                )),
                _ => Ok(()),
            }
        };
        let wf = match (call.arguments.get("workflow"), a.str_opt("name")?) {
            (Some(w), None) => Workflow::from_json(w, "workflow", &check)?,
            (None, Some(name)) => {
                let saved = call
                    .shard
                    .orchestration()
                    .store
                    .get(name)
                    .map_err(|e| ArgError::new("name", e.to_string()))?
                    .ok_or_else(|| {
                        ArgError::new("name", format!("no saved workflow \"{name}\""))
                    })?;
                let mut wf =
                    Workflow::from_json(&saved, &format!("saved workflow {name}"), &check)?;
                wf.name.get_or_insert_with(|| name.to_owned());
                wf
            }
            (Some(_), Some(_)) => {
                return Err(ArgError::new(
                    "name",
                    "give either workflow or name, not both",
                ))
            }
            (None, None) => {
                return Err(ArgError::new(
                    "workflow",
                    "is required (or name, for a saved workflow)",
                ))
            }
        };
        wf.check_inputs(&inputs)?;
        Ok((wf, inputs))
    })();
    let (wf, inputs) = match prepared {
        Ok(x) => x,
        Err(e) => return Answer::Json(e.to_body(&call.id)),
    };
    let shard = call.shard.clone();
    let session = call.session.clone();
    let state = &shard.orchestration();
    let entry = state.start_run(shard.id, wf.name.clone(), wf.steps.len());
    let watched = Rc::downgrade(&session);
    let request = call.id.clone();
    // A run also stops when its session ends.
    let cancel = Cancel::watching(Rc::new(move || {
        watched.upgrade().is_none_or(|s| s.abandoned(&request))
    }));
    let key = (session.id.clone(), call.id.clone());
    state
        .active
        .borrow_mut()
        .insert(key.clone(), cancel.clone());
    let exec: Rc<dyn Executor> = Rc::new(SessionExecutor {
        session: session.clone(),
        catalog: catalog.clone(),
    });
    let token = call.progress_token.clone();
    let stream = (token.is_some() && call.accepts_sse).then(|| session.events.open());
    let id = call.id.clone();
    let busy = shard.begin_request();
    let work = async move {
        let events_to = stream.unwrap_or(STANDALONE);
        let mut progress = |rec: &engine::StepRecord, done: usize, total: usize| {
            entry.borrow_mut().steps_finished = done;
            if let Some(token) = &token {
                let mut p = Json::object();
                let _ = p.insert("progressToken", token.clone());
                let _ = p.insert("progress", done as u64);
                let _ = p.insert("total", total as u64);
                let _ = p.insert(
                    "message",
                    format!(
                        "step {} {}",
                        rec.id,
                        super::to_json_text(&rec.status).trim_matches('"')
                    ),
                );
                session.events.push(
                    events_to,
                    jsonrpc::notification_body(
                        "notifications/progress",
                        Some(p.encode().as_bytes()),
                    ),
                );
            }
        };
        let report = engine::run(&wf, &inputs, exec, &cancel, &mut progress).await;
        shard.orchestration().active.borrow_mut().remove(&key);
        {
            let mut e = entry.borrow_mut();
            e.status = report.status;
            e.duration_ms = Some(report.duration_ms);
            e.report = Some(report.clone());
        }
        let run_id = entry.borrow().run_id.clone();
        drop(busy);
        if report.status == RunStatus::Cancelled {
            // The spec: a cancelled request gets no response.
            return None;
        }
        let mut out = simd_json::serde::to_owned_value(&report).unwrap_or_else(|_| Json::object());
        let _ = out.insert("run_id", run_id);
        if let Some(name) = &wf.name {
            let _ = out.insert("workflow", name.clone());
        }
        let failed = report.status == RunStatus::Failed;
        Some(jsonrpc::result_body(
            &id,
            tool_result(&out, failed).as_bytes(),
        ))
    };
    match stream {
        Some(out) => {
            let session = call.session.clone();
            let handed = session.clone();
            glommio::spawn_local(async move {
                if let Some(answer) = work.await {
                    session.events.push(out, answer);
                }
                session.events.finish(out);
            })
            .detach();
            Answer::Stream(handed, out)
        }
        None => match work.await {
            Some(answer) => Answer::Json(answer),
            None => Answer::Silent,
        },
    }
}
