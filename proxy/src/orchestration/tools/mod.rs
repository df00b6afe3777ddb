//! The proxy's own tools: their definitions and dispatch, and the tools that read the
//! catalog (`search_tools`, `plan_workflow`, `discover_servers`).
//!
//! Every argument is checked before anything runs; a bad one is answered with -32602 naming
//! the field (also in `error.data.field`). Results carry `structuredContent` and the same
//! JSON as text, for clients that read only text.
//!
//! - [`args`]: checking arguments.
//! - [`fleet`]: `monitor_health`, `balance_load`, `optimize_performance`.
//! - [`upstream_calls`]: `call_tool` and `orchestrate_workflow`, which call upstream tools as
//!   the caller.

mod args;
mod fleet;
mod upstream_calls;

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use simd_json::prelude::*;

use self::args::Args;
use super::caller::{Caller, ToolReply};
use super::search::{self, Index};
use super::{plan, resources, ArgError, Json, TOOL_PREFIX};
use crate::orchestration::ShardOrchestration;
use crate::protocol::jsonrpc::{self, Id};
use crate::registry::catalog::Item;
use crate::registry::Catalog;
use crate::shard::Shard;

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

/// Share of the best match's score a tool needs for `discover_servers`' capability filter.
const CAPABILITY_SHARE: f64 = 0.8;

/// Most tools `search_tools` returns.
const MAX_K: u64 = 50;

/// The tool definitions, as listed.
const DEFINITIONS: &[&str] = &[
    r#"{"name":"proxy__search_tools","title":"Search tools","description":"Find the tools that fit a plain-language need: ranks every tool of every server and the proxy's own by meaning and by words (a word embedding and BM25 over names, descriptions, parameters and server tags) and returns the best k with their input schemas. Call the one you pick by its name, or with proxy__call_tool.","inputSchema":{"type":"object","properties":{"query":{"type":"string","description":"What you need done, in plain words"},"k":{"type":"integer","minimum":1,"maximum":50,"description":"How many tools to return (default 5)"},"server":{"type":"string","description":"Only tools of this server"},"explain":{"type":"boolean","description":"Say why each tool ranked: shared words, words related in meaning, each part of the score"}},"required":["query"],"additionalProperties":false}}"#,
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
    /// The session it runs for.
    pub session: Rc<dyn Caller>,
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

/// Runs one proxy tool.
pub async fn dispatch(call: Call) -> ToolReply {
    let catalog = call.shard.catalog();
    let shard = &call.shard;
    let outcome = match call.name.as_str() {
        SEARCH_TOOLS => {
            let index = shard.orchestration().search.get(shard, &catalog).await;
            search_tools(&index, &*call.session, &catalog, &call.arguments)
        }
        PLAN_WORKFLOW => {
            let index = shard.orchestration().search.get(shard, &catalog).await;
            plan_workflow(&index, &call.arguments)
        }
        DISCOVER_SERVERS => discover_servers(shard, &catalog, &call.arguments).await,
        MONITOR_HEALTH => fleet::monitor_health(shard, &catalog, &call.arguments).await,
        BALANCE_LOAD => fleet::balance_load(shard, &catalog, &call.arguments).await,
        OPTIMIZE_PERFORMANCE => fleet::optimize_performance(shard, &catalog, &call.arguments).await,
        ORCHESTRATE_WORKFLOW => return upstream_calls::orchestrate(call, &catalog).await,
        CALL_TOOL => return upstream_calls::call_tool(call, &catalog),
        other => Err(ArgError::new(
            "name",
            format!("unknown tool \"{other}\"; the proxy's own tools start with {TOOL_PREFIX}"),
        )),
    };
    match outcome {
        Ok(result) => ToolReply::Json(jsonrpc::result_body(&call.id, result.as_bytes())),
        Err(e) => ToolReply::Json(e.to_body(&call.id)),
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
    index: &Index,
    caller: &dyn Caller,
    catalog: &Catalog,
    args: &Json,
) -> Result<String, ArgError> {
    let a = Args::new(args, &["query", "k", "server", "explain"])?;
    let query = a.str_req("query")?;
    let k = a.int_opt("k", 1, MAX_K)?.unwrap_or(5) as usize;
    let server = a.server_opt(catalog, "server")?;
    let explain = a.bool_opt("explain")?.unwrap_or(false);
    // Only what the client's policy lets it call is found.
    let policy = caller.policy();
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
                crate::auth::server_name(catalog, h.doc.server).to_owned(),
            );
            let _ = t.insert("score", (h.score * 1000.0).round() / 1000.0);
            if explain {
                let _ = t.insert("why", search::explanation_json(&index.explain(query, h)));
            }
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

fn plan_workflow(index: &Index, args: &Json) -> Result<String, ArgError> {
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
    let planned = plan::plan(goal, &capabilities, &inputs, index);
    Ok(tool_result(&planned, false))
}

async fn discover_servers(
    shard: &Rc<Shard>,
    catalog: &Arc<Catalog>,
    args: &Json,
) -> Result<String, ArgError> {
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
    let matching: Option<Vec<(usize, String)>> = match capability {
        Some(c) => {
            let index = shard.orchestration().search.get(shard, catalog).await;
            let hits = index.search(c, 20, |_| true);
            // A server offers the capability when one of its tools scores near the best
            // match: a weaker hit only resembles the need.
            let floor = hits.first().map_or(0.0, |h| h.score * CAPABILITY_SHARE);
            Some(
                hits.iter()
                    .filter(|h| h.score >= floor)
                    .map(|h| (h.doc.server, h.doc.name.clone()))
                    .collect(),
            )
        }
        None => None,
    };
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
