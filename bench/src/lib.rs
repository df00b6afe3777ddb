//! mcp-bench: criterion microbenchmarks of mcp-proxy's hot paths, and the inputs they share.
//!
//! # Layout
//! - this file: typical messages and tool catalogs, built the same way for every bench;
//! - `benches/jsonrpc.rs`: reading a JSON-RPC message (`parse` + `classify`), and rewriting
//!   requests and answers in their bytes against the parse and re-encode;
//! - `benches/names.rs`: exposed-name to server lookup at 10, 1,000 and 10,000 tools;
//! - `compare`: the end-to-end script (direct vs. through the proxy), see docs/performance.md.
//!
//! # How to use
//! `cargo bench -p mcp-bench` (add `-- --quick` for a short run).

/// A small request, as clients send dozens of times per session.
pub const SMALL_REQUEST: &str = r#"{"jsonrpc":"2.0","id":17,"method":"ping"}"#;

/// A `tools/call` with arguments and a progress token, as an agent sends it.
pub const TOOLS_CALL: &str = r#"{"jsonrpc":"2.0","id":1042,"method":"tools/call","params":{"name":"github__search_issues","arguments":{"query":"is:open label:bug repo:example/project","per_page":30,"page":2,"sort":"updated","order":"desc"},"_meta":{"progressToken":"c0ffee-17"}}}"#;

/// A tools/call result of about `bytes` bytes: text content with escapes, like a file read.
pub fn large_result(bytes: usize) -> String {
    let line = r#"fn main() {\n    println!(\"hello, \\\"world\\\"\");\n}\n"#;
    let mut text = String::with_capacity(bytes);
    while text.len() + line.len() < bytes.saturating_sub(120) {
        text.push_str(line);
    }
    format!(
        r#"{{"jsonrpc":"2.0","id":1042,"result":{{"content":[{{"type":"text","text":"{text}"}}],"isError":false}}}}"#
    )
}

/// `(server index, prefix, tool name)` triples for `tools` tools spread over 10 servers, with
/// names of realistic length (some needing the shortening past 64 characters).
pub fn catalog(tools: usize) -> Vec<(usize, String, String)> {
    (0..tools)
        .map(|i| {
            let server = i % 10;
            let name = if i % 50 == 0 {
                format!("a_rather_long_tool_name_that_describes_everything_it_does_{i}")
            } else {
                format!("tool_{i}_list_items")
            };
            (server, format!("server{server}"), name)
        })
        .collect()
}

/// The ranker's view of a tool as `tools/list` gives it (`tool`), with its server and tags.
pub fn tool_of(tool: &serde_json::Value, server: &str, tags: &serde_json::Value) -> toolrank::Tool {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let params = tool["inputSchema"]["properties"]
        .as_object()
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.clone(), text(&v["description"])))
                .collect()
        })
        .unwrap_or_default();
    toolrank::Tool {
        name: text(&tool["name"]),
        title: text(&tool["title"]),
        description: text(&tool["description"]),
        params,
        server: server.to_owned(),
        tags: tags
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
    }
}

/// `count` tools made from `real` ones as if `count / real.len()` copies of their servers ran
/// under other names: the shape of a large deployment's catalog.
pub fn many_tools(real: &[toolrank::Tool], count: usize) -> Vec<toolrank::Tool> {
    (0..count)
        .map(|i| {
            let base = &real[i % real.len()];
            let copy = i / real.len();
            let server = format!("{}{copy}", base.server);
            let short = base
                .name
                .split_once("__")
                .map_or(base.name.as_str(), |p| p.1);
            toolrank::Tool {
                name: format!("{server}__{short}"),
                server,
                ..base.clone()
            }
        })
        .collect()
}
