//! The proxy's own resources, and the facts they share with the fleet tools.
//!
//! - `orchestration://workflows/`: recent runs of this shard (newest first) and the saved
//!   workflows; `orchestration://workflows/{run_id}` is one run's full report.
//! - `servers://registry/`: every configured server, its state and what it offers.
//! - `metrics://performance/`: what this shard measures today (sessions, requests in flight,
//!   step statistics from recent runs); latency histograms arrive with issue 5.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;
use simd_json::prelude::*;

use super::engine::{RunStatus, StepStatus};
use super::{to_json_text, ArgError, Json};
use crate::config::Transport;
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
    r#"{"uri":"orchestration://workflows/","name":"workflow-runs","title":"Workflow runs","description":"Recent workflow runs on this shard with their status (the last 64), and the saved workflows. orchestration://workflows/{run_id} is one run's full report.","mimeType":"application/json"}"#,
    r#"{"uri":"servers://registry/","name":"server-registry","title":"Server registry","description":"Every configured upstream server: transport, state, tags and item counts.","mimeType":"application/json"}"#,
    r#"{"uri":"metrics://performance/","name":"performance","title":"Performance","description":"What the proxy measures today: sessions and requests in flight on this shard, and per-tool step statistics from recent workflow runs.","mimeType":"application/json"}"#,
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
    for run in shard.orchestration.runs().into_iter().rev() {
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

#[derive(Serialize)]
struct Runs<'a> {
    shard: usize,
    note: &'static str,
    runs: &'a [super::RunEntry],
    saved_workflows: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    saved_workflows_error: Option<String>,
}

#[derive(Serialize)]
struct Registry {
    servers: Vec<ServerFacts>,
    catalog_generation: u64,
}

#[derive(Serialize)]
struct Metrics {
    shard: usize,
    sessions: usize,
    requests_in_flight: usize,
    runs: BTreeMap<&'static str, u64>,
    tools_in_recent_runs: Vec<StepStats>,
    not_available: &'static str,
}

/// The text of one of the proxy's resources; an unknown one is a bad `uri`.
pub fn read(shard: &Shard, uri: &str) -> Result<String, ArgError> {
    let catalog = shard.catalog();
    let state = &shard.orchestration;
    if uri == WORKFLOWS_URI {
        let runs = state.runs();
        let (saved, saved_error) = match state.store.names() {
            Ok(n) => (n, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        return Ok(to_json_text(&Runs {
            shard: shard.id,
            note: "runs started by sessions on this shard, newest first; the last 64 are kept",
            runs: &runs,
            saved_workflows: saved,
            saved_workflows_error: saved_error,
        }));
    }
    if let Some(run_id) = uri.strip_prefix(WORKFLOWS_URI) {
        let run = state.run(run_id).ok_or_else(|| {
            ArgError::new(
                "uri",
                format!("no run \"{run_id}\" on this shard (runs are kept per shard, the last 64)"),
            )
        })?;
        let mut v = simd_json::serde::to_owned_value(&run).unwrap_or_else(|_| Json::object());
        if let Some(report) = &run.report {
            if let Ok(r) = simd_json::serde::to_owned_value(report) {
                let _ = v.insert("report", r);
            }
        }
        return Ok(to_json_text(&v));
    }
    if uri == REGISTRY_URI {
        return Ok(to_json_text(&Registry {
            servers: server_facts(shard, &catalog),
            catalog_generation: catalog.generation,
        }));
    }
    if uri == METRICS_URI {
        let mut runs = BTreeMap::new();
        for r in state.runs() {
            let key = match r.status {
                RunStatus::Running => "running",
                RunStatus::Succeeded => "succeeded",
                RunStatus::CompletedWithErrors => "completed_with_errors",
                RunStatus::Failed => "failed",
                RunStatus::Cancelled => "cancelled",
            };
            *runs.entry(key).or_default() += 1;
        }
        return Ok(to_json_text(&Metrics {
            shard: shard.id,
            sessions: shard.session_count(),
            requests_in_flight: shard.requests_in_flight(),
            runs,
            tools_in_recent_runs: recent_step_stats(shard, &catalog),
            not_available: "latency histograms and error rates per server and tool from live traffic (issue 5); per-replica figures (issue 4)",
        }));
    }
    Err(ArgError::new("uri", format!("unknown resource \"{uri}\"")))
}
