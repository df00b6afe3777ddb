//! `mcpctl call`: the proxy's `/mcp` endpoint as an MCP client over Streamable HTTP.
//!
//! initialize, notifications/initialized, tools/call, then DELETE of the session. Answers may
//! be JSON or an SSE stream; the response is the message carrying the request's id.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fail::{Code, Failure};
use crate::http::{self, Url};

const PROTOCOL: &str = "2025-06-18";

/// One client session with the proxy.
struct Client {
    url: Url,
    session: Option<String>,
    timeout: Duration,
}

impl Client {
    fn post(&mut self, message: &Value) -> Result<Option<Value>, Failure> {
        let body = message.to_string();
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", PROTOCOL),
        ];
        let session = self.session.clone();
        if let Some(s) = &session {
            headers.push(("Mcp-Session-Id", s));
        }
        let r = http::request(
            "POST",
            &self.url,
            &headers,
            Some(body.as_bytes()),
            self.timeout,
        )
        .map_err(|f| match f.code {
            Code::Unreachable => Failure {
                code: f.code,
                message: f.message.replace(
                    "set MCPCTL_URL (or --admin-url) to its admin address, printed at start as \
                         `mcp-proxy admin: http://...`",
                    "set --mcp-url (or MCPCTL_MCP_URL) to its /mcp address, printed at \
                         start as `mcp-proxy ready: http://...`",
                ),
            },
            _ => f,
        })?;
        if let Some(id) = r.header("mcp-session-id") {
            self.session = Some(id.to_owned());
        }
        if r.status == 202 {
            return Ok(None);
        }
        if !(200..300).contains(&r.status) {
            return Err(Failure::error(format!(
                "the proxy answered {} to {}: {}",
                r.status,
                message["method"],
                String::from_utf8_lossy(&r.body)
            )));
        }
        let id = message.get("id");
        let is_sse = r
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream"));
        let messages: Vec<Value> = if is_sse {
            sse_data(&String::from_utf8_lossy(&r.body))
                .iter()
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect()
        } else {
            serde_json::from_slice(&r.body).into_iter().collect()
        };
        Ok(messages.into_iter().find(|m| m.get("id") == id))
    }

    fn close(&self) {
        if let Some(s) = &self.session {
            let _ = http::request(
                "DELETE",
                &self.url,
                &[("Mcp-Session-Id", s), ("MCP-Protocol-Version", PROTOCOL)],
                None,
                self.timeout,
            );
        }
    }
}

/// The `data:` payloads of an SSE body, one per event.
fn sse_data(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut data: Vec<&str> = Vec::new();
    for line in body.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if !data.is_empty() {
                out.push(data.join("\n"));
                data.clear();
            }
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d));
        }
    }
    out
}

/// Calls `tool` with `arguments` through the proxy at `url`; returns the `result`.
pub fn call_tool(
    url: &Url,
    tool: &str,
    arguments: Value,
    timeout: Duration,
) -> Result<Value, Failure> {
    let mut client = Client {
        url: url.clone(),
        session: None,
        timeout,
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "mcpctl", "version": env!("CARGO_PKG_VERSION")}}});
    let answer = client
        .post(&init)?
        .ok_or_else(|| Failure::error("the proxy did not answer initialize"))?;
    if let Some(e) = answer.get("error") {
        return Err(Failure::error(format!("initialize failed: {e}")));
    }
    client.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}});
    let outcome = client.post(&call);
    client.close();
    let answer = outcome?.ok_or_else(|| Failure::error("the proxy did not answer tools/call"))?;
    if let Some(e) = answer.get("error") {
        let message = e.get("message").and_then(Value::as_str).unwrap_or("");
        let unknown = message.to_lowercase().contains("unknown tool")
            || message.to_lowercase().contains("not found");
        return Err(Failure {
            code: if unknown { Code::NotFound } else { Code::Error },
            message: format!(
                "{tool}: {message}{}",
                if unknown {
                    "; `mcpctl tools ls` lists the exposed tools"
                } else {
                    ""
                }
            ),
        });
    }
    answer
        .get("result")
        .cloned()
        .ok_or_else(|| Failure::error("the tools/call answer has no result"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split() {
        let body = "id: 1\nevent: message\ndata: {\"a\":1}\n\ndata: {\"id\":2}\n\n";
        assert_eq!(sse_data(body), vec!["{\"a\":1}", "{\"id\":2}"]);
    }
}
