//! The merged lists, paged with the proxy's own cursors.

use std::rc::Rc;

use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::Answer;
use crate::protocol::cursor::{self, Cursor, ListKind};
use crate::protocol::jsonrpc::{self, code, Id};
use crate::registry::Catalog;
use crate::shard::Shard;

/// Answers a `*/list` request from the catalog.
pub fn list(
    shard: &Rc<Shard>,
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
    let (items, next) = cursor::page(catalog.items(kind), offset, shard.config.proxy.page_size);
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
