//! `plan_workflow`: a candidate workflow for a goal, one step per capability.
//!
//! Each capability gets the best tool that search finds for it. Each parameter of that tool
//! is wired by name: to an input of the same name when the caller has one, else to an
//! earlier step whose declared output (`outputSchema`) has a property of that name, else (if
//! the parameter is required) to a new input the caller must provide. The plan is a starting
//! point: the caller edits it and runs it with `orchestrate_workflow`.

use serde::Serialize;
use simd_json::prelude::*;

use super::search::Index;
use super::Json;

/// Alternatives listed per capability besides the chosen tool.
const ALTERNATIVES: usize = 2;

/// What `plan_workflow` returns.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// The goal, as given.
    pub goal: String,
    /// The candidate workflow, ready for `orchestrate_workflow`.
    pub workflow: Json,
    /// Per capability: the tool chosen, its score and the runners-up.
    pub choices: Vec<Choice>,
    /// Inputs the workflow reads that the caller did not list.
    pub inputs_needed: Vec<String>,
    /// Capabilities no tool matched.
    pub unmatched: Vec<String>,
    /// How to take the plan further.
    pub notes: Vec<String>,
}

/// The tool chosen for one capability.
#[derive(Debug, Serialize)]
pub struct Choice {
    /// The capability, as given.
    pub capability: String,
    /// The step id it became.
    pub step: String,
    /// The tool chosen.
    pub tool: String,
    /// Its search score.
    pub score: f64,
    /// Other tools that matched, best first.
    pub alternatives: Vec<String>,
}

/// Plans `capabilities` (in order) for `goal`; `inputs` are the inputs the caller will give.
pub fn plan(goal: &str, capabilities: &[String], inputs: &[String], index: &Index) -> Plan {
    let mut steps: Vec<Json> = Vec::new();
    // (step id, output property names) of the steps planned so far.
    let mut outputs: Vec<(String, Vec<String>)> = Vec::new();
    let mut choices = Vec::new();
    let mut unmatched = Vec::new();
    let mut needed: Vec<String> = Vec::new();
    for capability in capabilities {
        let hits = index.search(capability, 1 + ALTERNATIVES, |_| true);
        let Some(best) = hits.first() else {
            unmatched.push(capability.clone());
            continue;
        };
        let tool = &best.doc.name;
        let id = unique_id(&slug(tool), &outputs);
        let schema = best.doc.json.get("inputSchema");
        let required: Vec<&str> = schema
            .and_then(|s| s.get("required"))
            .and_then(|r| r.as_array())
            .map(|r| r.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let mut arguments = Json::object();
        let mut depends_on: Vec<Json> = Vec::new();
        if let Some(props) = schema
            .and_then(|s| s.get("properties"))
            .and_then(|p| p.as_object())
        {
            let mut names: Vec<&String> = props.keys().collect();
            names.sort();
            for param in names {
                let wired = if inputs.iter().any(|i| i == param) {
                    Some(format!("{{{{inputs.{param}}}}}"))
                } else if let Some((from, _)) = outputs
                    .as_slice()
                    .iter()
                    .rev()
                    .find(|(_, outs)| outs.contains(param))
                {
                    if !depends_on.iter().any(|d| d.as_str() == Some(from)) {
                        depends_on.push(Json::from(from.clone()));
                    }
                    Some(format!("{{{{steps.{from}/{param}}}}}"))
                } else if required.contains(&param.as_str()) {
                    if !needed.contains(param) {
                        needed.push(param.clone());
                    }
                    Some(format!("{{{{inputs.{param}}}}}"))
                } else {
                    None
                };
                if let Some(w) = wired {
                    let _ = arguments.insert(param.clone(), w);
                }
            }
        }
        let mut step = Json::object();
        let _ = step.insert("id", id.clone());
        let _ = step.insert("tool", tool.clone());
        let _ = step.insert("arguments", arguments);
        if !depends_on.is_empty() {
            let _ = step.insert("depends_on", Json::Array(Box::new(depends_on)));
        }
        steps.push(step);
        let outs = best
            .doc
            .json
            .get("outputSchema")
            .and_then(|s| s.get("properties"))
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        outputs.push((id.clone(), outs));
        choices.push(Choice {
            capability: capability.clone(),
            step: id,
            tool: tool.clone(),
            score: (best.score * 1000.0).round() / 1000.0,
            alternatives: hits.iter().skip(1).map(|h| h.doc.name.clone()).collect(),
        });
    }
    let mut workflow = Json::object();
    let _ = workflow.insert("steps", Json::Array(Box::new(steps)));
    let mut notes = vec![
        "steps not wired to each other run in parallel; add depends_on to order them".to_owned(),
        "templates: {{inputs.NAME}}, {{steps.ID.text}}, {{steps.ID/json/pointer}}".to_owned(),
    ];
    if !needed.is_empty() {
        notes.push(format!(
            "give these inputs when running it: {}",
            needed.join(", ")
        ));
    }
    Plan {
        goal: goal.to_owned(),
        workflow,
        choices,
        inputs_needed: needed,
        unmatched,
        notes,
    }
}

/// A step id from a tool name: the part after the server prefix, in id characters.
fn slug(tool: &str) -> String {
    let base = tool.rsplit("__").next().unwrap_or(tool);
    let s: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "step".to_owned()
    } else {
        s
    }
}

fn unique_id(base: &str, taken: &[(String, Vec<String>)]) -> String {
    if !taken.iter().any(|(id, _)| id == base) {
        return base.to_owned();
    }
    (2..)
        .map(|n| format!("{base}_{n}"))
        .find(|c| !taken.iter().any(|(id, _)| id == c))
        .unwrap_or_else(|| base.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use simd_json::json;

    #[test]
    fn wires_inputs_and_outputs_by_name() {
        let tools = [
            json!({"name": "w__get-weather", "description": "Current weather for a city",
                   "inputSchema": {"properties": {"city": {"type": "string"}}, "required": ["city"]},
                   "outputSchema": {"properties": {"temperature": {}, "conditions": {}}}}),
            json!({"name": "n__notify", "description": "Send a notification message with a temperature",
                   "inputSchema": {"properties": {"temperature": {}, "channel": {}, "loud": {}}, "required": ["temperature", "channel"]}}),
        ];
        let ix = Index::build(1, tools.iter().map(|t| (0usize, "s", &[][..], t.clone())));
        let p = plan(
            "tell me the weather",
            &[
                "weather for a city".to_owned(),
                "send notification".to_owned(),
                "juggle flaming torches".to_owned(),
            ],
            &["city".to_owned()],
            &ix,
        );
        assert_eq!(p.choices.len(), 2);
        assert_eq!(p.unmatched, vec!["juggle flaming torches"]);
        let steps = p
            .workflow
            .get("steps")
            .and_then(|s| s.as_array())
            .expect("steps");
        assert_eq!(steps[0].get_str("id"), Some("get-weather"));
        assert_eq!(steps[0]["arguments"]["city"], json!("{{inputs.city}}"));
        assert_eq!(
            steps[1]["arguments"]["temperature"],
            json!("{{steps.get-weather/temperature}}")
        );
        assert_eq!(
            steps[1]["arguments"]["channel"],
            json!("{{inputs.channel}}")
        );
        assert!(steps[1]["arguments"].get("loud").is_none());
        assert_eq!(steps[1]["depends_on"], json!(["get-weather"]));
        assert_eq!(p.inputs_needed, vec!["channel"]);
        // The plan is a valid workflow.
        let ok = |_: &str| Ok(());
        assert!(super::super::workflow::Workflow::from_json(&p.workflow, "workflow", &ok).is_ok());
    }
}
