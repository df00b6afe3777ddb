//! Running a workflow: independent steps in parallel up to a bound, each with its timeout,
//! retries and `on_error`, a progress callback per finished step, and cancellation.
//!
//! Steps run as glommio tasks on the shard of the session that asked; the engine waits for
//! the next finished step (or a short tick, to notice a cancellation) and starts whatever
//! became ready. Dropping a glommio task cancels it, so stopping a run is dropping its
//! running steps: their upstream calls are abandoned where they stand.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::{self, BoxedLocal};
use glommio::channels::local_channel::{self, LocalSender};
use serde::Serialize;
use simd_json::prelude::*;

use super::template::{self, Context};
use super::workflow::{self, OnError, Workflow};
use super::Json;

/// How often a run waiting on its steps looks at its cancellation flag.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// Calls one tool for a step. The proxy's executor goes through the session's upstreams;
/// tests use a fake.
pub trait Executor {
    /// Calls `tool` (an exposed name) and returns its `tools/call` result.
    fn call(&self, tool: &str, arguments: Json) -> BoxedLocal<Result<Json, StepError>>;
}

/// Why one attempt of a step failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StepError {
    /// The call was answered with a JSON-RPC error (by the proxy or the server).
    #[error("error {code}: {message}")]
    Rejected {
        /// The JSON-RPC error code.
        code: i64,
        /// Its message.
        message: String,
    },
    /// The tool ran and reported a failure (`isError`).
    #[error("the tool reported an error: {0}")]
    Tool(String),
    /// The server could not be reached or broke the protocol.
    #[error("{0}")]
    Upstream(String),
    /// The attempt took longer than the step's timeout.
    #[error("timed out after {0} ms")]
    Timeout(u128),
    /// A template could not be filled in from the inputs and earlier results.
    #[error("arguments could not be filled in: {0}")]
    Template(String),
}

impl StepError {
    /// Whether trying again can help: arguments the server refused will be refused again.
    pub fn retryable(&self) -> bool {
        match self {
            StepError::Rejected { code, .. } => !matches!(*code, -32602..=-32600),
            StepError::Template(_) => false,
            StepError::Tool(_) | StepError::Upstream(_) | StepError::Timeout(_) => true,
        }
    }
}

/// Where a step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Waiting for its dependencies.
    Pending,
    /// Being called.
    Running,
    /// Its tool answered.
    Succeeded,
    /// It failed and its fallback answered instead.
    FellBack,
    /// It failed (after retries, and its fallback if any).
    Failed,
    /// Not run: a step it depends on failed, or the run was aborted.
    Skipped,
    /// Stopped or never started because the run was cancelled or aborted.
    Cancelled,
}

/// How a run ended (or that it has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps are still running.
    Running,
    /// Every step succeeded (some perhaps through their fallback).
    Succeeded,
    /// Some steps failed under `continue`; the others ran.
    CompletedWithErrors,
    /// A step failed under `abort`.
    Failed,
    /// The caller cancelled it.
    Cancelled,
}

/// One step's outcome and timing.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// The step id.
    pub id: String,
    /// The tool called (the fallback's when it stood in).
    pub tool: String,
    /// Where it stands.
    pub status: StepStatus,
    /// Attempts made (fallback not counted).
    pub attempts: u32,
    /// When it started, in ms since the run started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// How long it took, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The tool result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Json>,
    /// Why it failed, was skipped or fell back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// How it ended.
    pub status: RunStatus,
    /// Every step, in workflow order.
    pub steps: Vec<StepRecord>,
    /// Wall time of the run, in ms.
    pub duration_ms: u64,
}

/// A run's cancellation flag, raised by `notifications/cancelled`, plus an optional watch
/// (the proxy's: "the session has ended").
#[derive(Clone, Default)]
pub struct Cancel {
    flag: Rc<Cell<bool>>,
    watch: Option<Rc<dyn Fn() -> bool>>,
}

impl Cancel {
    /// A flag that also counts as raised whenever `watch` says so.
    pub fn watching(watch: Rc<dyn Fn() -> bool>) -> Cancel {
        Cancel {
            flag: Rc::default(),
            watch: Some(watch),
        }
    }

    /// Asks the run to stop.
    pub fn cancel(&self) {
        self.flag.set(true);
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.flag.get() || self.watch.as_ref().is_some_and(|w| w())
    }
}

/// What one step task sends back.
struct Outcome {
    index: usize,
    status: StepStatus,
    tool: String,
    attempts: u32,
    result: Option<Json>,
    error: Option<String>,
    finished: Instant,
}

/// Runs `wf` with `inputs`, calling `progress(record, finished, total)` as each step ends.
pub async fn run(
    wf: &Workflow,
    inputs: &Json,
    exec: Rc<dyn Executor>,
    cancel: &Cancel,
    progress: &mut dyn FnMut(&StepRecord, usize, usize),
) -> Report {
    let start = Instant::now();
    let total = wf.steps.len();
    let ids: Vec<String> = wf.steps.iter().map(|s| s.id.clone()).collect();
    let mut records: Vec<StepRecord> = wf
        .steps
        .iter()
        .map(|s| StepRecord {
            id: s.id.clone(),
            tool: s.tool.clone(),
            status: StepStatus::Pending,
            attempts: 0,
            started_ms: None,
            duration_ms: None,
            result: None,
            error: None,
        })
        .collect();
    let mut results: Vec<Option<Json>> = vec![None; total];
    let mut running: HashMap<usize, glommio::Task<()>> = HashMap::new();
    let mut started_at: Vec<Option<Instant>> = vec![None; total];
    let mut finished = 0usize;
    let mut status = RunStatus::Running;
    let (tx, rx) = local_channel::new_unbounded::<Outcome>();
    let tx = Rc::new(tx);

    loop {
        if cancel.is_cancelled() {
            status = RunStatus::Cancelled;
            stop_all(
                &mut running,
                &mut records,
                &mut finished,
                total,
                progress,
                StepStatus::Cancelled,
                "the run was cancelled",
            );
            break;
        }
        // Start what is ready, in workflow order, up to the bound; skip what can never run.
        let mut progressed = true;
        while progressed {
            progressed = false;
            for i in 0..total {
                if records[i].status != StepStatus::Pending {
                    continue;
                }
                let step = &wf.steps[i];
                if let Some(bad) = step.depends_on.iter().find(|d| {
                    matches!(
                        records[**d].status,
                        StepStatus::Failed | StepStatus::Skipped | StepStatus::Cancelled
                    )
                }) {
                    records[i].status = StepStatus::Skipped;
                    records[i].error = Some(format!("step \"{}\" did not succeed", ids[*bad]));
                    finished += 1;
                    progress(&records[i], finished, total);
                    progressed = true;
                    continue;
                }
                let ready = step.depends_on.iter().all(|d| {
                    matches!(
                        records[*d].status,
                        StepStatus::Succeeded | StepStatus::FellBack
                    )
                });
                if !ready || running.len() >= wf.max_parallel {
                    continue;
                }
                let ctx = Context {
                    inputs,
                    ids: &ids,
                    results: &results,
                };
                let args = template::render(&step.arguments, &ctx);
                let fallback = match &step.on_error {
                    OnError::Fallback { tool, arguments } => {
                        Some((tool.clone(), template::render(arguments, &ctx)))
                    }
                    _ => None,
                };
                let now = Instant::now();
                started_at[i] = Some(now);
                records[i].status = StepStatus::Running;
                records[i].started_ms = Some(ms(now - start));
                let task = glommio::spawn_local(perform(
                    i,
                    exec.clone(),
                    step.tool.clone(),
                    args,
                    step.timeout,
                    step.retry,
                    fallback,
                    tx.clone(),
                ));
                running.insert(i, task);
            }
        }
        if running.is_empty() {
            break;
        }
        let got = future::or(async { rx.recv().await }, async {
            glommio::timer::sleep(CANCEL_POLL).await;
            None
        })
        .await;
        let Some(out) = got else {
            continue;
        };
        running.remove(&out.index);
        let i = out.index;
        let rec = &mut records[i];
        rec.status = out.status;
        rec.tool = out.tool;
        rec.attempts = out.attempts;
        rec.error = out.error;
        rec.duration_ms = started_at[i].map(|s| ms(out.finished - s));
        results[i] = out.result.clone();
        rec.result = out.result;
        finished += 1;
        progress(&records[i], finished, total);
        if out.status == StepStatus::Failed && matches!(wf.steps[i].on_error, OnError::Abort) {
            status = RunStatus::Failed;
            let why = format!("aborted: step \"{}\" failed", ids[i]);
            stop_all(
                &mut running,
                &mut records,
                &mut finished,
                total,
                progress,
                StepStatus::Skipped,
                &why,
            );
            break;
        }
    }
    if status == RunStatus::Running {
        status = if records
            .iter()
            .all(|r| matches!(r.status, StepStatus::Succeeded | StepStatus::FellBack))
        {
            RunStatus::Succeeded
        } else {
            RunStatus::CompletedWithErrors
        };
    }
    Report {
        status,
        steps: records,
        duration_ms: ms(start.elapsed()),
    }
}

/// Stops a run: running steps are dropped (cancelled), pending ones marked `pending_as`.
fn stop_all(
    running: &mut HashMap<usize, glommio::Task<()>>,
    records: &mut [StepRecord],
    finished: &mut usize,
    total: usize,
    progress: &mut dyn FnMut(&StepRecord, usize, usize),
    pending_as: StepStatus,
    why: &str,
) {
    running.clear();
    for rec in records.iter_mut() {
        let status = match rec.status {
            StepStatus::Running => StepStatus::Cancelled,
            StepStatus::Pending => pending_as,
            _ => continue,
        };
        rec.status = status;
        rec.error = Some(why.to_owned());
        *finished += 1;
        progress(rec, *finished, total);
    }
}

/// One step: attempts with retries, then the fallback; the outcome goes to `tx`.
#[allow(clippy::too_many_arguments)]
async fn perform(
    index: usize,
    exec: Rc<dyn Executor>,
    tool: String,
    args: Result<Json, String>,
    timeout: Duration,
    retry: workflow::Retry,
    fallback: Option<(String, Result<Json, String>)>,
    tx: Rc<LocalSender<Outcome>>,
) {
    let mut attempts = 0;
    let outcome = |status, tool: &str, attempts, result, error| Outcome {
        index,
        status,
        tool: tool.to_owned(),
        attempts,
        result,
        error,
        finished: Instant::now(),
    };
    let failure = match args {
        Err(e) => StepError::Template(e),
        Ok(args) => loop {
            attempts += 1;
            match attempt(&*exec, &tool, args.clone(), timeout).await {
                Ok(result) => {
                    let _ = tx.try_send(outcome(
                        StepStatus::Succeeded,
                        &tool,
                        attempts,
                        Some(result),
                        None,
                    ));
                    return;
                }
                Err(e) if attempts < retry.attempts && e.retryable() => {
                    glommio::timer::sleep(retry.backoff).await;
                }
                Err(e) => break e,
            }
        },
    };
    let sent = match fallback {
        None => outcome(
            StepStatus::Failed,
            &tool,
            attempts,
            None,
            Some(failure.to_string()),
        ),
        Some((fb_tool, Err(e))) => outcome(
            StepStatus::Failed,
            &tool,
            attempts,
            None,
            Some(format!(
                "{failure}; fallback {fb_tool}: arguments could not be filled in: {e}"
            )),
        ),
        Some((fb_tool, Ok(fb_args))) => match attempt(&*exec, &fb_tool, fb_args, timeout).await {
            Ok(result) => outcome(
                StepStatus::FellBack,
                &fb_tool,
                attempts,
                Some(result),
                Some(format!("{failure}; fell back to {fb_tool}")),
            ),
            Err(e) => outcome(
                StepStatus::Failed,
                &tool,
                attempts,
                None,
                Some(format!("{failure}; fallback {fb_tool} failed too: {e}")),
            ),
        },
    };
    let _ = tx.try_send(sent);
}

/// One call bounded by `timeout`; a result with `isError` is a failure.
async fn attempt(
    exec: &dyn Executor,
    tool: &str,
    args: Json,
    timeout: Duration,
) -> Result<Json, StepError> {
    let call = exec.call(tool, args);
    let result = future::or(call, async {
        glommio::timer::sleep(timeout).await;
        Err(StepError::Timeout(timeout.as_millis()))
    })
    .await?;
    if result.get_bool("isError") == Some(true) {
        let text = template::text_of(&result);
        return Err(StepError::Tool(if text.is_empty() {
            "no details".into()
        } else {
            text
        }));
    }
    Ok(result)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use simd_json::json;
    use std::cell::RefCell;

    /// A fake executor: each tool name decides the behaviour, and every call is logged.
    struct Fake {
        log: Rc<RefCell<Vec<(String, Json)>>>,
        flaky_left: Cell<u32>,
    }

    impl Executor for Fake {
        fn call(&self, tool: &str, arguments: Json) -> BoxedLocal<Result<Json, StepError>> {
            self.log
                .borrow_mut()
                .push((tool.to_owned(), arguments.clone()));
            let tool = tool.to_owned();
            let flaky = if tool == "t__flaky" && self.flaky_left.get() > 0 {
                self.flaky_left.set(self.flaky_left.get() - 1);
                true
            } else {
                false
            };
            let log = self.log.clone();
            Box::pin(async move {
                let text = |t: String| Ok(json!({"content": [{"type": "text", "text": t}]}));
                match tool.as_str() {
                    "t__sum" => {
                        let a = arguments.get_i64("a").unwrap_or(0);
                        let b = arguments.get_i64("b").unwrap_or(0);
                        Ok(json!({"content": [], "structuredContent": {"sum": a + b}}))
                    }
                    "t__echo" => text(format!(
                        "Echo: {}",
                        arguments.get_str("message").unwrap_or("")
                    )),
                    "t__slow" => {
                        glommio::timer::sleep(Duration::from_millis(
                            arguments.get_u64("ms").unwrap_or(1000),
                        ))
                        .await;
                        // Logged so a test can tell a call that ran to its end from one dropped.
                        log.borrow_mut()
                            .push(("t__slow finished".into(), json!(null)));
                        text("slow done".into())
                    }
                    "t__fail" => {
                        Ok(json!({"isError": true, "content": [{"type": "text", "text": "boom"}]}))
                    }
                    "t__bad" => Err(StepError::Rejected {
                        code: -32602,
                        message: "bad args".into(),
                    }),
                    "t__flaky" if flaky => Err(StepError::Upstream("connection reset".into())),
                    _ => text(format!("{tool} ok")),
                }
            })
        }
    }

    type CallLog = Rc<RefCell<Vec<(String, Json)>>>;
    /// What a test run gives back: the report, the calls made, the progress seen.
    type Ran = (
        Report,
        Vec<(String, Json)>,
        Vec<(String, StepStatus, usize)>,
    );

    fn fake() -> (Rc<Fake>, CallLog) {
        let log = Rc::new(RefCell::new(Vec::new()));
        (
            Rc::new(Fake {
                log: log.clone(),
                flaky_left: Cell::new(2),
            }),
            log,
        )
    }

    fn tools(_: &str) -> Result<(), String> {
        Ok(())
    }

    fn wf(v: Json) -> Workflow {
        Workflow::from_json(&v, "workflow", &tools).expect("valid workflow")
    }

    fn run_glommio<F, Fut, T>(f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("spawn executor")
            .join()
            .expect("join executor")
    }

    fn run_sync(w: Workflow, inputs: Json, cancel_after: Option<Duration>) -> Ran {
        run_glommio(move || async move {
            let (exec, log) = fake();
            let cancel = Cancel::default();
            if let Some(after) = cancel_after {
                let c = cancel.clone();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(after).await;
                    c.cancel();
                })
                .detach();
            }
            let mut seen = Vec::new();
            let report = run(&w, &inputs, exec, &cancel, &mut |r, done, _| {
                seen.push((r.id.clone(), r.status, done))
            })
            .await;
            let calls = log.borrow().clone();
            (report, calls, seen)
        })
    }

    fn status_of(r: &Report, id: &str) -> StepStatus {
        r.steps
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.status)
            .expect("step")
    }

    #[test]
    fn fan_out_then_join_passes_results() {
        let w = wf(json!({"steps": [
            {"id": "sum", "tool": "t__sum", "arguments": {"a": "{{inputs.a}}", "b": 3}},
            {"id": "echo", "tool": "t__echo", "arguments": {"message": "hi"}},
            {"id": "store", "tool": "t__echo", "arguments": {"message": "sum={{steps.sum/sum}}"}},
            {"id": "read", "tool": "t__read", "depends_on": ["store", "echo"]}
        ]}));
        let (r, calls, seen) = run_sync(w, json!({"a": 2}), None);
        assert_eq!(r.status, RunStatus::Succeeded);
        assert_eq!(calls.len(), 4);
        // sum and echo start together; store waits for sum; read comes last.
        assert_eq!(calls[0].0, "t__sum");
        assert_eq!(calls[1].0, "t__echo");
        assert_eq!(calls[3].0, "t__read");
        assert!(
            calls
                .iter()
                .any(|(_, a)| a.get_str("message") == Some("sum=5")),
            "{calls:?}"
        );
        assert_eq!(seen.len(), 4);
        assert_eq!(seen.last().map(|s| s.2), Some(4));
        assert!(r
            .steps
            .iter()
            .all(|s| s.duration_ms.is_some() && s.attempts == 1));
    }

    #[test]
    fn parallelism_is_bounded() {
        let w = wf(json!({"max_parallel": 2, "steps": [
            {"id": "a", "tool": "t__slow", "arguments": {"ms": 100}},
            {"id": "b", "tool": "t__slow", "arguments": {"ms": 100}},
            {"id": "c", "tool": "t__slow", "arguments": {"ms": 100}}
        ]}));
        let (r, _, _) = run_sync(w, json!({}), None);
        assert_eq!(r.status, RunStatus::Succeeded);
        let c = r.steps[2].started_ms.expect("started");
        assert!(c >= 90, "c started at {c} ms: it should wait for a slot");
        assert!(r.steps[1].started_ms.expect("started") < 50);
    }

    #[test]
    fn continue_skips_dependents_only() {
        let w = wf(json!({"steps": [
            {"id": "bad", "tool": "t__fail", "on_error": "continue"},
            {"id": "after", "tool": "t__echo", "depends_on": ["bad"]},
            {"id": "other", "tool": "t__echo", "arguments": {"message": "x"}}
        ]}));
        let (r, calls, _) = run_sync(w, json!({}), None);
        assert_eq!(r.status, RunStatus::CompletedWithErrors);
        assert_eq!(status_of(&r, "bad"), StepStatus::Failed);
        assert!(r.steps[0].error.as_deref().unwrap_or("").contains("boom"));
        assert_eq!(status_of(&r, "after"), StepStatus::Skipped);
        assert_eq!(status_of(&r, "other"), StepStatus::Succeeded);
        assert_eq!(calls.len(), 2);
    }

    #[test]
    fn abort_stops_the_run() {
        let w = wf(json!({"steps": [
            {"id": "slow", "tool": "t__slow", "arguments": {"ms": 2000}},
            {"id": "bad", "tool": "t__fail"},
            {"id": "later", "tool": "t__echo", "depends_on": ["bad"]},
            {"id": "later2", "tool": "t__echo", "depends_on": ["slow"]}
        ]}));
        let (r, calls, _) = run_sync(w, json!({}), None);
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(status_of(&r, "bad"), StepStatus::Failed);
        assert_eq!(status_of(&r, "slow"), StepStatus::Cancelled);
        assert_eq!(status_of(&r, "later"), StepStatus::Skipped);
        assert_eq!(status_of(&r, "later2"), StepStatus::Skipped);
        // The slow call was dropped when the run aborted, not waited for.
        let tools: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(tools, ["t__slow", "t__fail"]);
    }

    #[test]
    fn retries_then_succeeds_and_refusals_are_not_retried() {
        let w = wf(json!({"steps": [
            {"id": "f", "tool": "t__flaky", "retry": {"attempts": 3, "backoff_ms": 1}},
            {"id": "b", "tool": "t__bad", "retry": {"attempts": 3, "backoff_ms": 1}, "on_error": "continue"}
        ]}));
        let (r, calls, _) = run_sync(w, json!({}), None);
        assert_eq!(status_of(&r, "f"), StepStatus::Succeeded);
        assert_eq!(r.steps[0].attempts, 3);
        assert_eq!(r.steps[1].attempts, 1);
        assert_eq!(calls.iter().filter(|c| c.0 == "t__bad").count(), 1);
    }

    #[test]
    fn timeout_then_fallback() {
        let w = wf(json!({"steps": [
            {"id": "s", "tool": "t__slow", "arguments": {"ms": 5000}, "timeout_ms": 30,
             "on_error": "fallback", "fallback": {"tool": "t__echo", "arguments": {"message": "plan b"}}},
            {"id": "use", "tool": "t__echo", "arguments": {"message": "{{steps.s.text}}"}}
        ]}));
        let (r, calls, _) = run_sync(w, json!({}), None);
        assert_eq!(r.status, RunStatus::Succeeded);
        assert_eq!(status_of(&r, "s"), StepStatus::FellBack);
        assert_eq!(r.steps[0].tool, "t__echo");
        assert!(r.steps[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("timed out after 30 ms"));
        assert_eq!(
            calls
                .last()
                .and_then(|c| c.1.get_str("message").map(str::to_owned))
                .as_deref(),
            Some("Echo: plan b")
        );
    }

    #[test]
    fn cancellation_stops_remaining_steps() {
        let w = wf(json!({"steps": [
            {"id": "slow", "tool": "t__slow", "arguments": {"ms": 3000}},
            {"id": "next", "tool": "t__echo", "depends_on": ["slow"]}
        ]}));
        let (r, calls, seen) = run_sync(w, json!({}), Some(Duration::from_millis(100)));
        assert_eq!(r.status, RunStatus::Cancelled);
        assert_eq!(status_of(&r, "slow"), StepStatus::Cancelled);
        assert_eq!(status_of(&r, "next"), StepStatus::Cancelled);
        // Dropped at the cancel, not run to its end.
        let tools: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(tools, ["t__slow"]);
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn a_template_that_cannot_fill_fails_the_step() {
        let w = wf(json!({"steps": [
            {"id": "e", "tool": "t__echo", "arguments": {"message": "x"}},
            {"id": "p", "tool": "t__echo", "arguments": {"message": "{{steps.e.structured/none}}"}}
        ]}));
        let (r, _, _) = run_sync(w, json!({}), None);
        assert_eq!(r.status, RunStatus::Failed);
        assert!(r.steps[1]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("no structuredContent"));
    }
}
