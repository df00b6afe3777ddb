//! The tools that call upstream tools on the caller's behalf: `call_tool` (one call, forwarded
//! like the client's own) and `orchestrate_workflow` (a workflow run through the caller's
//! upstream sessions, with progress and cancellation).

use std::rc::Rc;

use simd_json::prelude::*;

use super::args::Args;
use super::{tool_result, Call};
use crate::orchestration::caller::{Caller, ToolReply};
use crate::orchestration::engine::{self, Cancel, Executor, RunStatus, StepError};
use crate::orchestration::workflow::Workflow;
use crate::orchestration::ShardOrchestration;
use crate::orchestration::{check_step_tool, is_own_tool, to_json_text, ArgError, Json};
use crate::protocol::jsonrpc::{self, code};
use crate::registry::Catalog;
use crate::upstream::cancel::CancelOnDrop;

/// `call_tool`: forwarded like a client's own `tools/call` of that tool.
pub(super) fn call_tool(call: Call, catalog: &Catalog) -> ToolReply {
    let checked = (|| {
        let a = Args::new(&call.arguments, &["name", "arguments"])?;
        let name = a.str_req("name")?;
        let arguments = a
            .obj_opt("arguments")?
            .cloned()
            .unwrap_or_else(Json::object);
        if is_own_tool(name) {
            return Err(ArgError::new("name", "call the proxy's own tools directly"));
        }
        let (server, original) = catalog
            .tool(name)
            .filter(|(s, _)| call.session.permits_tool(catalog, *s, name))
            .ok_or_else(|| {
                // A tool the client's policy hides gets the words of one that does not exist.
                let why = check_step_tool(catalog, name).err().unwrap_or_else(|| {
                    format!(
                        "unknown tool \"{name}\"; proxy__search_tools finds tools by what they do"
                    )
                });
                ArgError::new("name", why)
            })?;
        Ok((server, original.to_owned(), arguments))
    })();
    let (server, original, arguments) = match checked {
        Ok(x) => x,
        Err(e) => return ToolReply::Json(e.to_body(&call.id)),
    };
    let mut params = Json::object();
    let _ = params.insert("name", original);
    let _ = params.insert("arguments", arguments);
    if let Some(token) = call.progress_token {
        let mut meta = Json::object();
        let _ = meta.insert("progressToken", token);
        let _ = params.insert("_meta", meta);
    }
    let request = jsonrpc::request_body(&call.id, "tools/call", params.encode().as_bytes());
    ToolReply::Forward { server, request }
}

/// Steps call upstream tools through the session's own upstream sessions, as its client would.
struct SessionExecutor {
    session: Rc<dyn Caller>,
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
            .filter(|(s, _)| self.session.permits_tool(&self.catalog, *s, tool))
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
pub(super) async fn orchestrate(call: Call, catalog: &std::sync::Arc<Catalog>) -> ToolReply {
    let prepared = (|| {
        let a = Args::new(&call.arguments, &["workflow", "name", "inputs"])?;
        let inputs = a.obj_opt("inputs")?.cloned().unwrap_or_else(Json::object);
        // Steps may only name tools the client may call; a hidden one reads as unknown.
        let check = |t: &str| {
            check_step_tool(catalog, t)?;
            match catalog.tool(t) {
                Some((s, _)) if !call.session.permits_tool(catalog, s, t) => Err(format!(
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
        Err(e) => return ToolReply::Json(e.to_body(&call.id)),
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
    let key = (session.session_id().to_owned(), call.id.clone());
    state
        .active
        .borrow_mut()
        .insert(key.clone(), cancel.clone());
    let exec: Rc<dyn Executor> = Rc::new(SessionExecutor {
        session: session.clone(),
        catalog: catalog.clone(),
    });
    let token = call.progress_token.clone();
    let stream = (token.is_some() && call.accepts_sse).then(|| session.open_stream());
    let id = call.id.clone();
    let busy = shard.begin_request();
    let work = async move {
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
                        to_json_text(&rec.status).trim_matches('"')
                    ),
                );
                session.send(
                    stream,
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
            glommio::spawn_local(async move {
                if let Some(answer) = work.await {
                    session.send(Some(out), answer);
                }
                session.finish_stream(out);
            })
            .detach();
            ToolReply::Stream(out)
        }
        None => match work.await {
            Some(answer) => ToolReply::Json(answer),
            None => ToolReply::Silent,
        },
    }
}
