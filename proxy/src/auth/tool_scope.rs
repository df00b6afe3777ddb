//! Per-tool scopes (`tool_scopes` of a client): calling a tool whose exposed name matches a
//! pattern takes that pattern's scope in the caller's token. Checked at the door, before the
//! request is read further, so a missing scope is an HTTP 403 with `insufficient_scope` and
//! the scope needed, which an OAuth client steps up to (MCP authorization, scope challenge).
//! API keys carry no scopes and are not held to them, as with a client's `scopes`.

use simd_json::prelude::*;

use super::denial::Denial;
use super::glob;
use super::identity::Identity;
use super::running::current;

/// Refuses a `tools/call` in `body` by `identity` when its client asks for a scope for that
/// tool the token lacks.
pub fn check_tool_scope(identity: Option<&Identity>, body: &[u8]) -> Result<(), Denial> {
    let Some((identity, scopes)) = identity.and_then(|i| i.scopes.as_deref().map(|s| (i, s)))
    else {
        return Ok(());
    };
    let auth = current();
    let Some(client) = auth.find(&identity.client).map(|c| &auth.config.clients[c]) else {
        return Ok(());
    };
    // Only clients with tool_scopes pay for reading the body here.
    if client.tool_scopes.is_empty() || !body.windows(10).any(|w| w == b"tools/call") {
        return Ok(());
    }
    let mut copy = body.to_vec();
    let Ok(msg) = simd_json::to_borrowed_value(&mut copy) else {
        return Ok(()); // malformed: refused further on with its own error
    };
    if msg.get_str("method") != Some("tools/call") {
        return Ok(());
    }
    let Some(tool) = msg.get("params").and_then(|p| p.get_str("name")) else {
        return Ok(());
    };
    let missing = client
        .tool_scopes
        .iter()
        .find(|(pattern, scope)| glob(pattern, tool) && !scopes.split(' ').any(|s| s == scope));
    match missing {
        None => Ok(()),
        Some((_, scope)) => Err(Denial::InsufficientScope {
            client: client.name.clone(),
            scope: scope.clone(),
            message: format!(
                "tool \"{tool}\" needs scope \"{scope}\", which this token of client \"{}\" lacks; ask the authorization server for it",
                client.name
            ),
        }),
    }
}
