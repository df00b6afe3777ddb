//! The proxy's own MCP tools and resources: workflows across servers, capability search,
//! and views of the fleet.
//!
//! # Layout
//! - [`caller`]: what orchestration needs of the session a tool runs for, and what a tool
//!   answers.
//! - [`tools`]: the tool definitions, argument checking and dispatch.
//! - [`workflow`]: the workflow model and its validation (DAG, references).
//! - [`template`]: the `{{...}}` templates of step arguments: parsing and rendering.
//! - [`engine`]: running a workflow: parallel steps, timeouts, retries, `on_error`, cancellation.
//! - [`search`]: capability search over every upstream tool (`search_tools`,
//!   `discover_servers`, plans), ranked by the `toolrank` crate (BM25 with a static word
//!   embedding), the same ranking as `mcpctl tools search`.
//! - [`search_builder`]: the thread that builds each catalog's search index off the shards,
//!   and each shard's end of it.
//! - [`plan`]: `plan_workflow`: a candidate workflow from a goal and capabilities.
//! - [`resources`]: `orchestration://workflows/`, `servers://registry/`, `metrics://performance/`.
//! - [`store`]: saved workflows, persisted atomically in the state directory.
//! - [`fleet`]: figures gathered from every shard over the mesh (replica statistics added up
//!   by one rule, for these tools and the admin API), and live balancing changes.
//! - [`registry_change`]: a new live registry saved, then put in force on every shard (the
//!   admin API's server changes and the balancing changes).
//!
//! # How it hooks in
//! Routing sends `tools/call` of a `proxy__*` name to [`call_tool`], with its session as the
//! [`caller::Caller`], and answers the [`caller::ToolReply`]; `resources/read` of one of
//! [`RESOURCE_URIS`] goes to [`read_resource`]; the merged lists put [`OrchestrationState::tool_items`] and
//! [`OrchestrationState::resource_items`] first. The `proxy` namespace is reserved in the configuration,
//! so no server's tools can collide with these.
//!
//! Everything here is per shard, like the sessions it serves: a run is kept on the shard of
//! the session that started it (the last [`RUNS_KEPT`] of them). The views of the whole proxy
//! (runs of every shard, replica figures, tool counts) ask the other shards over the mesh
//! ([`fleet`]).

pub mod caller;
pub mod engine;
pub mod fleet;
pub mod plan;
pub mod registry_change;
pub mod resources;
pub mod search;
pub mod search_builder;
pub mod store;
pub mod template;
pub mod tools;
pub mod workflow;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use self::caller::{Caller, ToolReply};
use crate::config::Config;
use crate::protocol::jsonrpc::{self, code, Id};
use crate::registry::catalog::Item;
use crate::registry::{Catalog, ServerStatus};
use crate::shard::Shard;

/// Arbitrary JSON as orchestration holds it.
pub type Json = simd_json::OwnedValue;

/// The prefix of the proxy's own tool names.
pub const TOOL_PREFIX: &str = "proxy__";

/// The resources the proxy serves itself.
pub const RESOURCE_URIS: [&str; 3] = [
    resources::WORKFLOWS_URI,
    resources::REGISTRY_URI,
    resources::METRICS_URI,
];

/// How many finished runs a shard keeps for `orchestration://workflows/`.
pub const RUNS_KEPT: usize = 64;

/// A bad argument to one of the proxy's tools: answered with -32602 naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid argument \"{field}\": {reason}")]
pub struct ArgError {
    /// The argument, as a path (`workflow.steps[2].depends_on[0]`).
    pub field: String,
    /// What is wrong with it and what is expected.
    pub reason: String,
}

impl ArgError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> ArgError {
        ArgError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The JSON-RPC error answer, with the field also in `data` for programs.
    pub fn to_body(&self, id: &Id) -> Bytes {
        let mut out = Vec::with_capacity(96 + self.reason.len());
        out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
        id.write_json(&mut out);
        out.extend_from_slice(b",\"error\":{\"code\":");
        out.extend_from_slice(code::INVALID_PARAMS.to_string().as_bytes());
        out.extend_from_slice(b",\"message\":");
        jsonrpc::write_json_string(&mut out, &self.to_string());
        out.extend_from_slice(b",\"data\":{\"field\":");
        jsonrpc::write_json_string(&mut out, &self.field);
        out.extend_from_slice(b"}}}");
        Bytes::from(out)
    }
}

/// A run as `orchestration://workflows/` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunEntry {
    /// Unique on this shard: `{shard}-{n}`.
    pub run_id: String,
    /// The workflow's name, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Where it stands.
    pub status: engine::RunStatus,
    /// When it started (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// Steps finished so far, and in all.
    pub steps_finished: usize,
    /// Steps in the workflow.
    pub steps_total: usize,
    /// Wall time, once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The full report, once finished.
    #[serde(skip)]
    pub report: Option<engine::Report>,
}

/// A shard's orchestration state, the local this layer keeps on each shard.
pub trait ShardOrchestration {
    /// Workflow runs, saved workflows and the tool search index of this shard.
    fn orchestration(&self) -> &OrchestrationState;
}

impl ShardOrchestration for Shard {
    fn orchestration(&self) -> &OrchestrationState {
        self.local::<OrchestrationState>()
    }
}

/// One shard's orchestration state.
pub struct OrchestrationState {
    /// Saved workflows.
    pub store: store::Store,
    tool_items: Vec<Item>,
    resource_items: Vec<Item>,
    runs: RefCell<VecDeque<Rc<RefCell<RunEntry>>>>,
    /// Cancellation flags of running runs, by (session id, request id).
    active: RefCell<HashMap<(String, Id), engine::Cancel>>,
    next_run: Cell<u64>,
    /// The tool-search index, built off the shard.
    pub search: search_builder::ShardIndex,
}

impl OrchestrationState {
    /// The state of a fresh shard.
    pub fn new(config: &Config) -> OrchestrationState {
        OrchestrationState {
            // A fleet member's workflows live in the shared document, held in memory here.
            store: store::Store::new(match config.cluster {
                Some(_) => None,
                None => config.proxy.state_dir.clone(),
            }),
            tool_items: tools::items(),
            resource_items: resources::items(),
            runs: RefCell::new(VecDeque::new()),
            active: RefCell::new(HashMap::new()),
            next_run: Cell::new(1),
            search: search_builder::ShardIndex::new(),
        }
    }

    /// The proxy's own tools, as `tools/list` items.
    pub fn tool_items(&self) -> &[Item] {
        &self.tool_items
    }

    /// The proxy's own resources, as `resources/list` items.
    pub fn resource_items(&self) -> &[Item] {
        &self.resource_items
    }

    /// Registers a new run and returns its entry.
    fn start_run(
        &self,
        shard: usize,
        workflow: Option<String>,
        steps: usize,
    ) -> Rc<RefCell<RunEntry>> {
        let n = self.next_run.get();
        self.next_run.set(n + 1);
        let entry = Rc::new(RefCell::new(RunEntry {
            run_id: format!("{shard}-{n}"),
            workflow,
            status: engine::RunStatus::Running,
            started_at_ms: unix_ms(),
            steps_finished: 0,
            steps_total: steps,
            duration_ms: None,
            report: None,
        }));
        let mut runs = self.runs.borrow_mut();
        // Drop the oldest finished run; running ones stay listed until they end.
        while runs.len() >= RUNS_KEPT {
            match runs
                .iter()
                .position(|r| r.borrow().status != engine::RunStatus::Running)
            {
                Some(i) => {
                    runs.remove(i);
                }
                None => break,
            }
        }
        runs.push_back(entry.clone());
        entry
    }

    /// The runs kept, newest first.
    pub fn runs(&self) -> Vec<RunEntry> {
        self.runs
            .borrow()
            .iter()
            .rev()
            .map(|r| r.borrow().clone())
            .collect()
    }

    /// One kept run, by id.
    pub fn run(&self, run_id: &str) -> Option<RunEntry> {
        self.runs
            .borrow()
            .iter()
            .find(|r| r.borrow().run_id == run_id)
            .map(|r| r.borrow().clone())
    }
}

/// Catalog hook: asks for the new catalog's search index at once, so it is ready (or nearly)
/// when the first search comes.
pub fn follow_catalog(
    shard: &Shard,
    catalog: &std::sync::Arc<Catalog>,
    _kinds: &[crate::protocol::cursor::ListKind],
) {
    shard.orchestration().search.request(shard, catalog);
}

/// True when `name` is one of the proxy's own tools.
pub fn is_own_tool(name: &str) -> bool {
    name.starts_with(TOOL_PREFIX)
}

/// True when `uri` is one of the proxy's own resources (or a run under the workflows one).
pub fn is_own_resource(uri: &str) -> bool {
    RESOURCE_URIS.contains(&uri) || uri.starts_with(resources::WORKFLOWS_URI)
}

/// Answers `tools/call` of one of the proxy's own tools.
pub async fn call_tool(
    shard: &Rc<Shard>,
    session: Rc<dyn Caller>,
    id: Id,
    msg: &Value<'_>,
    accepts_sse: bool,
) -> ToolReply {
    let params = msg.get("params");
    let name = params.and_then(|p| p.get_str("name")).unwrap_or_default();
    let arguments = match params.and_then(|p| p.get("arguments")) {
        None => Json::object(),
        Some(a) if a.is_object() => Json::from(a.clone()),
        Some(_) => {
            return ToolReply::Json(ArgError::new("arguments", "must be an object").to_body(&id))
        }
    };
    let progress_token = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("progressToken"))
        .map(|t| Json::from(t.clone()));
    let call = tools::Call {
        shard: shard.clone(),
        session,
        id,
        name: name.to_owned(),
        arguments,
        progress_token,
        accepts_sse,
    };
    tools::dispatch(call).await
}

/// Answers `resources/read` of one of the proxy's own resources (a JSON-RPC message).
pub async fn read_resource(shard: &Rc<Shard>, id: &Id, msg: &Value<'_>) -> Bytes {
    let uri = msg
        .get("params")
        .and_then(|p| p.get_str("uri"))
        .unwrap_or_default()
        .to_owned();
    match resources::read(shard, &uri).await {
        Ok(text) => {
            let mut out = Vec::with_capacity(text.len() + 96);
            out.extend_from_slice(b"{\"contents\":[{\"uri\":");
            jsonrpc::write_json_string(&mut out, &uri);
            out.extend_from_slice(b",\"mimeType\":\"application/json\",\"text\":");
            jsonrpc::write_json_string(&mut out, &text);
            out.extend_from_slice(b"}]}");
            jsonrpc::result_body(id, &out)
        }
        Err(e) => e.to_body(id),
    }
}

/// Stops a run when the client cancels the request that started it; true if it was one.
pub fn cancel(session: &dyn Caller, request: &Id) -> bool {
    let Some(shard) = session.shard() else {
        return false;
    };
    let key = (session.session_id().to_owned(), request.clone());
    let found = shard.orchestration().active.borrow().get(&key).cloned();
    match found {
        Some(c) => {
            c.cancel();
            true
        }
        None => false,
    }
}

/// Why `name` cannot be a workflow step, if it cannot.
pub fn check_step_tool(catalog: &Catalog, name: &str) -> Result<(), String> {
    if is_own_tool(name) {
        return Err(format!(
            "\"{name}\" is one of the proxy's own tools; workflow steps call upstream tools"
        ));
    }
    if catalog.tool(name).is_some() {
        return Ok(());
    }
    let down = catalog
        .servers
        .iter()
        .zip(&catalog.status)
        .find(|(s, _)| !s.prefix.is_empty() && name.starts_with(&format!("{}__", s.prefix)));
    Err(match down {
        Some((s, ServerStatus::Down(why))) => {
            format!(
                "unknown tool \"{name}\" (server {} is unavailable: {why})",
                s.name
            )
        }
        Some((s, ServerStatus::Pending)) => {
            format!(
                "unknown tool \"{name}\" (server {} has not been reached yet)",
                s.name
            )
        }
        _ => format!("unknown tool \"{name}\"; proxy__search_tools finds tools by what they do"),
    })
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Serializes a value for a tool result or resource.
fn to_json_text<T: serde::Serialize>(v: &T) -> String {
    simd_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
