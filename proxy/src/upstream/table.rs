//! One shard's way to each upstream server, by server index, as the live registry changes.
//!
//! Indices are stable (see [`crate::registry::servers`]): a removed server leaves an empty slot,
//! an added one is appended. Slots hand out `Rc`s, so a request that started on a server that
//! is then removed or replaced finishes on the `Upstream` it started with.

use std::cell::RefCell;
use std::rc::Rc;

use crate::protocol::cursor::ListKind;
use crate::registry::catalog::Catalog;
use crate::registry::servers::Entry;
use crate::shard::Shard;
use crate::upstream::Upstream;

/// Every server as this shard reaches it; `None` for a removed server.
#[derive(Default)]
pub struct Upstreams {
    slots: RefCell<Vec<Option<Rc<Upstream>>>>,
}

impl Upstreams {
    /// The way to server `index`, unless it was removed.
    pub fn get(&self, index: usize) -> Option<Rc<Upstream>> {
        self.slots.borrow().get(index).cloned().flatten()
    }

    /// Number of indices, removed servers included.
    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Whether no server was ever known.
    pub fn is_empty(&self) -> bool {
        self.slots.borrow().is_empty()
    }

    /// Sets slot `index` (growing the list with empty slots if needed); returns the old one.
    pub fn set(&self, index: usize, upstream: Option<Upstream>) -> Option<Rc<Upstream>> {
        let mut slots = self.slots.borrow_mut();
        if slots.len() <= index {
            slots.resize(index + 1, None);
        }
        std::mem::replace(&mut slots[index], upstream.map(Rc::new))
    }

    /// Sets the drain flag of each replica of server `index` as the registry says, in place:
    /// the replicas keep their statistics and the sessions bound to them.
    pub fn apply_replica_drain(&self, index: usize, entry: &Entry) {
        if let Some(Upstream::Http(client)) = self.get(index).as_deref() {
            for (replica, stats) in client.balancer.stats.iter().enumerate() {
                stats.drain.set(entry.replica_drained(replica));
            }
        }
    }

    /// Gives each HTTP server's client the `x-mcp-header` annotations of its tools in
    /// `catalog`, so requests built for 2026-07-28 upstreams carry their `Mcp-Param-*` headers.
    pub fn apply_param_headers(&self, catalog: &Catalog) {
        for index in 0..self.len() {
            if let Some(Upstream::Http(client)) = self.get(index).as_deref() {
                let params = catalog
                    .items(ListKind::Tools)
                    .iter()
                    .filter(|t| t.server == index && !t.param_headers.is_empty())
                    .map(|t| (t.original.clone(), t.param_headers.clone()))
                    .collect();
                *client.tool_params.borrow_mut() = params;
            }
        }
    }

    /// Starts the active health checks of server `index`, installed while the proxy runs.
    pub fn watch_health(&self, shard: &Rc<Shard>, index: usize) {
        if let Some(upstream) = self.get(index) {
            crate::upstream::health::watch(shard, &upstream);
        }
    }
}
