//! What one core owns, and how cores talk.
//!
//! A shard owns its listener's connections, its sessions, its upstream pools and its copy of
//! the catalog. Nothing here is shared between threads except immutable `Arc` snapshots
//! (config, catalog) and the messages of the glommio channel mesh ([`mesh`]).
//!
//! A session lives on the shard that created it; its id names that shard. A request for it
//! that lands elsewhere (clients pool connections, and the kernel spreads connections over
//! shards) is forwarded whole to the owner, and the owner's reply, streamed or not, comes back
//! over the mesh.
//!
//! - [`drain`]: whether this shard is stopping (connections close when idle, nothing is
//!   spawned once its executor ends).
//! - [`mesh`]: the channels between shards.

pub mod drain;
pub mod mesh;

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::config::Transport;
use crate::discovery::Discovery;
use crate::mcp::session::ended::EndedIds;
use crate::mcp::session::token::{Claims, SessionKey};
use crate::mcp::session::{Session, STANDALONE};
use crate::protocol::cursor::ListKind;
use crate::protocol::jsonrpc;
use crate::registry::servers::{Registry, State};
use crate::registry::Catalog;
use crate::upstream::stdio::connection::StdioLink;
pub use crate::upstream::Upstreams;
use crate::upstream::{Upstream, UpstreamClient, STDIO_SHARD};
pub use mesh::Mesh;

/// One core's state.
pub struct Shard {
    /// This shard's index (0-based).
    pub id: usize,
    /// How many shards run.
    pub nr_shards: usize,
    /// The configuration this shard was started with.
    pub config: Arc<Config>,
    /// Every server of the live registry as this shard reaches it, by server index.
    pub upstreams: Upstreams,
    /// The live registry as this shard last heard it (shard 0's is the authority).
    registry: RefCell<Arc<Registry>>,
    catalog: RefCell<Arc<Catalog>>,
    sessions: RefCell<HashMap<String, Rc<Session>>>,
    /// Channels to the other shards.
    pub mesh: Mesh,
    discovery: RefCell<Option<Rc<Discovery>>>,
    /// Requests being handled, so shutdown can let them finish.
    inflight: Rc<std::cell::Cell<usize>>,
    /// Seals and opens session ids.
    session_key: SessionKey,
    /// Ids of sessions ended here (DELETE, idle expiry), so a still-valid sealed id is not
    /// restored.
    ended: RefCell<EndedIds>,
    /// Workflow runs, saved workflows and the tool search index of this shard.
    pub orchestration: crate::orchestration::State,
    /// Bridge sessions and pending input rounds of stateless-era clients.
    pub bridge: crate::mcp::bridge::State,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts a request as in flight until dropped.
pub struct Busy(Rc<std::cell::Cell<usize>>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl Shard {
    /// A shard with no sessions and an empty catalog.
    pub fn new(id: usize, nr_shards: usize, config: Arc<Config>, mesh: Mesh) -> Rc<Shard> {
        let status = vec![crate::registry::ServerStatus::Pending; config.servers.len()];
        let catalog = Catalog::build(0, identities(&config), status);
        // The runtime always sets a key (a random one when none is configured).
        let session_key = config
            .proxy
            .session_key
            .as_deref()
            .and_then(|k| SessionKey::from_hex(k).ok())
            .unwrap_or_else(SessionKey::random);
        let orchestration = crate::orchestration::State::new(&config);
        let registry = Registry::from_config(&config);
        let ended = RefCell::new(EndedIds::new(config.proxy.session_max_age));
        Rc::new_cyclic(|this| {
            let upstreams = Upstreams::default();
            for (i, s) in config.servers.iter().enumerate() {
                upstreams.set(i, Some(make_upstream(this, id, i, s)));
            }
            Shard {
                id,
                nr_shards,
                config,
                upstreams,
                registry: RefCell::new(Arc::new(registry)),
                catalog: RefCell::new(Arc::new(catalog)),
                sessions: RefCell::new(HashMap::new()),
                mesh,
                discovery: RefCell::new(None),
                inflight: Rc::default(),
                session_key,
                ended,
                orchestration,
                bridge: Default::default(),
            }
        })
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

    /// Ends every session of this shard (upstream sessions are deleted, streams closed).
    pub async fn end_all_sessions(&self) {
        let ids: Vec<String> = self.sessions.borrow().keys().cloned().collect();
        for id in ids {
            self.end_session(&id, crate::mcp::session::Closed::Shutdown)
                .await;
        }
        self.bridge.close().await;
    }

    /// The link of child `replica` of stdio server `server`, on the shard that owns it.
    pub fn stdio_link(&self, server: usize, replica: usize) -> Option<Rc<StdioLink>> {
        match self.upstreams.get(server)?.as_ref() {
            Upstream::Stdio { links, .. } => links.get(replica).cloned(),
            Upstream::Http(_) => None,
        }
    }

    /// Stops every stdio child this shard owns (SIGTERM, then SIGKILL after `grace`).
    pub async fn stop_children(&self, grace: Duration) {
        for server in 0..self.upstreams.len() {
            let links = match self.upstreams.get(server).as_deref() {
                Some(Upstream::Stdio { links, .. }) => links.clone(),
                _ => Vec::new(),
            };
            for link in links {
                link.stop(grace).await;
            }
        }
    }

    /// Starts discovery here (shard 0 only) and waits for its first round, bounded.
    pub async fn start_discovery(self: &Rc<Self>) {
        let discovery = Discovery::start(self);
        *self.discovery.borrow_mut() = Some(discovery.clone());
        let limit = self
            .registry()
            .live()
            .map(|(_, e)| e.config.connect_timeout + e.config.timeout)
            .max()
            .unwrap_or_default();
        discovery
            .first_round(limit.min(Duration::from_secs(15)))
            .await;
    }

    /// Shard 0's discovery, once started.
    pub fn discovery(&self) -> Option<Rc<Discovery>> {
        self.discovery.borrow().clone()
    }

    /// The live registry as this shard knows it.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.borrow().clone()
    }

    /// Installs a new registry here, lets discovery follow it (which republishes the
    /// catalog without the servers that left), then sends both to every other shard as one
    /// message (called on shard 0, which owns the registry).
    pub fn publish_registry(self: &Rc<Self>, registry: Arc<Registry>) {
        let old = self.install_registry(registry.clone());
        let catalog_before = self.catalog().generation;
        if let Some(d) = self.discovery() {
            d.follow(self, &old, &registry);
        }
        // A catalog republished by `follow` has already gone out with this registry.
        if self.catalog().generation == catalog_before {
            self.broadcast_snapshot();
        }
    }

    /// Sends this shard's registry and catalog to every other shard together: a shard never
    /// sees a catalog naming a server its registry does not have, or the other way round.
    fn broadcast_snapshot(&self) {
        let (registry, catalog) = (self.registry(), self.catalog());
        for peer in (0..self.nr_shards).filter(|p| *p != self.id) {
            self.mesh
                .send_snapshot(peer, registry.clone(), catalog.clone());
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

    /// Brings this shard's upstreams in line with `registry` and returns the one it replaces:
    /// new indices get an upstream, removed ones lose theirs (in-flight requests keep the `Rc`
    /// they hold), changed descriptions get a fresh one.
    pub fn install_registry(self: &Rc<Self>, registry: Arc<Registry>) -> Arc<Registry> {
        let old = std::mem::replace(&mut *self.registry.borrow_mut(), registry.clone());
        let this = Rc::downgrade(self);
        for (i, entry) in registry.entries.iter().enumerate() {
            let before = old.entries.get(i);
            let was_live = before.is_some_and(|b| b.state != State::Removed);
            let live = entry.state != State::Removed;
            let changed = before.is_none_or(|b| b.config != entry.config);
            if before.is_none() {
                crate::metrics::add_server(i, &entry.config);
            }
            // A change of strategy or weights only is taken in place: sessions, pools and
            // balancer statistics carry on.
            let retuned = live
                && was_live
                && changed
                && self
                    .upstreams
                    .get(i)
                    .is_some_and(|u| u.retune(&entry.config));
            let fresh = live && (!was_live || (changed && !retuned));
            let replaced = if fresh {
                self.upstreams
                    .set(i, Some(make_upstream(&this, self.id, i, &entry.config)))
            } else if !live && was_live {
                self.upstreams.set(i, None)
            } else {
                None
            };
            if fresh {
                self.upstreams.watch_health(self, i);
            }
            if live {
                self.upstreams.apply_replica_drain(i, entry);
            }
            if let Some(Upstream::Stdio { links, .. }) = replaced.as_deref() {
                // Calls in flight on the old children get until the grace period ends.
                for link in links.clone() {
                    glommio::spawn_local(async move {
                        link.stop(crate::runtime::CHILD_GRACE).await;
                    })
                    .detach();
                }
            }
        }
        old
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.borrow().clone()
    }

    /// Installs a new catalog here and on every other shard, with the registry it was built
    /// from (called on shard 0).
    pub fn publish_catalog(self: &Rc<Self>, catalog: Arc<Catalog>) {
        self.install_catalog(catalog);
        self.broadcast_snapshot();
    }

    /// Installs a catalog and tells this shard's sessions which lists changed.
    pub fn install_catalog(&self, catalog: Arc<Catalog>) {
        let old = std::mem::replace(&mut *self.catalog.borrow_mut(), catalog.clone());
        self.upstreams.apply_param_headers(&catalog);
        let changed = catalog.changed_since(&old);
        if changed.is_empty() {
            return;
        }
        self.bridge.lists_changed(&changed);
        let notices: Vec<_> = changed
            .iter()
            .map(|kind| {
                let method = match kind {
                    ListKind::Tools => "notifications/tools/list_changed",
                    ListKind::Prompts => "notifications/prompts/list_changed",
                    ListKind::Resources | ListKind::ResourceTemplates => {
                        "notifications/resources/list_changed"
                    }
                };
                jsonrpc::notification_body(method, None)
            })
            .collect();
        for session in self.sessions.borrow().values() {
            for n in &notices {
                session.events.push(STANDALONE, n.clone());
            }
        }
    }

    /// Asks shard 0 to list `server` again (it said its lists changed).
    pub fn request_rediscovery(&self, server: usize) {
        if self.id == 0 {
            if let Some(d) = self.discovery.borrow().as_ref() {
                d.trigger(server);
            }
        } else {
            self.mesh.send_rediscover(0, server);
        }
    }

    /// A fresh sealed session id naming this shard and carrying what restores the session.
    pub fn new_session_id(
        &self,
        version: &str,
        init_params: &Bytes,
        bindings: &[u8],
        principal: &[u8],
    ) -> String {
        self.session_key.seal(&Claims {
            shard: self.id as u8,
            issued_at: unix_now(),
            version: version.to_owned(),
            init_params: init_params.clone(),
            bindings: bindings.to_vec(),
            principal: principal.to_vec(),
        })
    }

    /// The shard that owns `session_id`: the one named in it, modulo the shards running now
    /// (a proxy restarted with fewer shards still serves every session).
    pub fn owner_of(&self, session_id: &str) -> Option<usize> {
        let shard = usize::from_str_radix(session_id.get(..2)?, 16).ok()?;
        Some(shard % self.nr_shards)
    }

    /// A session of this shard, restored from its sealed id if this process does not have it
    /// (the proxy restarted, or another instance created it). Ended sessions stay ended.
    pub fn find_session(self: &Rc<Self>, id: &str) -> Option<Rc<Session>> {
        if let Some(s) = self.session(id) {
            return Some(s);
        }
        if self.ended.borrow().contains(id) {
            return None;
        }
        let claims = self.session_key.open(id)?;
        let age = unix_now().saturating_sub(claims.issued_at);
        if age > self.config.proxy.session_max_age.as_secs() {
            return None;
        }
        let session = Session::new(
            self,
            id.to_owned(),
            claims.version,
            claims.init_params,
            claims.bindings,
        );
        session.auth.restore(&claims.principal);
        self.add_session(session.clone());
        log::info!("session restored from its id on shard {}", self.id);
        Some(session)
    }

    /// A session of this shard.
    pub fn session(&self, id: &str) -> Option<Rc<Session>> {
        self.sessions.borrow().get(id).cloned()
    }

    /// Registers a new session.
    pub fn add_session(&self, session: Rc<Session>) {
        self.sessions
            .borrow_mut()
            .insert(session.id.clone(), session);
        crate::metrics::sessions(self.session_count());
    }

    /// Removes a session and ends it for `why`; its id is not restored again.
    pub async fn end_session(&self, id: &str, why: crate::mcp::session::Closed) -> bool {
        let removed = self.sessions.borrow_mut().remove(id);
        if removed.is_some() {
            self.ended.borrow_mut().insert(id, unix_now());
        }
        crate::metrics::sessions(self.session_count());
        match removed {
            Some(s) => {
                s.close(why).await;
                true
            }
            None => false,
        }
    }

    /// Number of sessions on this shard.
    pub fn session_count(&self) -> usize {
        self.sessions.borrow().len()
    }

    /// Ends sessions unused for longer than the configured idle timeout, forever.
    pub async fn expire_sessions(self: Rc<Self>) {
        let idle = self.config.proxy.session_idle_timeout;
        let period = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            glommio::timer::sleep(period).await;
            let expired: Vec<String> = self
                .sessions
                .borrow()
                .values()
                .filter(|s| s.last_active().elapsed() > idle)
                .map(|s| s.id.clone())
                .collect();
            for id in expired {
                log::debug!("session {id} expired");
                self.end_session(&id, crate::mcp::session::Closed::SessionEnded)
                    .await;
            }
        }
    }
}

/// A shard's way to server `index`: its own HTTP pool, or the stdio child (started on
/// [`STDIO_SHARD`] only).
fn make_upstream(
    this: &std::rc::Weak<Shard>,
    id: usize,
    index: usize,
    s: &crate::config::ServerConfig,
) -> Upstream {
    match &s.transport {
        Transport::Http { replicas, .. } => {
            Upstream::Http(UpstreamClient::new(index, s.clone(), replicas))
        }
        Transport::Stdio(command) => Upstream::Stdio {
            index,
            config: Box::new(s.clone()),
            // Children live on one shard: a stdio child holds one session, and a stateful
            // server (memory) must see every call of the sessions bound to it.
            links: if id == STDIO_SHARD {
                (0..command.replicas.max(1))
                    .map(|_| StdioLink::start(this.clone(), index, s, command))
                    .collect()
            } else {
                Vec::new()
            },
            replicas: command.replicas.max(1),
            next: std::cell::Cell::new(0),
        },
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
