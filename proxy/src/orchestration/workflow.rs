//! Workflows: a DAG of tool calls, read from JSON and validated (the templates in their
//! arguments are parsed and rendered by [`super::template`]).
//!
//! A workflow is JSON so an agent can write, edit and save one:
//!
//! ```json
//! { "steps": [
//!     { "id": "sum", "tool": "everything__get-sum", "arguments": { "a": "{{inputs.a}}", "b": 3 } },
//!     { "id": "note", "tool": "memory__create_entities", "depends_on": ["sum"],
//!       "arguments": { "entities": [ { "name": "n", "entityType": "note",
//!                                      "observations": ["{{steps.sum.text}}"] } ] },
//!       "timeout_ms": 5000, "retry": { "attempts": 2, "backoff_ms": 100 },
//!       "on_error": "continue" } ] }
//! ```
//!
//! Templates are `{{inputs.NAME[/pointer]}}` and `{{steps.ID[.PART][/pointer]}}`, where PART is
//! `text` (the text content, joined), `structured` (`structuredContent`), `json` (the text
//! content parsed as JSON) or `result` (the whole tool result), and the pointer is a JSON
//! Pointer (RFC 6901) into it. Without a part, `steps.ID` is the text and `steps.ID/ptr`
//! points into `structuredContent`, or into the text parsed as JSON when there is none. A
//! string that is exactly one template takes the referenced value with its JSON type; a
//! template inside a longer string is spliced in as text. A step depends on every step its
//! templates name, whether or not `depends_on` lists it.

use std::time::Duration;

use simd_json::prelude::*;

use super::template::{parse_template, visit_templates, visit_templates_at, Source, Template};
use super::{ArgError, Json};

/// Most steps one workflow may have; a plan bigger than this is a mistake, not a workflow.
pub const MAX_STEPS: usize = 64;
/// Most steps run at once when a workflow does not say.
pub const DEFAULT_PARALLEL: usize = 4;
/// Upper bound on `max_parallel`, so one run cannot flood the upstreams.
pub const MAX_PARALLEL: usize = 16;
/// Step timeout when a step does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 10;

/// A validated workflow.
#[derive(Clone, Debug)]
pub struct Workflow {
    /// Its name, for saved workflows and run listings.
    pub name: Option<String>,
    /// The steps, in the order written.
    pub steps: Vec<Step>,
    /// Most steps running at once.
    pub max_parallel: usize,
    /// The JSON it was read from, kept to save it back as written.
    pub source: Json,
}

/// One tool call of a workflow.
#[derive(Clone, Debug)]
pub struct Step {
    /// Unique within the workflow; templates and `depends_on` name it.
    pub id: String,
    /// The exposed tool name (`server__tool`).
    pub tool: String,
    /// Arguments, possibly holding templates.
    pub arguments: Json,
    /// Indices of the steps that must succeed first (explicit and from templates).
    pub depends_on: Vec<usize>,
    /// Limit on one attempt.
    pub timeout: Duration,
    /// Attempts and the pause between them.
    pub retry: Retry,
    /// What a failure (after retries) does to the run.
    pub on_error: OnError,
}

/// How often a failed step is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, at least 1.
    pub attempts: u32,
    /// Pause before each new attempt.
    pub backoff: Duration,
}

/// What a step's failure does.
#[derive(Clone, Debug)]
pub enum OnError {
    /// Stop the run: nothing new starts and running steps are cancelled.
    Abort,
    /// Record the failure; steps that depend on this one are skipped, the others run.
    Continue,
    /// Call another tool instead; its result stands in for the step's.
    Fallback {
        /// Exposed tool name of the replacement call.
        tool: String,
        /// Its arguments, possibly holding templates.
        arguments: Json,
    },
}

/// Checks an exposed tool name; the error says why it cannot be called.
pub type ToolCheck<'a> = &'a dyn Fn(&str) -> Result<(), String>;

impl Workflow {
    /// Reads and validates a workflow given under the argument `field` (for error messages).
    pub fn from_json(
        value: &Json,
        field: &str,
        tools: ToolCheck<'_>,
    ) -> Result<Workflow, ArgError> {
        let obj = value
            .as_object()
            .ok_or_else(|| ArgError::new(field, "must be an object with a \"steps\" array"))?;
        for key in obj.keys() {
            if !matches!(
                key.as_str(),
                "name" | "description" | "steps" | "max_parallel" | "inputs"
            ) {
                return Err(ArgError::new(
                    format!("{field}.{key}"),
                    "unknown field; a workflow has name, description, steps, max_parallel, inputs",
                ));
            }
        }
        let name = match value.get("name") {
            None => None,
            Some(n) => Some(
                n.as_str()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        ArgError::new(format!("{field}.name"), "must be a non-empty string")
                    })?
                    .to_owned(),
            ),
        };
        let max_parallel = match value.get("max_parallel") {
            None => DEFAULT_PARALLEL,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_PARALLEL as u64).contains(&n) => n as usize,
                _ => {
                    return Err(ArgError::new(
                        format!("{field}.max_parallel"),
                        format!("must be an integer from 1 to {MAX_PARALLEL}"),
                    ))
                }
            },
        };
        let steps_field = format!("{field}.steps");
        let raw_steps = value
            .get("steps")
            .and_then(|s| s.as_array())
            .ok_or_else(|| ArgError::new(&steps_field, "is required: an array of steps"))?;
        if raw_steps.is_empty() || raw_steps.len() > MAX_STEPS {
            return Err(ArgError::new(
                &steps_field,
                format!("must hold 1 to {MAX_STEPS} steps"),
            ));
        }
        // Ids first, so depends_on and templates may name steps written later.
        let mut ids: Vec<String> = Vec::with_capacity(raw_steps.len());
        for (i, raw) in raw_steps.iter().enumerate() {
            let at = format!("{steps_field}[{i}]");
            if !raw.is_object() {
                return Err(ArgError::new(&at, "must be an object"));
            }
            let id = raw
                .get_str("id")
                .ok_or_else(|| ArgError::new(format!("{at}.id"), "is required: a string"))?;
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(ArgError::new(
                    format!("{at}.id"),
                    "may only contain letters, digits, '-' and '_'",
                ));
            }
            if ids.iter().any(|x| x == id) {
                return Err(ArgError::new(
                    format!("{at}.id"),
                    format!("duplicate step id \"{id}\""),
                ));
            }
            ids.push(id.to_owned());
        }
        let mut steps = Vec::with_capacity(raw_steps.len());
        for (i, raw) in raw_steps.iter().enumerate() {
            steps.push(read_step(raw, &format!("{steps_field}[{i}]"), &ids, tools)?);
        }
        if let Some(cycle) = find_cycle(&steps) {
            let names: Vec<&str> = cycle.iter().map(|i| steps[*i].id.as_str()).collect();
            return Err(ArgError::new(
                &steps_field,
                format!(
                    "the steps depend on each other in a cycle: {}",
                    names.join(" -> ")
                ),
            ));
        }
        Ok(Workflow {
            name,
            steps,
            max_parallel,
            source: value.clone(),
        })
    }

    /// Checks that every input the templates read is given; the error names the step argument.
    pub fn check_inputs(&self, inputs: &Json) -> Result<(), ArgError> {
        for (i, step) in self.steps.iter().enumerate() {
            let mut missing = None;
            visit_templates(&step.arguments, &mut |t| {
                if let Ok(Template {
                    source: Source::Input(name),
                    ..
                }) = parse_template(t, &[])
                {
                    if inputs.get(name.as_str()).is_none() && missing.is_none() {
                        missing = Some(name);
                    }
                }
            });
            if let Some(name) = missing {
                return Err(ArgError::new(
                    format!("inputs.{name}"),
                    format!("is required: step \"{}\" (#{i}) reads it", step.id),
                ));
            }
        }
        Ok(())
    }
}

fn read_step(raw: &Json, at: &str, ids: &[String], tools: ToolCheck<'_>) -> Result<Step, ArgError> {
    let Some(obj) = raw.as_object() else {
        return Err(ArgError::new(at, "must be an object"));
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "id" | "tool"
                | "arguments"
                | "depends_on"
                | "timeout_ms"
                | "retry"
                | "on_error"
                | "fallback"
                | "description"
        ) {
            return Err(ArgError::new(
                format!("{at}.{key}"),
                "unknown field; a step has id, tool, arguments, depends_on, timeout_ms, retry, on_error, fallback",
            ));
        }
    }
    let id = raw.get_str("id").unwrap_or_default().to_owned();
    let tool = read_tool(raw.get("tool"), &format!("{at}.tool"), tools)?;
    let arguments = read_arguments(raw.get("arguments"), &format!("{at}.arguments"), ids)?;
    let mut depends_on = Vec::new();
    if let Some(deps) = raw.get("depends_on") {
        let list = deps.as_array().ok_or_else(|| {
            ArgError::new(format!("{at}.depends_on"), "must be an array of step ids")
        })?;
        for (j, d) in list.iter().enumerate() {
            let field = format!("{at}.depends_on[{j}]");
            let name = d
                .as_str()
                .ok_or_else(|| ArgError::new(&field, "must be a step id (a string)"))?;
            let index = ids
                .iter()
                .position(|x| x == name)
                .ok_or_else(|| ArgError::new(&field, format!("unknown step \"{name}\"")))?;
            if !depends_on.contains(&index) {
                depends_on.push(index);
            }
        }
    }
    let timeout = match raw.get("timeout_ms") {
        None => DEFAULT_TIMEOUT,
        Some(v) => match v.as_u64() {
            Some(ms) if (1..=3_600_000).contains(&ms) => Duration::from_millis(ms),
            _ => {
                return Err(ArgError::new(
                    format!("{at}.timeout_ms"),
                    "must be an integer from 1 to 3600000 (milliseconds)",
                ))
            }
        },
    };
    let retry = read_retry(raw.get("retry"), &format!("{at}.retry"))?;
    let on_error = match raw.get("on_error") {
        None => OnError::Abort,
        Some(v) => match v.as_str() {
            Some("abort") => OnError::Abort,
            Some("continue") => OnError::Continue,
            Some("fallback") => {
                let field = format!("{at}.fallback");
                let fb = raw
                    .get("fallback")
                    .filter(|f| f.is_object())
                    .ok_or_else(|| {
                        ArgError::new(
                            &field,
                            "is required with on_error \"fallback\": {\"tool\", \"arguments\"}",
                        )
                    })?;
                OnError::Fallback {
                    tool: read_tool(fb.get("tool"), &format!("{field}.tool"), tools)?,
                    arguments: read_arguments(
                        fb.get("arguments"),
                        &format!("{field}.arguments"),
                        ids,
                    )?,
                }
            }
            _ => {
                return Err(ArgError::new(
                    format!("{at}.on_error"),
                    "must be \"abort\", \"continue\" or \"fallback\"",
                ))
            }
        },
    };
    if raw.get("fallback").is_some() && !matches!(on_error, OnError::Fallback { .. }) {
        return Err(ArgError::new(
            format!("{at}.fallback"),
            "is only used with on_error \"fallback\"",
        ));
    }
    // Templates make a step depend on what they read.
    let mut refs = Vec::new();
    collect_step_refs(&arguments, ids, &mut refs);
    if let OnError::Fallback { arguments, .. } = &on_error {
        collect_step_refs(arguments, ids, &mut refs);
    }
    for r in refs {
        if !depends_on.contains(&r) {
            depends_on.push(r);
        }
    }
    Ok(Step {
        id,
        tool,
        arguments,
        depends_on,
        timeout,
        retry,
        on_error,
    })
}

fn read_tool(v: Option<&Json>, field: &str, tools: ToolCheck<'_>) -> Result<String, ArgError> {
    let name = v
        .and_then(|t| t.as_str())
        .ok_or_else(|| ArgError::new(field, "is required: an exposed tool name (server__tool)"))?;
    tools(name).map_err(|why| ArgError::new(field, why))?;
    Ok(name.to_owned())
}

fn read_arguments(v: Option<&Json>, field: &str, ids: &[String]) -> Result<Json, ArgError> {
    let args = match v {
        None => return Ok(Json::object()),
        Some(a) if a.is_object() => a.clone(),
        Some(_) => return Err(ArgError::new(field, "must be an object")),
    };
    let mut bad = None;
    visit_templates_at(&args, field, &mut |t, at| {
        if bad.is_none() {
            if let Err(why) = parse_template(t, ids) {
                bad = Some(ArgError::new(at, why));
            }
        }
    });
    match bad {
        Some(e) => Err(e),
        None => Ok(args),
    }
}

fn read_retry(v: Option<&Json>, field: &str) -> Result<Retry, ArgError> {
    let mut retry = Retry {
        attempts: 1,
        backoff: Duration::from_millis(200),
    };
    let Some(v) = v else {
        return Ok(retry);
    };
    let obj = v
        .as_object()
        .ok_or_else(|| ArgError::new(field, "must be an object {\"attempts\", \"backoff_ms\"}"))?;
    for key in obj.keys() {
        if !matches!(key.as_str(), "attempts" | "backoff_ms") {
            return Err(ArgError::new(
                format!("{field}.{key}"),
                "unknown field; retry has attempts and backoff_ms",
            ));
        }
    }
    if let Some(a) = v.get("attempts") {
        retry.attempts = a
            .as_u64()
            .filter(|n| (1..=MAX_ATTEMPTS as u64).contains(n))
            .ok_or_else(|| {
                ArgError::new(
                    format!("{field}.attempts"),
                    format!("must be an integer from 1 to {MAX_ATTEMPTS}"),
                )
            })? as u32;
    }
    if let Some(b) = v.get("backoff_ms") {
        retry.backoff = b
            .as_u64()
            .filter(|n| *n <= 60_000)
            .map(Duration::from_millis)
            .ok_or_else(|| {
                ArgError::new(
                    format!("{field}.backoff_ms"),
                    "must be an integer from 0 to 60000 (milliseconds)",
                )
            })?;
    }
    Ok(retry)
}

/// A cycle among the steps' dependencies, as step indices, if there is one.
pub fn find_cycle(steps: &[Step]) -> Option<Vec<usize>> {
    // Depth-first search with colours: 0 unvisited, 1 on the stack, 2 done.
    fn dfs(
        i: usize,
        steps: &[Step],
        colour: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        colour[i] = 1;
        stack.push(i);
        for &d in &steps[i].depends_on {
            if colour[d] == 1 {
                let start = stack.iter().position(|x| *x == d).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(d);
                return Some(cycle);
            }
            if colour[d] == 0 {
                if let Some(c) = dfs(d, steps, colour, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        colour[i] = 2;
        None
    }
    let mut colour = vec![0u8; steps.len()];
    let mut stack = Vec::new();
    (0..steps.len()).find_map(|i| {
        if colour[i] == 0 {
            dfs(i, steps, &mut colour, &mut stack)
        } else {
            None
        }
    })
}

fn collect_step_refs(v: &Json, ids: &[String], out: &mut Vec<usize>) {
    visit_templates(v, &mut |t| {
        if let Ok(Template {
            source: Source::Step(i, _),
            ..
        }) = parse_template(t, ids)
        {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use simd_json::json;

    fn any_tool(name: &str) -> Result<(), String> {
        if name.contains("__") {
            Ok(())
        } else {
            Err(format!("unknown tool \"{name}\""))
        }
    }

    fn parse(v: Json) -> Result<Workflow, ArgError> {
        Workflow::from_json(&v, "workflow", &any_tool)
    }

    #[test]
    fn reads_a_workflow_and_infers_dependencies() {
        let wf = parse(json!({"steps": [
            {"id": "a", "tool": "s__x"},
            {"id": "b", "tool": "s__y", "arguments": {"v": "{{steps.a.text}}"}},
            {"id": "c", "tool": "s__z", "depends_on": ["a", "b"], "on_error": "continue",
             "retry": {"attempts": 3, "backoff_ms": 5}, "timeout_ms": 100}
        ]}))
        .expect("valid");
        assert_eq!(wf.steps[1].depends_on, vec![0]);
        assert_eq!(wf.steps[2].depends_on, vec![0, 1]);
        assert_eq!(wf.steps[2].retry.attempts, 3);
        assert_eq!(wf.steps[2].timeout, Duration::from_millis(100));
        assert!(matches!(wf.steps[2].on_error, OnError::Continue));
        assert_eq!(wf.max_parallel, DEFAULT_PARALLEL);
    }

    #[test]
    fn refuses_cycles_naming_them() {
        let e = parse(json!({"steps": [
            {"id": "a", "tool": "s__x", "depends_on": ["c"]},
            {"id": "b", "tool": "s__x", "depends_on": ["a"]},
            {"id": "c", "tool": "s__x", "arguments": {"q": "{{steps.b}}"}}
        ]}))
        .unwrap_err();
        assert_eq!(e.field, "workflow.steps");
        assert!(e.reason.contains("cycle: a -> c -> b -> a"), "{}", e.reason);
        let e = parse(json!({"steps": [{"id": "a", "tool": "s__x", "depends_on": ["a"]}]}))
            .unwrap_err();
        assert!(e.reason.contains("a -> a"), "{}", e.reason);
    }

    #[test]
    fn names_the_bad_field() {
        let cases = [
            (
                json!({"steps": [{"id": "a", "tool": "s__x", "depends_on": ["nope"]}]}),
                "workflow.steps[0].depends_on[0]",
                "unknown step \"nope\"",
            ),
            (
                json!({"steps": [{"id": "a", "tool": "bad"}]}),
                "workflow.steps[0].tool",
                "unknown tool",
            ),
            (
                json!({"steps": [{"id": "a", "tool": "s__x"}, {"id": "a", "tool": "s__x"}]}),
                "workflow.steps[1].id",
                "duplicate",
            ),
            (json!({"steps": []}), "workflow.steps", "1 to"),
            (json!({"stepz": []}), "workflow.stepz", "unknown field"),
            (
                json!({"steps": [{"id": "a", "tool": "s__x", "on_error": "explode"}]}),
                "workflow.steps[0].on_error",
                "abort",
            ),
            (
                json!({"steps": [{"id": "a", "tool": "s__x", "on_error": "fallback"}]}),
                "workflow.steps[0].fallback",
                "required",
            ),
            (
                json!({"steps": [{"id": "a", "tool": "s__x", "retry": {"attempts": 0}}]}),
                "workflow.steps[0].retry.attempts",
                "1 to",
            ),
            (
                json!({"steps": [{"id": "a", "tool": "s__x", "arguments": {"k": ["{{steps.zz.text}}"]}}]}),
                "workflow.steps[0].arguments.k[0]",
                "unknown step \"zz\"",
            ),
            (
                json!({"steps": [{"id": "a", "tool": "s__x", "arguments": {"k": "{{env.HOME}}"}}]}),
                "workflow.steps[0].arguments.k",
                "inputs. or steps.",
            ),
            (
                json!({"steps": [{"id": "a b", "tool": "s__x"}]}),
                "workflow.steps[0].id",
                "letters",
            ),
            (
                json!({"steps": [{"id": "a", "tool": "s__x", "timeout_ms": 0}]}),
                "workflow.steps[0].timeout_ms",
                "1 to",
            ),
            (
                json!({"max_parallel": 99, "steps": [{"id": "a", "tool": "s__x"}]}),
                "workflow.max_parallel",
                "1 to 16",
            ),
        ];
        for (input, field, fragment) in cases {
            let e = parse(input).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.contains(fragment), "{e}");
        }
    }

    #[test]
    fn missing_inputs_are_named() {
        let wf = parse(
            json!({"steps": [{"id": "a", "tool": "s__x", "arguments": {"v": "{{inputs.who}}"}}]}),
        )
        .expect("valid");
        let e = wf.check_inputs(&json!({})).unwrap_err();
        assert_eq!(e.field, "inputs.who");
        assert!(wf.check_inputs(&json!({"who": 1})).is_ok());
    }
}
