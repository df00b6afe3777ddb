//! What one client may see and call: its `servers` and `tools` patterns.
//!
//! A hidden tool is answered exactly like a tool that does not exist, so a client cannot probe
//! for names. A session without a client (`[auth]` off) has no [`Policy`]: everything is allowed.

use std::rc::Rc;

use crate::config::auth::ClientConfig;
use crate::protocol::cursor::ListKind;
use crate::registry::catalog::Item;
use crate::registry::Catalog;

use super::denial::count_denial;
use super::glob;
use super::running::{current, Auth};

/// Name of the proxy's own namespace in `servers` patterns.
pub const PROXY_SERVER: &str = "proxy";

/// What one client may see and call.
pub struct Policy {
    auth: Rc<Auth>,
    /// `None`: the client was removed by a reload, and may see nothing.
    client: Option<usize>,
}

impl Policy {
    /// The policy of client `name` in the running `[auth]` (one that a reload removed may see
    /// nothing).
    pub fn of(name: &str) -> Policy {
        let auth = current();
        let client = auth.find(name);
        Policy { auth, client }
    }

    fn entry(&self) -> Option<&ClientConfig> {
        self.client.map(|c| &self.auth.config.clients[c])
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        self.entry().map_or("unknown", |c| c.name.as_str())
    }

    /// Whether the client may use server `name` (`proxy` for the proxy's own tools and resources).
    pub fn server(&self, name: &str) -> bool {
        self.entry()
            .is_some_and(|c| c.servers.iter().any(|p| glob(p, name)))
    }

    /// Whether the client may see and call the tool exposed as `exposed` of server `server`.
    pub fn tool(&self, server: &str, exposed: &str) -> bool {
        self.server(server)
            && self
                .entry()
                .is_some_and(|c| c.tools.iter().any(|p| glob(p, exposed)))
    }

    /// Whether the client may use catalog server `server` (an index; past the end is the
    /// proxy); a refusal is counted.
    pub fn permits_server(&self, catalog: &Catalog, server: usize) -> bool {
        let allowed = self.server(server_name(catalog, server));
        if !allowed {
            count_denial(Some(self.name()), "policy");
        }
        allowed
    }

    /// Whether the client may call the tool exposed as `exposed` (of `server`); a refusal is
    /// counted.
    pub fn permits_tool(&self, catalog: &Catalog, server: usize, exposed: &str) -> bool {
        let allowed = self.tool(server_name(catalog, server), exposed);
        if !allowed {
            count_denial(Some(self.name()), "policy");
        }
        allowed
    }

    /// Whether the client may use `server`, without counting a refusal (for choosing, not
    /// refusing).
    pub fn shows_server(&self, catalog: &Catalog, server: usize) -> bool {
        self.server(server_name(catalog, server))
    }

    /// Whether the client may call the tool exposed as `exposed`, without counting a refusal
    /// (for a fast path that leaves refusing, and counting, to the full one).
    pub fn shows_tool(&self, catalog: &Catalog, server: usize, exposed: &str) -> bool {
        self.tool(server_name(catalog, server), exposed)
    }

    /// For a `completion/complete` naming a prompt or resource of a server the client may not
    /// use, the error a name that does not exist gets; `None` otherwise.
    pub fn hidden_reference(
        &self,
        catalog: &Catalog,
        msg: &simd_json::BorrowedValue<'_>,
    ) -> Option<String> {
        use simd_json::prelude::*;
        let reference = msg.get("params")?.get("ref")?;
        let (server, what, name) = match reference.get_str("type")? {
            "ref/prompt" => {
                let name = reference.get_str("name")?;
                (catalog.prompt(name)?.0, "prompt", name)
            }
            "ref/resource" => {
                let uri = reference.get_str("uri")?;
                (catalog.resource(uri)?.0, "resource", uri)
            }
            _ => return None,
        };
        (!self.permits_server(catalog, server)).then(|| format!("unknown {what}: {name}"))
    }
}

/// Whether a list item is shown under `policy` (`None`: everything is).
pub fn shows(policy: Option<&Policy>, catalog: &Catalog, kind: ListKind, item: &Item) -> bool {
    let Some(p) = policy else {
        return true;
    };
    let server = server_name(catalog, item.server);
    if kind != ListKind::Tools {
        return p.server(server);
    }
    // The proxy's own tools carry their exposed name as `original`.
    let exposed = if item.server >= catalog.servers.len() {
        Some(item.original.as_str())
    } else {
        catalog.tool_exposed(item.server, &item.original)
    };
    exposed.is_some_and(|e| p.tool(server, e))
}

/// The configured name of catalog server `server`, or [`PROXY_SERVER`] for the proxy's own.
pub fn server_name(catalog: &Catalog, server: usize) -> &str {
    catalog
        .servers
        .get(server)
        .map_or(PROXY_SERVER, |s| s.name.as_str())
}
