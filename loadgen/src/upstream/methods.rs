//! What the upstream answers to each MCP method: a small, fixed server with the tools that
//! gateway tests and benchmarks call (`echo`, `get-sum`, `slow`), one prompt and one resource.
//!
//! Results are written as JSON bytes directly; only the arguments are parsed.

use std::time::Duration;

use mcp_proxy::protocol::jsonrpc::{code, write_json_string};
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

/// Revisions this server speaks; a client asking for another gets the latest.
pub const VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

/// The tool list, as server-everything describes its `echo` and `get-sum`. None of these carries
/// annotations, so a gateway must not assume a retry of them is safe.
const TOOLS: &str = r#"{"tools":[{"name":"echo","description":"Echoes back the input","inputSchema":{"type":"object","properties":{"message":{"type":"string","description":"Message to echo"}},"required":["message"]}},{"name":"get-sum","description":"Returns the sum of two numbers","inputSchema":{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}},{"name":"slow","description":"Answers after ms milliseconds","inputSchema":{"type":"object","properties":{"ms":{"type":"integer","minimum":0}},"required":["ms"]}}]}"#;

/// The tool list of an upstream started with `--id`: [`TOOLS`] plus `whoami`, which answers the
/// id and is annotated read-only and idempotent (safe to retry).
const TOOLS_WITH_WHOAMI: &str = r#"{"tools":[{"name":"echo","description":"Echoes back the input","inputSchema":{"type":"object","properties":{"message":{"type":"string","description":"Message to echo"}},"required":["message"]}},{"name":"get-sum","description":"Returns the sum of two numbers","inputSchema":{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}},"required":["a","b"]}},{"name":"slow","description":"Answers after ms milliseconds","inputSchema":{"type":"object","properties":{"ms":{"type":"integer","minimum":0}},"required":["ms"]}},{"name":"whoami","description":"Answers this upstream's --id","inputSchema":{"type":"object","properties":{}},"annotations":{"readOnlyHint":true,"idempotentHint":true}}]}"#;

const PROMPTS: &str =
    r#"{"prompts":[{"name":"simple-prompt","description":"A prompt without arguments"}]}"#;

const PROMPT: &str = r#"{"description":"A prompt without arguments","messages":[{"role":"user","content":{"type":"text","text":"This is a simple prompt without arguments."}}]}"#;

const RESOURCE_URI: &str = "demo://static";

const RESOURCES: &str =
    r#"{"resources":[{"uri":"demo://static","name":"static","mimeType":"text/plain"}]}"#;

const RESOURCE: &str =
    r#"{"contents":[{"uri":"demo://static","mimeType":"text/plain","text":"static resource"}]}"#;

/// Longest `slow` delay honoured, so a typo cannot hang a test for hours.
const MAX_SLOW: Duration = Duration::from_secs(600);

/// The answer to one request.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// A result, as JSON text.
    Result(Vec<u8>),
    /// A result to send only after a delay (the `slow` tool).
    After(Duration, Vec<u8>),
    /// A JSON-RPC error.
    Error(i32, String),
}

/// The `initialize` result for the agreed `version`; with an `id` (`--id`), the server name is
/// `mcp-loadgen-upstream:<id>` so a client can tell replicas apart.
pub fn initialize_result(version: &str, id: Option<&str>) -> Vec<u8> {
    let mut out = b"{\"protocolVersion\":".to_vec();
    write_json_string(&mut out, version);
    out.extend_from_slice(
        b",\"capabilities\":{\"tools\":{},\"prompts\":{},\"resources\":{}},\"serverInfo\":{\"name\":",
    );
    match id {
        Some(id) => write_json_string(&mut out, &format!("mcp-loadgen-upstream:{id}")),
        None => out.extend_from_slice(b"\"mcp-loadgen-upstream\""),
    }
    out.extend_from_slice(concat!(",\"version\":\"", env!("CARGO_PKG_VERSION"), "\"}}").as_bytes());
    out
}

/// The version to answer with: the client's if known, else the latest.
pub fn negotiate(asked: Option<&str>) -> &'static str {
    asked
        .and_then(|a| VERSIONS.iter().find(|v| **v == a))
        .copied()
        .unwrap_or(VERSIONS[VERSIONS.len() - 1])
}

/// Answers `method` with `params` (anything but `initialize`); `id` is the upstream's `--id`.
pub fn answer(method: &str, params: Option<&Value<'_>>, id: Option<&str>) -> Outcome {
    match method {
        "ping" | "logging/setLevel" => Outcome::Result(b"{}".to_vec()),
        "tools/list" => Outcome::Result(
            if id.is_some() {
                TOOLS_WITH_WHOAMI
            } else {
                TOOLS
            }
            .as_bytes()
            .to_vec(),
        ),
        "tools/call" => call_tool(params, id),
        "prompts/list" => Outcome::Result(PROMPTS.as_bytes().to_vec()),
        "prompts/get" => match params.and_then(|p| p.get_str("name")) {
            Some("simple-prompt") => Outcome::Result(PROMPT.as_bytes().to_vec()),
            _ => invalid("unknown prompt"),
        },
        "resources/list" => Outcome::Result(RESOURCES.as_bytes().to_vec()),
        "resources/templates/list" => Outcome::Result(b"{\"resourceTemplates\":[]}".to_vec()),
        "resources/read" => match params.and_then(|p| p.get_str("uri")) {
            Some(RESOURCE_URI) => Outcome::Result(RESOURCE.as_bytes().to_vec()),
            // -32002 is "resource not found" in the stateful-era revisions.
            _ => Outcome::Error(-32002, "resource not found".into()),
        },
        _ => Outcome::Error(
            code::METHOD_NOT_FOUND,
            format!("method not found: {method}"),
        ),
    }
}

fn invalid(message: &str) -> Outcome {
    Outcome::Error(code::INVALID_PARAMS, message.to_owned())
}

/// A `tools/call` result with one text content item.
fn text_result(text: &str) -> Vec<u8> {
    let mut out = b"{\"content\":[{\"type\":\"text\",\"text\":".to_vec();
    write_json_string(&mut out, text);
    out.extend_from_slice(b"}]}");
    out
}

fn call_tool(params: Option<&Value<'_>>, id: Option<&str>) -> Outcome {
    let Some(params) = params else {
        return invalid("tools/call needs params");
    };
    let args = params.get("arguments");
    let arg = |name: &str| args.and_then(|a| a.get(name));
    match params.get_str("name") {
        Some("echo") => match arg("message").and_then(|m| m.as_str()) {
            Some(m) => Outcome::Result(text_result(&format!("Echo: {m}"))),
            None => invalid("echo needs a string \"message\""),
        },
        Some("get-sum") => match (
            arg("a").and_then(|v| v.cast_f64()),
            arg("b").and_then(|v| v.cast_f64()),
        ) {
            (Some(a), Some(b)) => Outcome::Result(text_result(&format!(
                "The sum of {} and {} is {}.",
                num(a),
                num(b),
                num(a + b)
            ))),
            _ => invalid("get-sum needs numbers \"a\" and \"b\""),
        },
        Some("slow") => match arg("ms").and_then(|v| v.as_u64()) {
            Some(ms) => Outcome::After(
                Duration::from_millis(ms).min(MAX_SLOW),
                text_result(&format!("Slept {ms} ms")),
            ),
            None => invalid("slow needs a whole number \"ms\""),
        },
        Some("whoami") => match id {
            Some(id) => Outcome::Result(text_result(id)),
            None => invalid("unknown tool: whoami (start the upstream with --id)"),
        },
        Some(other) => invalid(&format!("unknown tool: {other}")),
        None => invalid("tools/call needs a tool \"name\""),
    }
}

/// Whole numbers without a fraction, like JavaScript prints them (server-everything's format).
fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(params: &str) -> Outcome {
        let mut buf = params.as_bytes().to_vec();
        let v = simd_json::to_borrowed_value(&mut buf).unwrap();
        answer("tools/call", Some(&v), None)
    }

    fn text(o: Outcome) -> String {
        match o {
            Outcome::Result(b) | Outcome::After(_, b) => String::from_utf8(b).unwrap(),
            Outcome::Error(c, m) => format!("error {c} {m}"),
        }
    }

    #[test]
    fn tools_answer_like_server_everything() {
        assert_eq!(
            text(call(
                r#"{"name":"echo","arguments":{"message":"hi \"you\""}}"#
            )),
            r#"{"content":[{"type":"text","text":"Echo: hi \"you\""}]}"#
        );
        assert!(
            text(call(r#"{"name":"get-sum","arguments":{"a":40,"b":2}}"#))
                .contains("The sum of 40 and 2 is 42.")
        );
        assert_eq!(
            call(r#"{"name":"slow","arguments":{"ms":5}}"#),
            Outcome::After(Duration::from_millis(5), text_result("Slept 5 ms"))
        );
        assert!(matches!(
            call(r#"{"name":"nope"}"#),
            Outcome::Error(-32602, _)
        ));
        assert!(matches!(
            call(r#"{"name":"echo","arguments":{}}"#),
            Outcome::Error(-32602, _)
        ));
        assert!(matches!(
            answer("foo/bar", None, None),
            Outcome::Error(-32601, _)
        ));
        assert_eq!(answer("ping", None, None), Outcome::Result(b"{}".to_vec()));
    }

    #[test]
    fn whoami_only_with_an_id() {
        let mut buf = br#"{"name":"whoami","arguments":{}}"#.to_vec();
        let v = simd_json::to_borrowed_value(&mut buf).unwrap();
        assert_eq!(
            text(answer("tools/call", Some(&v), Some("r1"))),
            r#"{"content":[{"type":"text","text":"r1"}]}"#
        );
        assert!(matches!(
            answer("tools/call", Some(&v), None),
            Outcome::Error(-32602, _)
        ));
        assert!(text(answer("tools/list", None, Some("r1"))).contains("\"readOnlyHint\":true"));
        assert!(!text(answer("tools/list", None, None)).contains("whoami"));
        let init = String::from_utf8(initialize_result("2025-11-25", Some("r1"))).unwrap();
        assert!(
            init.contains("\"name\":\"mcp-loadgen-upstream:r1\""),
            "{init}"
        );
        let mut buf = init.clone().into_bytes();
        simd_json::to_borrowed_value(&mut buf).expect(&init);
    }

    #[test]
    fn versions() {
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("2026-07-28")), "2025-11-25");
        assert_eq!(negotiate(None), "2025-11-25");
        let init = String::from_utf8(initialize_result("2025-06-18", None)).unwrap();
        let mut buf = init.clone().into_bytes();
        let v = simd_json::to_borrowed_value(&mut buf).expect(&init);
        assert_eq!(v.get_str("protocolVersion"), Some("2025-06-18"));
    }
}
