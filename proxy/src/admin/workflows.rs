//! `/api/v1/workflows`: saved workflows, managed by operators (see `docs/admin-api.md`).
//!
//! The workflows are the ones `proxy__orchestrate_workflow` runs by `name`: stored in
//! `{state_dir}/workflows.json` (replaced atomically, read by every shard when a run asks), or
//! in memory without a state directory, where shard 0 (which serves the admin API) sends the
//! new set to every other shard after each change. A fleet member's workflows are in the
//! fleet's shared document in etcd (`registry_change::change_workflows`), held in memory by
//! every shard and written with a compare-and-set like registry changes. A workflow is validated on PUT exactly as a
//! run validates it, so a saved workflow always named tools that existed when it was saved.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::{json, Value};
use simd_json::prelude::*;

use super::api::registry_error;
use super::Response;
use crate::http::Request;
use crate::orchestration::fleet::Tell;
use crate::orchestration::registry_change::change_workflows;
use crate::orchestration::workflow::Workflow;
use crate::orchestration::ShardOrchestration;
use crate::orchestration::{check_step_tool, Json};
use crate::shard::Shard;

/// Longest workflow name.
const MAX_NAME: usize = 64;

fn answer(status: u16, body: Value) -> Response {
    Response::json(status, body.to_string())
}

fn error(status: u16, kind: &str, message: impl std::fmt::Display) -> Response {
    answer(status, json!({"error": message.to_string(), "kind": kind}))
}

fn state_error(e: impl std::fmt::Display) -> Response {
    error(500, "state", e)
}

/// Answers `METHOD /api/v1/workflows[/NAME]` (`rest` is what follows `workflows`).
pub async fn handle(shard: &Rc<Shard>, method: &str, rest: &[&str], request: &Request) -> Response {
    let store = &shard.orchestration().store;
    match (method, rest) {
        ("GET", []) => match store.all() {
            Ok(all) => {
                let list: Vec<Value> = all
                    .iter()
                    .map(|(name, wf)| {
                        let steps = wf.get("steps").and_then(|s| s.as_array()).map_or(0, Vec::len);
                        let mut v = json!({"name": name, "steps": steps});
                        if let Some(d) = wf.get_str("description") {
                            v["description"] = d.into();
                        }
                        v
                    })
                    .collect();
                answer(200, json!({"count": list.len(), "workflows": list}))
            }
            Err(e) => state_error(e),
        },
        ("GET", [name]) => match store.get(name) {
            Ok(Some(wf)) => answer(200, json!({"name": name, "workflow": to_serde(&wf)})),
            Ok(None) => not_found(shard, name),
            Err(e) => state_error(e),
        },
        ("PUT", [name]) => put(shard, name, request).await,
        ("DELETE", [name]) if crate::cluster::get().is_some() => {
            let removed =
                change_workflows(shard, |all: &mut BTreeMap<String, Value>| all.remove(*name).is_some())
                    .await;
            match removed {
                Ok(true) => {
                    log::info!("admin: workflow {name} removed from the fleet");
                    answer(200, json!({"name": name, "removed": true}))
                }
                Ok(false) => not_found(shard, name),
                Err(e) => registry_error(&e),
            }
        }
        ("DELETE", [name]) => match store.remove(name) {
            Ok(true) => {
                share(shard);
                log::info!("admin: workflow {name} removed");
                answer(200, json!({"name": name, "removed": true}))
            }
            Ok(false) => not_found(shard, name),
            Err(e) => state_error(e),
        },
        (_, [] | [_]) => error(
            405,
            "method",
            format!(
                "{method} is not allowed on {}; use GET /api/v1/workflows, or GET, PUT or DELETE /api/v1/workflows/NAME",
                request.path()
            ),
        ),
        _ => error(
            404,
            "not_found",
            "no such route; use /api/v1/workflows or /api/v1/workflows/NAME",
        ),
    }
}

fn not_found(shard: &Shard, name: &str) -> Response {
    let known = shard.orchestration().store.names().unwrap_or_default();
    answer(
        404,
        json!({
            "error": format!("no saved workflow \"{name}\"; `mcpctl workflows ls` lists them"),
            "kind": "not_found",
            "known": known,
        }),
    )
}

async fn put(shard: &Rc<Shard>, name: &str, request: &Request) -> Response {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return answer(
            400,
            json!({
                "error": format!("invalid workflow name \"{name}\": use 1 to {MAX_NAME} letters, digits, '_', '-' or '.'"),
                "kind": "invalid",
                "field": "name",
            }),
        );
    }
    let mut body = request.body.to_vec();
    let workflow: Json = match simd_json::to_owned_value(&mut body) {
        Ok(v) if v.is_object() => v,
        Ok(_) => {
            return answer(
                400,
                json!({"error": "the body must be a workflow object: {\"steps\": [...]}", "kind": "invalid", "field": "workflow"}),
            )
        }
        Err(e) => {
            return answer(
                400,
                json!({"error": format!("the body is not JSON ({e}); send the workflow object, e.g. {{\"steps\":[{{\"id\":\"a\",\"tool\":\"server__tool\"}}]}}"), "kind": "invalid", "field": "workflow"}),
            )
        }
    };
    let catalog = shard.catalog();
    let check = |t: &str| check_step_tool(&catalog, t);
    if let Err(e) = Workflow::from_json(&workflow, "workflow", &check) {
        return answer(
            400,
            json!({"error": e.to_string(), "kind": "invalid", "field": e.field}),
        );
    }
    if crate::cluster::get().is_some() {
        let value = to_serde(&workflow);
        let saved = change_workflows(shard, |all: &mut BTreeMap<String, Value>| {
            all.insert(name.to_owned(), value.clone()).is_some()
        })
        .await;
        return match saved {
            Ok(existed) => {
                log::info!("admin: workflow {name} saved for the fleet");
                answer(
                    if existed { 200 } else { 201 },
                    json!({"name": name, "created": !existed, "workflow": value}),
                )
            }
            Err(e) => registry_error(&e),
        };
    }
    let store = &shard.orchestration().store;
    let existed = match store.get(name) {
        Ok(found) => found.is_some(),
        Err(e) => return state_error(e),
    };
    if let Err(e) = store.put(name, workflow.clone()) {
        return state_error(e);
    }
    share(shard);
    log::info!("admin: workflow {name} saved");
    answer(
        if existed { 200 } else { 201 },
        json!({"name": name, "created": !existed, "workflow": to_serde(&workflow)}),
    )
}

/// Without a state directory, every other shard gets the new set (with one, they read the file).
fn share(shard: &Shard) {
    let store = &shard.orchestration().store;
    if !store.in_memory() {
        return;
    }
    let Ok(all) = store.all() else {
        return;
    };
    for peer in (0..shard.nr_shards).filter(|p| *p != shard.id) {
        let all = all.clone();
        shard.mesh.tell(peer, move |owner: &std::rc::Rc<Shard>| {
            crate::orchestration::fleet::told(owner, Tell::Workflows(all))
        });
    }
}

fn to_serde(v: &Json) -> Value {
    serde_json::from_str(&v.encode()).unwrap_or(Value::Null)
}
