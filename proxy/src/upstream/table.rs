//! One shard's way to each upstream server, by server index, as the live registry changes.
//!
//! Indices are stable (see [`crate::registry::servers`]): a removed server leaves an empty slot,
//! an added one is appended. Slots hand out `Rc`s, so a request that started on a server that
//! is then removed or replaced finishes on the `Upstream` it started with.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ServerConfig, Transport};
use crate::protocol::cursor::ListKind;
use crate::registry::catalog::Catalog;
use crate::registry::servers::{Entry, Registry, ServerState};
use crate::shard::Shard;
use crate::upstream::stdio::connection::StdioLink;
use crate::upstream::{Upstream, UpstreamClient, STDIO_SHARD};

/// How long a stdio child has to exit after SIGTERM before SIGKILL.
pub const CHILD_GRACE: Duration = Duration::from_secs(3);

/// This shard's upstreams, the local the upstream layer keeps on each shard.
pub trait ShardUpstreams {
    /// Every server as this shard reaches it.
    fn upstreams(&self) -> &Upstreams;

    /// The connection to child `replica` of stdio server `server`, on the shard that owns it.
    fn stdio_link(&self, server: usize, replica: usize) -> Option<Rc<StdioLink>> {
        match self.upstreams().get(server)?.as_ref() {
            Upstream::Stdio { links, .. } => links.get(replica).cloned(),
            Upstream::Http(_) => None,
        }
    }
}

impl ShardUpstreams for Shard {
    fn upstreams(&self) -> &Upstreams {
        self.local::<Upstreams>()
    }
}

/// Stops every stdio child this shard owns (SIGTERM, then SIGKILL after `grace`).
pub async fn stop_children(shard: &Shard, grace: Duration) {
    let upstreams = shard.upstreams();
    for server in 0..upstreams.len() {
        let links = match upstreams.get(server).as_deref() {
            Some(Upstream::Stdio { links, .. }) => links.clone(),
            _ => Vec::new(),
        };
        for link in links {
            link.stop(grace).await;
        }
    }
}

/// Brings this shard's upstreams in line with `registry` (a [`crate::shard::RegistryHook`]):
/// new indices get an upstream, removed ones lose theirs (in-flight requests keep the `Rc`
/// they hold), changed descriptions get a fresh one.
pub fn follow_registry(shard: &Rc<Shard>, old: &Registry, registry: &Arc<Registry>) {
    let upstreams = shard.upstreams();
    let this = Rc::downgrade(shard);
    for (i, entry) in registry.entries.iter().enumerate() {
        let before = old.entries.get(i);
        let was_live = before.is_some_and(|b| b.state != ServerState::Removed);
        let live = entry.state != ServerState::Removed;
        let changed = before.is_none_or(|b| b.config != entry.config);
        if before.is_none() {
            crate::metrics::add_server(i, &entry.config);
        }
        // A change of strategy or weights only is taken in place: sessions, pools and
        // balancer statistics carry on.
        let retuned = live
            && was_live
            && changed
            && upstreams.get(i).is_some_and(|u| u.retune(&entry.config));
        let fresh = live && (!was_live || (changed && !retuned));
        let replaced = if fresh {
            upstreams.set(i, Some(make_upstream(&this, shard.id, i, &entry.config)))
        } else if !live && was_live {
            upstreams.set(i, None)
        } else {
            None
        };
        if fresh {
            upstreams.watch_health(shard, i);
        }
        if live {
            upstreams.apply_replica_drain(i, entry);
        }
        if let Some(Upstream::Stdio { links, .. }) = replaced.as_deref() {
            // Calls in flight on the old children get until the grace period ends.
            for link in links.clone() {
                glommio::spawn_local(async move {
                    link.stop(CHILD_GRACE).await;
                })
                .detach();
            }
        }
    }
}

/// Gives the HTTP clients the tools' parameter headers of a new catalog (a
/// [`crate::shard::CatalogHook`]).
pub fn follow_catalog(shard: &Shard, catalog: &Arc<Catalog>, _changed: &[ListKind]) {
    shard.upstreams().apply_param_headers(catalog);
}

/// A shard's way to server `index`: its own HTTP pool, or the stdio child (started on
/// [`STDIO_SHARD`] only).
fn make_upstream(this: &Weak<Shard>, id: usize, index: usize, s: &ServerConfig) -> Upstream {
    match &s.transport {
        Transport::Http { replicas, .. } => {
            Upstream::Http(UpstreamClient::new(index, s.clone(), replicas))
        }
        Transport::Stdio(command) => Upstream::stdio(
            index,
            s,
            // Children live on one shard: a stdio child holds one session, and a stateful
            // server (memory) must see every call of the sessions bound to it.
            if id == STDIO_SHARD {
                (0..command.replicas.max(1))
                    .map(|_| StdioLink::start(this.clone(), index, s, command))
                    .collect()
            } else {
                Vec::new()
            },
            command.replicas,
        ),
    }
}

/// Every server as this shard reaches it; `None` for a removed server.
#[derive(Default)]
pub struct Upstreams {
    slots: RefCell<Vec<Option<Rc<Upstream>>>>,
}

impl Upstreams {
    /// Shard `id`'s way to every server of `config` (`this` is the shard being built).
    pub fn for_config(this: &Weak<Shard>, id: usize, config: &Config) -> Upstreams {
        let upstreams = Upstreams::default();
        for (i, s) in config.servers.iter().enumerate() {
            upstreams.set(i, Some(make_upstream(this, id, i, s)));
        }
        upstreams
    }

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
