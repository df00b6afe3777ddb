//! The per-core context: which core this is, how to reach the others, and what every layer
//! keeps on it.
//!
//! A shard owns its listener's connections, its sessions, its upstream pools and its copy of
//! the registry and the catalog. Nothing here is shared between threads except immutable
//! `Arc` snapshots (config, registry, catalog) and the messages of the channel mesh
//! ([`mesh`]).
//!
//! The context knows nothing of the layers above it: each keeps its own per-core state as a
//! *local* of the shard ([`Shard::local`], like Seastar's `sharded<T>::local()`), installed by
//! the runtime when the shard is built ([`Wiring`]), and learns of a new registry or catalog
//! through the hooks it registered there. A layer offers its local through an extension
//! trait (`upstream::ShardUpstreams`, `mcp::session::ShardSessions`, ...).
//!
//! A session lives on the shard that created it; its id names that shard. A request for it
//! that lands elsewhere is forwarded whole to the owner, and the owner's reply, streamed or
//! not, comes back over the mesh.
//!
//! - [`drain`]: whether this shard is stopping (connections close when idle, nothing is
//!   spawned once its executor ends).
//! - [`mesh`]: the channels between shards.

pub mod drain;
pub mod mesh;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use crate::config::Config;
use crate::protocol::cursor::ListKind;
use crate::registry::servers::Registry;
use crate::registry::Catalog;
pub use mesh::Mesh;

/// What a layer does when this shard takes a new registry: given the shard, the registry it
/// replaced and the new one.
pub type RegistryHook = Box<dyn Fn(&Rc<Shard>, &Registry, &Arc<Registry>)>;

/// What a layer does when this shard takes a new catalog: given the shard, the catalog and
/// the lists that changed since the previous one (often none).
pub type CatalogHook = Box<dyn Fn(&Shard, &Arc<Catalog>, &[ListKind])>;

/// Shard 0's way to list server `index` again, given by discovery.
pub type Rediscover = Box<dyn Fn(usize)>;

/// What the layers above put on a shard when it is built.
#[derive(Default)]
pub struct Wiring {
    locals: Vec<Box<dyn Any>>,
    on_registry: Vec<RegistryHook>,
    on_catalog: Vec<CatalogHook>,
}

impl Wiring {
    /// Keeps `value` as this shard's local of its type ([`Shard::local`]).
    pub fn local<T: Any>(&mut self, value: T) -> &mut Self {
        self.locals.push(Box::new(value));
        self
    }

    /// Calls `hook` whenever the shard takes a new registry, in the order registered.
    pub fn on_registry(&mut self, hook: RegistryHook) -> &mut Self {
        self.on_registry.push(hook);
        self
    }

    /// Calls `hook` whenever the shard takes a new catalog, in the order registered.
    pub fn on_catalog(&mut self, hook: CatalogHook) -> &mut Self {
        self.on_catalog.push(hook);
        self
    }
}

/// One core's context.
pub struct Shard {
    /// This shard's index (0-based).
    pub id: usize,
    /// How many shards run.
    pub nr_shards: usize,
    /// The configuration this shard was started with.
    pub config: Arc<Config>,
    /// The live registry as this shard last heard it (shard 0's is the authority).
    registry: RefCell<Arc<Registry>>,
    catalog: RefCell<Arc<Catalog>>,
    /// Channels to the other shards.
    pub mesh: Mesh,
    /// Requests being handled, so shutdown can let them finish.
    inflight: Rc<Cell<usize>>,
    /// Sessions open here, as the session layer last counted them.
    sessions_open: Cell<usize>,
    wiring: Wiring,
    /// Shard 0's way to list a server again, set once discovery runs.
    rediscover: RefCell<Option<Rediscover>>,
}

/// Counts a request as in flight until dropped.
pub struct Busy(Rc<Cell<usize>>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl Shard {
    /// A shard with the registry of `config` and an empty catalog; `wire` gives the layers'
    /// locals and hooks (it gets the shard's weak handle for what must reach back to it).
    pub fn new(
        id: usize,
        nr_shards: usize,
        config: Arc<Config>,
        mesh: Mesh,
        wire: impl FnOnce(&Weak<Shard>) -> Wiring,
    ) -> Rc<Shard> {
        let status = vec![crate::registry::ServerStatus::Pending; config.servers.len()];
        let catalog = Catalog::build(0, identities(&config), status);
        let registry = Registry::from_config(&config);
        Rc::new_cyclic(|this| Shard {
            id,
            nr_shards,
            config,
            registry: RefCell::new(Arc::new(registry)),
            catalog: RefCell::new(Arc::new(catalog)),
            mesh,
            inflight: Rc::default(),
            sessions_open: Cell::new(0),
            wiring: wire(this),
            rediscover: RefCell::new(None),
        })
    }

    /// The local of type `T` a layer keeps on this shard.
    ///
    /// # Panics
    /// When no layer installed one: the runtime wires every layer's local before the shard
    /// serves anything, so this is a wiring mistake, found by any test that starts a shard.
    pub fn local<T: Any>(&self) -> &T {
        self.wiring
            .locals
            .iter()
            .find_map(|l| l.downcast_ref::<T>())
            .unwrap_or_else(|| panic!("no shard local of type {}", std::any::type_name::<T>()))
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn begin_request(&self) -> Busy {
        self.inflight.set(self.inflight.get() + 1);
        Busy(self.inflight.clone())
    }

    /// Notes a request forwarded upstream; its answer may stream long after the HTTP
    /// exchange that started it returned, so shutdown waits for these too.
    pub fn forwarding_started(&self) {
        self.inflight.set(self.inflight.get() + 1);
    }

    /// Notes the end of a forwarded request.
    pub fn forwarding_ended(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
    }

    /// Requests in flight on this shard.
    pub fn requests_in_flight(&self) -> usize {
        self.inflight.get()
    }

    /// Sessions open on this shard (the session layer keeps the count).
    pub fn session_count(&self) -> usize {
        self.sessions_open.get()
    }

    /// Records how many sessions are open on this shard.
    pub fn set_session_count(&self, open: usize) {
        self.sessions_open.set(open);
    }

    /// The live registry as this shard knows it.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.borrow().clone()
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// Sends this shard's registry and catalog to every other shard together: a shard never
    /// sees a catalog naming a server its registry does not have, or the other way round.
    pub fn broadcast_snapshot(&self) {
        let (registry, catalog) = (self.registry(), self.catalog());
        for peer in (0..self.nr_shards).filter(|p| *p != self.id) {
            let (registry, catalog) = (registry.clone(), catalog.clone());
            self.mesh.tell(peer, move |shard: &Rc<Shard>| {
                shard.install_snapshot(registry, catalog)
            });
        }
    }

    /// Applies a registry and catalog published together by shard 0, registry first. Each
    /// message is sent by its own task, so an older snapshot may arrive after a newer one:
    /// what is not newer than what this shard holds is ignored.
    pub fn install_snapshot(self: &Rc<Self>, registry: Arc<Registry>, catalog: Arc<Catalog>) {
        if registry.version > self.registry().version {
            self.install_registry(registry);
        }
        if catalog.generation >= self.catalog().generation {
            self.install_catalog(catalog);
        }
    }

    /// Installs `registry` here and lets every layer follow it (the upstreams first);
    /// returns the registry it replaces.
    pub fn install_registry(self: &Rc<Self>, registry: Arc<Registry>) -> Arc<Registry> {
        let old = std::mem::replace(&mut *self.registry.borrow_mut(), registry.clone());
        for hook in &self.wiring.on_registry {
            hook(self, &old, &registry);
        }
        old
    }

    /// Installs a new catalog here and on every other shard, with the registry it was built
    /// from (called on shard 0).
    pub fn publish_catalog(self: &Rc<Self>, catalog: Arc<Catalog>) {
        self.install_catalog(catalog);
        self.broadcast_snapshot();
    }

    /// Installs a catalog and tells every layer which lists changed.
    pub fn install_catalog(&self, catalog: Arc<Catalog>) {
        let old = std::mem::replace(&mut *self.catalog.borrow_mut(), catalog.clone());
        let changed = catalog.changed_since(&old);
        for hook in &self.wiring.on_catalog {
            hook(self, &catalog, &changed);
        }
    }

    /// Shard 0's discovery lists servers again through `rediscover` from now on.
    pub fn set_rediscover(&self, rediscover: Rediscover) {
        *self.rediscover.borrow_mut() = Some(rediscover);
    }

    /// Asks shard 0 to list `server` again (it said its lists changed).
    pub fn request_rediscovery(&self, server: usize) {
        if self.id == 0 {
            if let Some(rediscover) = self.rediscover.borrow().as_ref() {
                rediscover(server);
            }
        } else {
            self.mesh.tell(0, move |shard: &Rc<Shard>| {
                shard.request_rediscovery(server)
            });
        }
    }
}

/// The name and prefix of every configured server, by index.
pub fn identities(config: &Config) -> Vec<crate::registry::ServerIdentity> {
    config
        .servers
        .iter()
        .map(|s| crate::registry::ServerIdentity {
            name: s.name.clone(),
            prefix: s.prefix.clone(),
        })
        .collect()
}
