//! Workflow templates: `{{inputs.NAME[/pointer]}}` and `{{steps.ID[.PART][/pointer]}}`, found
//! in a step's arguments, parsed against the workflow's step ids, and rendered from a run's
//! inputs and finished steps (see [`super::workflow`] for what each form reads).

use simd_json::prelude::*;

use super::Json;

/// Where a template takes its value from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A run input, by name.
    Input(String),
    /// An earlier step's result, by index.
    Step(usize, Part),
}

/// Which view of a step's result a template reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The text content, joined by newlines.
    Text,
    /// `structuredContent`.
    Structured,
    /// The text content parsed as JSON.
    Json,
    /// The whole tool result.
    Result,
    /// `structuredContent` when present, else the text parsed as JSON.
    Auto,
}

/// One parsed `{{...}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// What it reads.
    pub source: Source,
    /// A JSON Pointer into it; empty for the whole value.
    pub pointer: String,
}

/// Calls `f` with the inside of every `{{...}}` in the strings of `v`.
pub(super) fn visit_templates(v: &Json, f: &mut dyn FnMut(&str)) {
    visit_templates_at(v, "", &mut |t, _| f(t));
}

/// Like [`visit_templates`], also passing the path of the string that holds the template.
pub(super) fn visit_templates_at(v: &Json, at: &str, f: &mut dyn FnMut(&str, &str)) {
    match v {
        Json::String(s) => {
            for t in templates_in(s) {
                f(t.trim(), at);
            }
        }
        Json::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                visit_templates_at(item, &format!("{at}[{i}]"), f);
            }
        }
        Json::Object(map) => {
            for (k, item) in map.iter() {
                visit_templates_at(item, &format!("{at}.{k}"), f);
            }
        }
        Json::Static(_) => {}
    }
}

/// The inside of each `{{...}}` in `s`, in order.
fn templates_in(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        out.push(&after[..end]);
        rest = &after[end + 2..];
    }
    out
}

/// Parses the inside of one `{{...}}`; `ids` resolves step ids to indices.
pub fn parse_template(text: &str, ids: &[String]) -> Result<Template, String> {
    let text = text.trim();
    let (head, pointer) = match text.find('/') {
        Some(i) => (&text[..i], text[i..].to_owned()),
        None => (text, String::new()),
    };
    if let Some(name) = head.strip_prefix("inputs.") {
        if name.is_empty() {
            return Err(format!("template {{{{{text}}}}} names no input"));
        }
        return Ok(Template {
            source: Source::Input(name.to_owned()),
            pointer,
        });
    }
    let Some(rest) = head.strip_prefix("steps.") else {
        return Err(format!(
            "template {{{{{text}}}}} must start with inputs. or steps."
        ));
    };
    let (id, part) = match rest.split_once('.') {
        Some((id, part)) => (id, Some(part)),
        None => (rest, None),
    };
    let part = match (part, pointer.is_empty()) {
        (None, true) => Part::Text,
        (None, false) => Part::Auto,
        (Some("text"), true) => Part::Text,
        (Some("text"), false) => {
            return Err(format!(
                "template {{{{{text}}}}}: text has no inside to point into; use json/... or structured/..."
            ))
        }
        (Some("structured"), _) => Part::Structured,
        (Some("json"), _) => Part::Json,
        (Some("result"), _) => Part::Result,
        (Some(other), _) => {
            return Err(format!(
                "template {{{{{text}}}}}: unknown part \"{other}\"; use text, structured, json or result"
            ))
        }
    };
    // Validation knows the ids; rendering-time parses pass none and only need the shape.
    if ids.is_empty() {
        return Ok(Template {
            source: Source::Step(usize::MAX, part),
            pointer,
        });
    }
    let index = ids
        .iter()
        .position(|x| x == id)
        .ok_or_else(|| format!("template {{{{{text}}}}} names unknown step \"{id}\""))?;
    Ok(Template {
        source: Source::Step(index, part),
        pointer,
    })
}

/// What templates may read while a run is under way.
pub struct Context<'a> {
    /// The run's inputs (an object).
    pub inputs: &'a Json,
    /// Step ids, by index.
    pub ids: &'a [String],
    /// Each finished step's tool result, by index.
    pub results: &'a [Option<Json>],
}

/// Replaces every template in `v` with what it reads.
pub fn render(v: &Json, ctx: &Context<'_>) -> Result<Json, String> {
    match v {
        Json::String(s) => render_string(s, ctx),
        Json::Array(items) => Ok(Json::Array(Box::new(
            items
                .iter()
                .map(|i| render(i, ctx))
                .collect::<Result<Vec<_>, _>>()?,
        ))),
        Json::Object(map) => {
            let mut out = Json::object_with_capacity(map.len());
            for (k, item) in map.iter() {
                out.insert(k.clone(), render(item, ctx)?)
                    .map_err(|e| e.to_string())?;
            }
            Ok(out)
        }
        Json::Static(_) => Ok(v.clone()),
    }
}

fn render_string(s: &str, ctx: &Context<'_>) -> Result<Json, String> {
    let found = templates_in(s);
    if found.is_empty() {
        return Ok(Json::from(s));
    }
    // Exactly one template and nothing else: keep the value's JSON type.
    let trimmed = s.trim();
    if found.len() == 1
        && trimmed.starts_with("{{")
        && trimmed.ends_with("}}")
        && trimmed.len() == found[0].len() + 4
    {
        return resolve(found[0], ctx);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        match resolve(&after[..end], ctx)? {
            Json::String(text) => out.push_str(&text),
            other => out.push_str(&other.encode()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(Json::from(out))
}

fn resolve(text: &str, ctx: &Context<'_>) -> Result<Json, String> {
    let t = parse_template(text, ctx.ids)?;
    let (base, what) = match &t.source {
        Source::Input(name) => (
            ctx.inputs
                .get(name.as_str())
                .cloned()
                .ok_or_else(|| format!("input \"{name}\" was not given"))?,
            format!("inputs.{name}"),
        ),
        Source::Step(i, part) => {
            let result = ctx
                .results
                .get(*i)
                .and_then(Option::as_ref)
                .ok_or_else(|| {
                    format!(
                        "step \"{}\" has no result",
                        ctx.ids.get(*i).map_or("?", |s| s.as_str())
                    )
                })?;
            (view(result, *part)?, format!("steps.{}", ctx.ids[*i]))
        }
    };
    pointer(&base, &t.pointer)
        .cloned()
        .ok_or_else(|| format!("{what} has nothing at {}", t.pointer))
}

/// The view of a tool result that `part` names.
fn view(result: &Json, part: Part) -> Result<Json, String> {
    let parsed_text = || {
        let mut bytes = text_of(result).into_bytes();
        simd_json::to_owned_value(&mut bytes).map_err(|_| "its text content is not JSON".to_owned())
    };
    match part {
        Part::Text => Ok(Json::from(text_of(result))),
        Part::Result => Ok(result.clone()),
        Part::Structured => result
            .get("structuredContent")
            .cloned()
            .ok_or_else(|| "its result has no structuredContent".to_owned()),
        Part::Json => parsed_text(),
        Part::Auto => match result.get("structuredContent") {
            Some(s) => Ok(s.clone()),
            None => parsed_text(),
        },
    }
}

/// The text content of a tool result, joined by newlines.
pub fn text_of(result: &Json) -> String {
    let Some(items) = result.get("content").and_then(|c| c.as_array()) else {
        return String::new();
    };
    items
        .iter()
        .filter(|c| c.get_str("type") == Some("text"))
        .filter_map(|c| c.get_str("text"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Resolves a JSON Pointer (RFC 6901); `""` is the whole value.
pub fn pointer<'v>(v: &'v Json, ptr: &str) -> Option<&'v Json> {
    if ptr.is_empty() {
        return Some(v);
    }
    let mut current = v;
    for raw in ptr.strip_prefix('/')?.split('/') {
        let token = raw.replace("~1", "/").replace("~0", "~");
        current = match current {
            Json::Object(map) => map.get(token.as_str())?,
            Json::Array(items) => items.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use simd_json::json;

    #[test]
    fn templates_keep_types_or_splice_text() {
        let ids = vec!["sum".to_owned(), "wx".to_owned(), "js".to_owned()];
        let results = vec![
            Some(json!({"content": [{"type": "text", "text": "The sum is 5."}]})),
            Some(
                json!({"content": [{"type": "text", "text": "{}"}], "structuredContent": {"t": 21.5, "tags": ["a", "b"]}}),
            ),
            Some(
                json!({"content": [{"type": "text", "text": "{\"entities\": [{\"name\": \"n/1\"}]}"}]}),
            ),
        ];
        let inputs = json!({"a": 2, "who": {"first": "Ada"}});
        let ctx = Context {
            inputs: &inputs,
            ids: &ids,
            results: &results,
        };
        let args = json!({
            "n": "{{inputs.a}}",
            "first": "{{ inputs.who/first }}",
            "text": "got: {{steps.sum}} / {{steps.wx/t}}",
            "t": "{{steps.wx/t}}",
            "tag": "{{steps.wx.structured/tags/1}}",
            "entity": "{{steps.js/entities/0/name}}",
            "whole": "{{steps.sum.result/content/0/type}}",
            "nested": [{"x": "{{steps.js.json/entities/0}}"}],
            "plain": 7
        });
        let out = render(&args, &ctx).expect("renders");
        assert_eq!(out["n"], json!(2));
        assert_eq!(out["first"], json!("Ada"));
        assert_eq!(out["text"], json!("got: The sum is 5. / 21.5"));
        assert_eq!(out["t"], json!(21.5));
        assert_eq!(out["tag"], json!("b"));
        assert_eq!(out["entity"], json!("n/1"));
        assert_eq!(out["whole"], json!("text"));
        assert_eq!(out["nested"], json!([{"x": {"name": "n/1"}}]));
        assert_eq!(out["plain"], json!(7));
        let e = render(&json!({"x": "{{steps.sum.structured/a}}"}), &ctx).unwrap_err();
        assert!(e.contains("no structuredContent"), "{e}");
        let e = render(&json!({"x": "{{steps.wx/nope}}"}), &ctx).unwrap_err();
        assert!(e.contains("nothing at /nope"), "{e}");
    }

    #[test]
    fn json_pointer_escapes() {
        let v = json!({"a/b": {"m~n": [10, 20]}});
        assert_eq!(pointer(&v, "/a~1b/m~0n/1"), Some(&json!(20)));
        assert_eq!(pointer(&v, ""), Some(&v));
        assert_eq!(pointer(&v, "/x"), None);
        assert_eq!(pointer(&v, "nope"), None);
    }
}
