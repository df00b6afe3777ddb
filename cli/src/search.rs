//! `mcpctl tools search`: the proxy's own tool search (`proxy__search_tools`), asked over its
//! MCP endpoint, so the command ranks exactly as agents' searches do (same index, same
//! ranking, same per-client policy) and can show why a tool ranked where it did.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fail::Failure;
use crate::http::Url;
use crate::table::{cell, Table};
use crate::{mcp, Out};

/// Runs the search and prints the ranked tools (with `explain`, the reasons under each).
pub fn tools(url: &Url, out: &Out, need: &str, k: u64, explain: bool) -> Result<(), Failure> {
    let args = json!({"query": need, "k": k, "explain": explain});
    let result = mcp::call_tool(url, "proxy__search_tools", args, Duration::from_secs(30))?;
    if result["isError"] == true {
        return Err(Failure::error(format!(
            "the proxy refused the search: {}",
            cell(result["content"][0].get("text"))
        )));
    }
    let found = result.get("structuredContent").cloned().ok_or_else(|| {
        Failure::error("the proxy's answer has no structuredContent: is --mcp-url an mcp-proxy?")
    })?;
    out.print(&found, || render(&found, explain));
    Ok(())
}

fn render(found: &Value, explain: bool) -> String {
    let tools = found["tools"].as_array().cloned().unwrap_or_default();
    if tools.is_empty() {
        return format!(
            "no tool fits {:?} ({} indexed)\n",
            cell(found.get("query")),
            cell(found.get("tools_indexed"))
        );
    }
    let mut t = Table::new(&["SCORE", "TOOL", "SERVER", "DESCRIPTION"]);
    let mut why = String::new();
    for tool in &tools {
        let mut d = cell(tool.get("description")).replace('\n', " ");
        if d.chars().count() > 60 {
            d = d.chars().take(57).collect::<String>() + "...";
        }
        t.row(vec![
            format!("{:.3}", tool["score"].as_f64().unwrap_or(0.0)),
            cell(tool.get("name")),
            cell(tool.get("server")),
            d,
        ]);
        if explain {
            why.push_str(&explanation(tool));
        }
    }
    let mut text = t.render();
    if explain {
        text.push('\n');
        text.push_str(&why);
    }
    text
}

/// One tool's reasons: the score's two parts, the shared words, the nearest words in meaning.
fn explanation(tool: &Value) -> String {
    let w = &tool["why"];
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut s = format!(
        "{}: {:.3} = words {:.3} (BM25 {:.2}) + meaning {:.3} (cosine {:.3})\n",
        cell(tool.get("name")),
        num(&tool["score"]),
        num(&w["lexical_part"]),
        num(&w["lexical_bm25"]),
        num(&w["semantic_part"]),
        num(&w["semantic_cosine"]),
    );
    let shared: Vec<String> = w["shared_terms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{} ({:.2})", cell(t.get("term")), num(&t["bm25"])))
        .collect();
    if !shared.is_empty() {
        s.push_str(&format!("  shared words: {}\n", shared.join(", ")));
    }
    let related: Vec<String> = w["related_words"]
        .as_array()
        .into_iter()
        .flatten()
        .take(4)
        .map(|r| {
            format!(
                "{} ~ {} ({:.2})",
                cell(r.get("need_word")),
                cell(r.get("tool_word")),
                num(&r["cosine"])
            )
        })
        .collect();
    if !related.is_empty() {
        s.push_str(&format!("  related in meaning: {}\n", related.join(", ")));
    }
    s
}
