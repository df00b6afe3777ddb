//! Shell completion of server and tool names, asked of the running proxy.
//!
//! `source <(COMPLETE=bash mcpctl)` (or zsh, fish, elvish, powershell) registers mcpctl's
//! dynamic completion (clap_complete's `CompleteEnv`): options and subcommands as usual, and
//! for a server or tool name the names the proxy has now, read through the admin API with the
//! same `MCPCTL_URL` and token the commands use. When the proxy cannot be asked, no names are
//! offered (a completion never prints an error into the shell).

use clap_complete::engine::CompletionCandidate;
use serde_json::Value;

use crate::admin::Admin;
use crate::http::Url;

/// The admin API as the environment names it, for completion.
fn admin() -> Option<Admin> {
    let url = std::env::var("MCPCTL_URL").unwrap_or_else(|_| crate::DEFAULT_ADMIN_URL.into());
    let url = Url::parse(&url).ok()?;
    let token = std::env::var("MCPCTL_TOKEN").ok();
    let file = std::env::var_os("MCPCTL_TOKEN_FILE").map(std::path::PathBuf::from);
    let token = crate::token::resolve(token.as_deref(), file.as_deref(), &url).ok()?;
    Some(Admin { url, token })
}

/// The names at `key` of each item in the list at `list` of `GET /api/v1/{path}`.
fn names(path: &str, list: &str, key: &str) -> Vec<CompletionCandidate> {
    let Some(v) = admin().and_then(|a| a.get(path).ok()) else {
        return Vec::new();
    };
    v[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get(key).and_then(Value::as_str))
        .map(CompletionCandidate::new)
        .collect()
}

/// Server names.
pub fn servers() -> Vec<CompletionCandidate> {
    names("servers", "servers", "name")
}

/// Exposed tool names.
pub fn tools() -> Vec<CompletionCandidate> {
    names("tools", "items", "name")
}
