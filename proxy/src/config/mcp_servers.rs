//! The `mcpServers` JSON that Claude Desktop, Claude Code and Cursor use, taken as it is.
//!
//! Every entry becomes an upstream: `command`/`args`/`env`/`cwd` a stdio server, `url`
//! (with optional `headers`) an HTTP one. Keys the proxy does not use (a client's own settings)
//! are ignored; entries marked `"disabled": true` are skipped.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::servers::{
    check_header, check_not_reserved, default_connect_timeout, default_timeout, suggest_name,
};
use super::{position, Config, ConfigError, ServerConfig, StdioCommand, Transport, UpstreamUrl};
use crate::protocol::names::is_valid_server_name;

#[derive(Deserialize)]
struct File {
    #[serde(rename = "mcpServers", default)]
    mcp_servers: Option<BTreeMap<String, Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    disabled: bool,
}

/// Reads an `mcpServers` JSON file; the proxy's own settings keep their defaults.
pub(super) fn from_json(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let invalid = |offset: Option<usize>, message: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        position: offset.map(|o| position(text, o)),
        message,
    };
    let mut bytes = text.as_bytes().to_vec();
    let file: File = simd_json::serde::from_slice(&mut bytes).map_err(|e| {
        invalid(
            Some(e.index()),
            format!("not valid JSON for an mcpServers file: {e}"),
        )
    })?;
    let Some(entries) = file.mcp_servers else {
        return Err(invalid(
            None,
            "no \"mcpServers\" object; a JSON config is a Claude Desktop style file: \
             {\"mcpServers\": {\"name\": {\"command\": ...}}}"
                .into(),
        ));
    };
    let mut servers: Vec<ServerConfig> = Vec::with_capacity(entries.len());
    for (key, entry) in entries {
        if entry.disabled {
            continue;
        }
        // Point at the entry's key, so the error names a place in the file.
        let at = text.find(&format!("\"{key}\""));
        let name = if is_valid_server_name(&key) {
            key.clone()
        } else {
            suggest_name(&key)
        };
        if servers.iter().any(|s| s.name == name) {
            return Err(invalid(
                at,
                format!("\"{key}\" becomes the server name \"{name}\", which another entry already has; rename one"),
            ));
        }
        check_not_reserved(&name, "server name")
            .map_err(|m| invalid(at, format!("\"{key}\": {m}")))?;
        let transport = match (entry.command, entry.url) {
            (Some(command), None) => Transport::Stdio(StdioCommand {
                command,
                args: entry.args,
                env: entry.env.into_iter().collect(),
                // The file format has no inheritance setting: the safe default applies.
                env_inherit: Default::default(),
                env_allow: Vec::new(),
                cwd: entry.cwd.map(Into::into),
                replicas: 1,
            }),
            (None, Some(url)) => {
                if entry.kind.as_deref() == Some("sse") {
                    return Err(invalid(
                        at,
                        format!(
                            "\"{key}\" uses the legacy SSE transport, which mcp-proxy does not speak; \
                             point url at the server's Streamable HTTP endpoint (usually /mcp) and drop \"type\""
                        ),
                    ));
                }
                let url =
                    UpstreamUrl::parse(&url).map_err(|m| invalid(at, format!("\"{key}\": {m}")))?;
                let mut headers = Vec::with_capacity(entry.headers.len());
                for (k, v) in entry.headers {
                    check_header(&k, &v).map_err(|m| invalid(at, format!("\"{key}\": {m}")))?;
                    headers.push((k, v));
                }
                Transport::Http {
                    replicas: vec![super::ReplicaConfig {
                        url,
                        weight: 1,
                        drain: false,
                    }],
                    headers,
                }
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    at,
                    format!("\"{key}\" has both command and url; keep one"),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    at,
                    format!("\"{key}\" has neither command nor url; add one"),
                ));
            }
        };
        servers.push(ServerConfig {
            prefix: name.clone(),
            name,
            transport,
            balance: Default::default(),
            timeout: default_timeout(),
            connect_timeout: default_connect_timeout(),
            tags: Vec::new(),
            tls: None,
            era: Default::default(),
        });
    }
    Ok(Config {
        servers,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claude_desktop_file_becomes_upstreams() {
        let text = r#"{
  "globalShortcut": "Ctrl+Space",
  "mcpServers": {
    "memory": { "command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"], "env": {"A": "1"} },
    "remote tools": { "url": "http://127.0.0.1:3001/mcp", "headers": {"Authorization": "Bearer x"} },
    "off": { "command": "x", "disabled": true }
  }
}"#;
        let c = from_json(text, "claude_desktop_config.json").expect("valid");
        assert_eq!(c.servers.len(), 2);
        let memory = c
            .servers
            .iter()
            .find(|s| s.name == "memory")
            .expect("memory");
        match &memory.transport {
            Transport::Stdio(cmd) => {
                assert_eq!(cmd.command, "npx");
                assert_eq!(cmd.args, ["-y", "@modelcontextprotocol/server-memory"]);
                assert_eq!(cmd.env, [("A".to_owned(), "1".to_owned())]);
            }
            other => panic!("expected stdio, got {other:?}"),
        }
        let remote = c
            .servers
            .iter()
            .find(|s| s.name == "remote-tools")
            .expect("renamed");
        assert_eq!(remote.http_url().map(|u| u.port), Some(3001));
        assert_eq!(remote.headers().len(), 1);
    }

    #[test]
    fn legacy_sse_and_bad_json_are_explained() {
        let sse = r#"{"mcpServers": {"old": {"type": "sse", "url": "http://h/sse"}}}"#;
        let e = from_json(sse, "c.json").unwrap_err().to_string();
        assert!(e.contains("legacy SSE transport"), "{e}");
        let broken = "{\n  \"mcpServers\": {\n    \"a\": {\"command\": }\n  }\n}";
        let e = from_json(broken, "c.json").unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        let empty = r#"{"other": 1}"#;
        assert!(from_json(empty, "c.json")
            .unwrap_err()
            .to_string()
            .contains("mcpServers"));
    }
}
