//! Which server a request naming a tool, prompt or resource goes to, under the session's
//! policy. The spliced route (bytes rewritten without a parse) and the parsed route both ask
//! [`target`], so a name one of them sends upstream is exactly a name the other would.

use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use crate::mcp::session::Session;
use crate::orchestration;
use crate::protocol::jsonrpc;
use crate::registry::{Catalog, ServerStatus};

/// What the name a request targets reaches, for this session.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'c> {
    /// The server at this index, under its own name for the thing (borrowed from the catalog
    /// or, for a resource URI, from the name the request gave).
    Upstream(usize, &'c str),
    /// One of the proxy's own tools (`tools/call`) or resources (`resources/read`).
    Own,
    /// The catalog has it, but the session's policy hides it: answered as unknown.
    Hidden,
    /// The catalog has no such name (or the method names nothing).
    Unknown,
}

/// Whether [`target`] counts a policy refusal: only the route that answers the refusal does,
/// so a request refused by policy counts once whichever routes looked at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This route answers a hidden name: count it in `mcp_proxy_auth_denied_total`.
    Counted,
    /// This route leaves a hidden name to another one, which counts it.
    Uncounted,
}

/// The field of `params` that names what `method` targets, and what it names.
pub fn named_field(method: &str) -> Option<(&'static str, &'static str)> {
    match method {
        "tools/call" => Some(("name", "tool")),
        "prompts/get" => Some(("name", "prompt")),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            Some(("uri", "resource"))
        }
        _ => None,
    }
}

/// What `exposed`, named by a request of `method`, reaches for `session`: the one policy
/// check of named requests.
pub fn target<'c>(
    session: &Session,
    catalog: &'c Catalog,
    method: &str,
    exposed: &'c str,
    refusal: Refusal,
) -> Target<'c> {
    let shows_tool = |server: usize| match refusal {
        Refusal::Counted => session.auth.permits_tool(catalog, server, exposed),
        Refusal::Uncounted => session.auth.shows_tool(catalog, server, exposed),
    };
    let shows_server = |server: usize| match refusal {
        Refusal::Counted => session.auth.permits_server(catalog, server),
        Refusal::Uncounted => session.auth.shows_server(catalog, server),
    };
    // The proxy's own things are checked under the proxy's server name (`usize::MAX`).
    let found = match method {
        "tools/call" if orchestration::is_own_tool(exposed) => {
            return own(shows_tool(usize::MAX));
        }
        "resources/read" if orchestration::is_own_resource(exposed) => {
            return own(shows_server(usize::MAX));
        }
        "tools/call" => catalog.tool(exposed).map(|(s, o)| (s, o, shows_tool(s))),
        "prompts/get" => catalog
            .prompt(exposed)
            .map(|(s, o)| (s, o, shows_server(s))),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => catalog
            .resource(exposed)
            .map(|(s, o)| (s, o, shows_server(s))),
        _ => return Target::Unknown,
    };
    match found {
        Some((server, original, true)) => Target::Upstream(server, original),
        Some(_) => Target::Hidden,
        None => Target::Unknown,
    }
}

fn own<'c>(shown: bool) -> Target<'c> {
    if shown {
        Target::Own
    } else {
        Target::Hidden
    }
}

/// Where a parsed request naming a tool, prompt or resource goes: `Ok(Some(server))` with
/// the name rewritten to the server's own, `Ok(None)` for the proxy's own, or the message of
/// the -32602 error that refuses it (a hidden name reads as an unknown one).
pub fn by_name(
    session: &Session,
    catalog: &Catalog,
    method: &str,
    msg: &mut Value<'_>,
) -> Result<Option<usize>, String> {
    let Some((field, what)) = named_field(method) else {
        return Err(format!("method not routed by name: {method}"));
    };
    let Some(params) = msg.get_mut("params").filter(|p| p.is_object()) else {
        return Err(format!("missing params: the {what} {field} is required"));
    };
    let Some(exposed) = params.get_str(field) else {
        return Err(format!(
            "missing params.{field}: the {what} {field} is required"
        ));
    };
    match target(session, catalog, method, exposed, Refusal::Counted) {
        Target::Upstream(server, original) => {
            let original = original.to_owned();
            jsonrpc::set_member(params, field, Value::from(original));
            Ok(Some(server))
        }
        Target::Own => Ok(None),
        Target::Hidden | Target::Unknown => Err(format!(
            "unknown {what}: {exposed}{}",
            down_hint(catalog, exposed)
        )),
    }
}

/// `completion/complete` names a prompt or a resource inside `params.ref`.
pub fn completion_target(msg: &mut Value<'_>, catalog: &Catalog) -> Result<usize, String> {
    let reference = msg
        .get_mut("params")
        .and_then(|p| p.get_mut("ref"))
        .filter(|r| r.is_object());
    let Some(reference) = reference else {
        return Err("missing params.ref".into());
    };
    match reference.get_str("type") {
        Some("ref/prompt") => {
            let Some(name) = reference.get_str("name") else {
                return Err("missing params.ref.name".into());
            };
            let (server, original) = catalog
                .prompt(name)
                .ok_or_else(|| format!("unknown prompt: {name}"))?;
            let original = original.to_owned();
            jsonrpc::set_member(reference, "name", Value::from(original));
            Ok(server)
        }
        Some("ref/resource") => {
            let Some(uri) = reference.get_str("uri") else {
                return Err("missing params.ref.uri".into());
            };
            let (server, original) = catalog
                .resource(uri)
                .ok_or_else(|| format!("unknown resource: {uri}"))?;
            let original = original.to_owned();
            jsonrpc::set_member(reference, "uri", Value::from(original));
            Ok(server)
        }
        _ => Err("params.ref.type must be ref/prompt or ref/resource".into()),
    }
}

/// Why a name may be unknown: its prefix names a server that is down.
fn down_hint(catalog: &Catalog, exposed: &str) -> String {
    let down = catalog.servers.iter().zip(&catalog.status).find(|(s, _)| {
        !s.prefix.is_empty()
            && (exposed.starts_with(&format!("{}__", s.prefix))
                || exposed.starts_with(&format!("{}+", s.prefix)))
    });
    match down {
        Some((s, ServerStatus::Down(why))) if why == "draining" => format!(
            " (server {} is drained and takes no new work; `mcpctl servers enable {}` offers it again)",
            s.name, s.name
        ),
        Some((s, ServerStatus::Down(why))) => {
            format!(" (server {} is unavailable: {why})", s.name)
        }
        Some((s, ServerStatus::Pending)) => {
            format!(" (server {} has not been reached yet)", s.name)
        }
        _ => String::new(),
    }
}
