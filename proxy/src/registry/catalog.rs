//! An immutable snapshot of everything the upstream servers offer, under exposed names.
//!
//! Items are kept as ready-to-send JSON with their exposed name or URI already in place, so a
//! `tools/list` page is a concatenation, not a rebuild.

use std::collections::HashMap;

use bytes::Bytes;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use crate::protocol::cursor::ListKind;
use crate::protocol::names::{self, NameTable};
use crate::protocol::{jsonrpc, stateless};

/// What one server listed, as raw JSON items in the server's own names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerListing {
    /// The `result` of the server's initialize answer.
    pub init_result: Bytes,
    /// `tools/list` items.
    pub tools: Vec<Bytes>,
    /// `prompts/list` items.
    pub prompts: Vec<Bytes>,
    /// `resources/list` items.
    pub resources: Vec<Bytes>,
    /// `resources/templates/list` items.
    pub templates: Vec<Bytes>,
}

/// Whether a server could be discovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerStatus {
    /// Not tried yet.
    Pending,
    /// Listed successfully.
    Up(ServerListing),
    /// The last attempt failed; the message says why.
    Down(String),
}

/// One item as served to clients.
#[derive(Clone, Debug)]
pub struct Item {
    /// Index of the server it came from.
    pub server: usize,
    /// Its name (or URI) on that server.
    pub original: String,
    /// For tools: annotated read-only or idempotent, so a failed call may be sent again.
    pub retry_safe: bool,
    /// The item's JSON with its exposed name/URI.
    pub json: Bytes,
    /// For tools: the `x-mcp-header` annotations of its `inputSchema`.
    pub param_headers: Vec<stateless::ParamHeader>,
}

/// How a server is named and how its items are exposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerIdentity {
    /// The configured name.
    pub name: String,
    /// The exposed-name prefix; empty for none.
    pub prefix: String,
}

/// Every server's offer, merged. Cheap to share: shards hold it behind an `Arc`.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Bumped on every change; pagination cursors name it.
    pub generation: u64,
    /// Server names and prefixes, by index.
    pub servers: Vec<ServerIdentity>,
    /// Discovery state, by server index.
    pub status: Vec<ServerStatus>,
    tools: Vec<Item>,
    prompts: Vec<Item>,
    resources: Vec<Item>,
    templates: Vec<Item>,
    tool_names: NameTable,
    prompt_names: NameTable,
}

impl Catalog {
    /// Merges the servers' listings; a server whose names cannot be exposed is marked down.
    pub fn build(
        generation: u64,
        servers: Vec<ServerIdentity>,
        mut status: Vec<ServerStatus>,
    ) -> Catalog {
        let tool_names = Self::names(&servers, &mut status, "tool", |l| &l.tools);
        let prompt_names = Self::names(&servers, &mut status, "prompt", |l| &l.prompts);
        let mut catalog = Catalog {
            generation,
            servers,
            status,
            tool_names,
            prompt_names,
            ..Catalog::default()
        };
        for (server, st) in catalog.status.iter().enumerate() {
            let ServerStatus::Up(listing) = st else {
                continue;
            };
            let prefix = &catalog.servers[server].prefix;
            for raw in &listing.tools {
                if let Some(item) = rewrite(server, raw, "name", |n| {
                    catalog.tool_names.exposed(server, n).map(str::to_owned)
                }) {
                    catalog.tools.push(item);
                }
            }
            for raw in &listing.prompts {
                if let Some(item) = rewrite(server, raw, "name", |n| {
                    catalog.prompt_names.exposed(server, n).map(str::to_owned)
                }) {
                    catalog.prompts.push(item);
                }
            }
            for raw in &listing.resources {
                if let Some(item) =
                    rewrite(server, raw, "uri", |u| Some(names::prefix_uri(prefix, u)))
                {
                    catalog.resources.push(item);
                }
            }
            for raw in &listing.templates {
                if let Some(item) = rewrite(server, raw, "uriTemplate", |u| {
                    Some(names::prefix_uri(prefix, u))
                }) {
                    catalog.templates.push(item);
                }
            }
        }
        catalog
    }

    fn names(
        servers: &[ServerIdentity],
        status: &mut [ServerStatus],
        what: &str,
        pick: impl Fn(&ServerListing) -> &Vec<Bytes>,
    ) -> NameTable {
        let mut originals: Vec<(usize, String)> = Vec::new();
        for (server, st) in status.iter().enumerate() {
            if let ServerStatus::Up(listing) = st {
                originals.extend(
                    pick(listing)
                        .iter()
                        .filter_map(|raw| item_field(raw, "name"))
                        .map(|n| (server, n)),
                );
            }
        }
        let table = NameTable::build(
            originals
                .iter()
                .map(|(s, n)| (*s, servers[*s].prefix.as_str(), n.as_str())),
        );
        match table {
            Ok(t) => t,
            Err(collision) => {
                // Never shadow: the later server's offer is withheld until the clash is resolved.
                let (first, second) = (
                    &servers[collision.first_server].name,
                    &servers[collision.second_server].name,
                );
                let msg = format!(
                    "{what} name \"{}\" of server {second} collides with server {first}'s; \
                     {second} is withheld until one of them gets a distinct prefix",
                    collision.name
                );
                log::error!("{msg}");
                status[collision.second_server] = ServerStatus::Down(msg);
                Self::names(servers, status, what, pick)
            }
        }
    }

    /// The items of one list.
    pub fn items(&self, kind: ListKind) -> &[Item] {
        match kind {
            ListKind::Tools => &self.tools,
            ListKind::Prompts => &self.prompts,
            ListKind::Resources => &self.resources,
            ListKind::ResourceTemplates => &self.templates,
        }
    }

    /// The server and original name behind an exposed tool name.
    pub fn tool(&self, exposed: &str) -> Option<(usize, &str)> {
        self.tool_names.lookup(exposed)
    }

    /// The exposed name of `server`'s tool `original`.
    pub fn tool_exposed(&self, server: usize, original: &str) -> Option<&str> {
        self.tool_names.exposed(server, original)
    }

    /// True when `server`'s tool `original` is annotated read-only or idempotent.
    pub fn tool_retry_safe(&self, server: usize, original: &str) -> bool {
        self.tools
            .iter()
            .any(|t| t.server == server && t.original == original && t.retry_safe)
    }

    /// The `x-mcp-header` annotations of the tool exposed as `exposed` (none when unknown).
    pub fn tool_param_headers(&self, exposed: &str) -> &[stateless::ParamHeader] {
        self.tool(exposed)
            .and_then(|(server, original)| {
                self.tools
                    .iter()
                    .find(|t| t.server == server && t.original == original)
            })
            .map_or(&[], |t| t.param_headers.as_slice())
    }

    /// The server and original name behind an exposed prompt name.
    pub fn prompt(&self, exposed: &str) -> Option<(usize, &str)> {
        self.prompt_names.lookup(exposed)
    }

    /// The server and original URI behind an exposed resource URI.
    /// URIs are resolved by prefix rather than looked up in a list (templates make them
    /// open-ended), so a server that is down, drained or withheld is refused here: tools and
    /// prompts of such a server are absent from the catalog, and resources must not be the
    /// one way new work still reaches it.
    pub fn resource<'u>(&self, exposed: &'u str) -> Option<(usize, &'u str)> {
        if let Some((prefix, original)) = names::split_uri(exposed) {
            if let Some(server) = self.servers.iter().position(|s| s.prefix == prefix) {
                return self.offered(server).then_some((server, original));
            }
        }
        // Servers without a prefix expose URIs as they are: find the one that lists the URI,
        // or whose template it fits, or the only unprefixed server.
        let unprefixed: Vec<usize> = (0..self.servers.len())
            .filter(|s| self.servers[*s].prefix.is_empty() && self.offered(*s))
            .collect();
        let listed = self
            .resources
            .iter()
            .find(|i| i.original == exposed)
            .map(|i| i.server);
        let templated = || {
            self.templates
                .iter()
                .filter(|t| unprefixed.contains(&t.server))
                .find(|t| exposed.starts_with(t.original.split('{').next().unwrap_or("")))
                .map(|t| t.server)
        };
        let server = listed
            .filter(|s| unprefixed.contains(s))
            .or_else(templated)
            .or_else(|| (unprefixed.len() == 1).then(|| unprefixed[0]))?;
        Some((server, exposed))
    }

    /// True unless `server` is down (unreachable, drained, removed or withheld): its items
    /// are offered, or it has not been listed yet.
    fn offered(&self, server: usize) -> bool {
        !matches!(self.status.get(server), Some(ServerStatus::Down(_)))
    }

    /// The index of a server by name.
    pub fn server_index(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// True when some reachable server declared `capability` (e.g. "logging").
    pub fn any_declares(&self, capability: &str, sub: Option<&str>) -> bool {
        (0..self.status.len()).any(|server| self.declares(server, capability, sub))
    }

    /// True when `server` is reachable and declared `capability` (and its flag `sub`, if given).
    pub fn declares(&self, server: usize, capability: &str, sub: Option<&str>) -> bool {
        let Some(ServerStatus::Up(listing)) = self.status.get(server) else {
            return false;
        };
        let mut buf = listing.init_result.to_vec();
        let Ok(v) = simd_json::to_borrowed_value(&mut buf) else {
            return false;
        };
        let cap = v.get("capabilities").and_then(|c| c.get(capability));
        match (cap, sub) {
            (Some(c), Some(s)) => c.get_bool(s).unwrap_or(false),
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Which lists differ from `older`'s, for `list_changed` notifications.
    pub fn changed_since(&self, older: &Catalog) -> Vec<ListKind> {
        let same = |a: &[Item], b: &[Item]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.json == y.json)
        };
        let mut out = Vec::new();
        if !same(&self.tools, &older.tools) {
            out.push(ListKind::Tools);
        }
        if !same(&self.prompts, &older.prompts) {
            out.push(ListKind::Prompts);
        }
        if !same(&self.resources, &older.resources) || !same(&self.templates, &older.templates) {
            out.push(ListKind::Resources);
        }
        out
    }
}

/// Reads a string field of a raw item.
fn item_field(raw: &[u8], field: &str) -> Option<String> {
    let mut buf = raw.to_vec();
    let v = simd_json::to_borrowed_value(&mut buf).ok()?;
    v.get_str(field).map(str::to_owned)
}

/// Re-serializes an item with `field` mapped; `None` drops an item that has no such field.
fn rewrite(
    server: usize,
    raw: &[u8],
    field: &str,
    map: impl Fn(&str) -> Option<String>,
) -> Option<Item> {
    let mut buf = raw.to_vec();
    let mut v: Value<'_> = simd_json::to_borrowed_value(&mut buf).ok()?;
    let original = v.get_str(field)?.to_owned();
    let exposed = map(&original)?;
    let hint = |name: &str| {
        v.get("annotations")
            .and_then(|a| a.get_bool(name))
            .unwrap_or(false)
    };
    let retry_safe = hint("readOnlyHint") || hint("idempotentHint");
    let param_headers = if field == "name" {
        match stateless::param_headers(v.get("inputSchema")) {
            Ok(p) => p,
            Err(why) => {
                // The spec makes a client drop such a tool rather than call it without the
                // headers its server may route on; the rest of the server stays usable.
                log::warn!("tool {original} of server #{server} withheld: {why}");
                return None;
            }
        }
    } else {
        Vec::new()
    };
    v.as_object_mut()?
        .insert(field.to_owned().into(), Value::from(exposed));
    Some(Item {
        server,
        original,
        retry_safe,
        json: jsonrpc::to_bytes(&v),
        param_headers,
    })
}

/// A summary of server states, for logs and errors.
pub fn describe(status: &ServerStatus) -> String {
    match status {
        ServerStatus::Pending => "not discovered yet".into(),
        ServerStatus::Up(l) => format!("up ({} tools)", l.tools.len()),
        ServerStatus::Down(why) => format!("down: {why}"),
    }
}

/// Per-kind item counts, keyed by list name (for logs).
pub fn counts(c: &Catalog) -> HashMap<&'static str, usize> {
    HashMap::from([
        ("tools", c.tools.len()),
        ("prompts", c.prompts.len()),
        ("resources", c.resources.len()),
        ("templates", c.templates.len()),
    ])
}
