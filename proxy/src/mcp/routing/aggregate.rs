//! The merged lists, paged with the proxy's own cursors.

use std::collections::HashSet;
use std::rc::Rc;

use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::Answer;
use crate::config::ToolExposure;
use crate::discovery::list_all;
use crate::mcp::session::{Session, ToolView};
use crate::orchestration::ShardOrchestration;
use crate::protocol::cursor::{self, Cursor, ListKind};
use crate::protocol::jsonrpc::{self, code, Id};
use crate::registry::catalog::Item;
use crate::registry::{Catalog, ServerStatus};
use crate::shard::Shard;

/// Answers a `*/list` request from the catalog.
pub async fn list(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    catalog: &Catalog,
    id: &Id,
    msg: &Value<'_>,
    kind: ListKind,
) -> Answer {
    let offset = match msg.get("params").and_then(|p| p.get_str("cursor")) {
        None => 0,
        Some(text) => match cursor::decode(text) {
            Ok(c) if c.kind == kind => c.offset as usize,
            Ok(_) => return invalid(id, "this cursor belongs to another list"),
            Err(e) => return invalid(id, &e.to_string()),
        },
    };
    // A cursor from an older catalog still pages by offset: the list may have shifted, which
    // the spec allows (cursors are opaque and lists may change between pages).
    // The proxy's own tools and resources come first; in search mode they are the only tools.
    let own: &[Item] = match kind {
        ListKind::Tools => shard.orchestration().tool_items(),
        ListKind::Resources => shard.orchestration().resource_items(),
        _ => &[],
    };
    // A client's policy (`[auth]`) hides what it may not use, its own tools included.
    let policy = session.auth.policy();
    let shown = |i: &&Item| crate::auth::shows(policy.as_ref(), catalog, kind, i);
    let items: Vec<&Item> =
        if kind == ListKind::Tools && shard.config.proxy.tool_exposure == ToolExposure::Search {
            own.iter().filter(shown).collect()
        } else if kind == ListKind::Tools {
            let view = tool_view(session, catalog).await;
            own.iter()
                .chain(
                    catalog
                        .items(kind)
                        .iter()
                        .filter(|i| view.shows(i.server, &i.original)),
                )
                .filter(shown)
                .collect()
        } else {
            own.iter()
                .chain(catalog.items(kind))
                .filter(shown)
                .collect()
        };
    let (items, next) = cursor::page(&items, offset, shard.config.proxy.page_size);
    let key = match kind {
        ListKind::Tools => "tools",
        ListKind::Prompts => "prompts",
        ListKind::Resources => "resources",
        ListKind::ResourceTemplates => "resourceTemplates",
    };
    let mut out = Vec::with_capacity(32 + items.iter().map(|i| i.json.len() + 1).sum::<usize>());
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item.json);
    }
    out.push(b']');
    if let Some(next) = next {
        let c = Cursor {
            generation: catalog.generation,
            offset: next as u32,
            kind,
        };
        out.extend_from_slice(b",\"nextCursor\":");
        jsonrpc::write_json_string(&mut out, &cursor::encode(&c));
    }
    out.push(b'}');
    Answer::Json(jsonrpc::result_body(id, &out))
}

fn invalid(id: &Id, message: &str) -> Answer {
    Answer::Json(jsonrpc::error_body(Some(id), code::INVALID_PARAMS, message))
}

/// Which tools each server shows this session's client.
///
/// Servers tailor their tool list to the client's capabilities (a client without sampling is
/// not offered a tool that needs it), while the catalog holds what discovery, declaring every
/// capability, was offered. So the first list of a session asks each server, through the
/// session's own upstream session, and keeps the answer until the catalog changes.
async fn tool_view(session: &Rc<Session>, catalog: &Catalog) -> Rc<ToolView> {
    if let Some(view) = session.tool_view(catalog.generation) {
        return view;
    }
    let mut tasks = Vec::new();
    for (server, status) in catalog.status.iter().enumerate() {
        if !session.auth.shows_server(catalog, server) {
            continue;
        }
        let Some(upstream) = session
            .upstream(server)
            .filter(|_| matches!(status, ServerStatus::Up(_)))
        else {
            continue;
        };
        tasks.push((
            server,
            glommio::spawn_local(async move { list_all(&upstream, "tools/list", "tools").await }),
        ));
    }
    let mut visible = vec![None; catalog.status.len()];
    for (server, task) in tasks {
        match task.await {
            Ok(items) => {
                let names: HashSet<String> = items
                    .iter()
                    .filter_map(|raw| {
                        let mut buf = raw.to_vec();
                        let v = simd_json::to_borrowed_value(&mut buf).ok()?;
                        v.get_str("name").map(str::to_owned)
                    })
                    .collect();
                visible[server] = Some(names);
            }
            // Unreachable just now: show what discovery saw rather than nothing.
            Err(e) => log::debug!(
                "session {}: tools/list for its view failed: {e}",
                session.id
            ),
        }
    }
    session.set_tool_view(ToolView {
        generation: catalog.generation,
        visible,
    })
}
