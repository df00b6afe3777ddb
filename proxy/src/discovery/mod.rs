//! Discovery: shard 0 lists every upstream server and publishes the merged catalog.
//!
//! One proxy-owned upstream session per server declares the broadest client capabilities, so
//! servers that tailor their lists to the client show everything they have. A server that is
//! down is retried with backoff; a server that announces `list_changed` is listed again.
//!
//! The set of servers follows the live registry ([`Discovery::follow`]): an added server is
//! discovered at once, a removed or replaced one has its session closed and its listing task
//! ended (each task holds an epoch and stops when its server's epoch moves on), and drained
//! servers are published as down so their items leave the catalog.

mod watch;

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use simd_json::prelude::*;

use crate::protocol::jsonrpc::{self, code, Id, Kind};
use crate::protocol::version;
use crate::registry::catalog::{Catalog, ServerListing, ServerStatus};
use crate::registry::servers::{Registry, ServerState};
use crate::shard::Shard;
use crate::upstream::stdio::connection::DISCOVERY;
use crate::upstream::table::ShardUpstreams;
use crate::upstream::{UpstreamError, UpstreamHandle, UpstreamSink};

const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Pages followed per list before giving up on a server that never stops paginating.
const MAX_PAGES: usize = 1000;
/// The shortest pause between listings a list's `ttlMs` asks for: `ttlMs: 0` ("do not cache")
/// would otherwise have shard 0 list the server without pause.
const TTL_FLOOR: Duration = Duration::from_secs(5);

/// Shard 0's discovery, the local this layer keeps on each shard (empty elsewhere).
#[derive(Default)]
pub struct Running(RefCell<Option<Rc<Discovery>>>);

/// Discovery as a shard runs it.
// Shards run on single-threaded executors: these futures never need to be `Send`.
#[allow(async_fn_in_trait)]
pub trait ShardDiscovery {
    /// Starts discovery here (shard 0 only) and waits for its first round, bounded.
    async fn start_discovery(self: &Rc<Self>);

    /// Shard 0's discovery, once started.
    fn discovery(&self) -> Option<Rc<Discovery>>;

    /// Installs a new registry here, lets discovery follow it (which republishes the
    /// catalog without the servers that left), then sends both to every other shard as one
    /// message (called on shard 0, which owns the registry).
    fn publish_registry(self: &Rc<Self>, registry: Arc<Registry>);
}

impl ShardDiscovery for Shard {
    async fn start_discovery(self: &Rc<Self>) {
        let discovery = Discovery::start(self);
        *self.local::<Running>().0.borrow_mut() = Some(discovery.clone());
        let weak = Rc::downgrade(&discovery);
        self.set_rediscover(Box::new(move |server| {
            if let Some(d) = weak.upgrade() {
                d.trigger(server);
            }
        }));
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

    fn discovery(&self) -> Option<Rc<Discovery>> {
        self.local::<Running>().0.borrow().clone()
    }

    fn publish_registry(self: &Rc<Self>, registry: Arc<Registry>) {
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
}

/// Shard 0's discovery of every upstream.
pub struct Discovery {
    shard: Weak<Shard>,
    /// The proxy's own session with each server, by index (`None`: removed).
    sessions: RefCell<Vec<Option<UpstreamHandle>>>,
    /// Last discovery outcome, by index.
    status: RefCell<Vec<ServerStatus>>,
    /// Wakes a server's listing task, by index.
    triggers: RefCell<Vec<Option<LocalSender<()>>>>,
    /// Bumped when a server is removed or replaced, so its old listing task stops.
    epochs: RefCell<Vec<u64>>,
    generation: Cell<u64>,
    /// `initialize` params of discovery sessions.
    params: Bytes,
}

impl Discovery {
    /// Starts discovering every server of the shard's registry.
    pub fn start(shard: &Rc<Shard>) -> Rc<Discovery> {
        let discovery = Rc::new(Discovery {
            shard: Rc::downgrade(shard),
            sessions: RefCell::new(Vec::new()),
            status: RefCell::new(Vec::new()),
            triggers: RefCell::new(Vec::new()),
            epochs: RefCell::new(Vec::new()),
            generation: Cell::new(shard.catalog().generation),
            params: Bytes::from(format!(
                r#"{{"protocolVersion":"{}","capabilities":{{"sampling":{{}},"elicitation":{{}},"roots":{{"listChanged":true}}}},"clientInfo":{{"name":"mcp-proxy-discovery","version":"{}"}}}}"#,
                version::LATEST,
                env!("CARGO_PKG_VERSION")
            )),
        });
        for server in 0..shard.upstreams().len() {
            discovery.start_server(shard, server);
        }
        discovery
    }

    /// (Re)starts discovering `server` with a fresh session; a removed server is marked so.
    fn start_server(self: &Rc<Self>, shard: &Rc<Shard>, server: usize) {
        let n = server + 1;
        if self.status.borrow().len() < n {
            self.status.borrow_mut().resize(n, ServerStatus::Pending);
        }
        if self.sessions.borrow().len() < n {
            self.sessions.borrow_mut().resize(n, None);
            self.triggers.borrow_mut().resize_with(n, || None);
            self.epochs.borrow_mut().resize(n, 0);
        }
        let epoch = {
            let mut epochs = self.epochs.borrow_mut();
            epochs[server] += 1;
            epochs[server]
        };
        let old = self.sessions.borrow_mut()[server].take();
        if let Some(old) = old {
            glommio::spawn_local(async move { old.close().await }).detach();
        }
        // Dropping the old sender wakes the old task, which sees its epoch is over.
        self.triggers.borrow_mut()[server] = None;
        let Some(upstream) = shard.upstreams().get(server) else {
            self.status.borrow_mut()[server] = ServerStatus::Down("removed".into());
            return;
        };
        let sink: Weak<dyn UpstreamSink> = Rc::downgrade(self) as Weak<dyn UpstreamSink>;
        let session = upstream.open(
            shard,
            DISCOVERY,
            self.params.clone(),
            Some(sink),
            None,
            false,
        );
        // Discovery retries on its own while a server is down: that must not keep it out.
        session.in_background();
        self.sessions.borrow_mut()[server] = Some(session.clone());
        self.status.borrow_mut()[server] = ServerStatus::Pending;
        let (tx, rx) = local_channel::new_bounded(1);
        self.triggers.borrow_mut()[server] = Some(tx);
        let d = self.clone();
        glommio::spawn_local(async move { d.run(server, epoch, session, rx).await }).detach();
    }

    /// Follows a registry change (on shard 0, after the shard installed `new`): discovers
    /// added servers at once, restarts changed ones, ends removed ones, and republishes.
    pub fn follow(self: &Rc<Self>, shard: &Rc<Shard>, old: &Registry, new: &Registry) {
        for (i, entry) in new.entries.iter().enumerate() {
            let before = old.entries.get(i);
            let was_live = before.is_some_and(|b| b.state != ServerState::Removed);
            let live = entry.state != ServerState::Removed;
            let changed = before.is_none_or(|b| b.config != entry.config);
            if live != was_live || (live && changed) {
                self.start_server(shard, i);
            }
        }
        self.publish();
    }

    fn current(&self, server: usize, epoch: u64) -> bool {
        self.epochs.borrow().get(server) == Some(&epoch)
    }

    /// Asks for `server` to be listed again.
    pub fn trigger(&self, server: usize) {
        if let Some(Some(tx)) = self.triggers.borrow().get(server) {
            // A full channel already holds a pending trigger; one is enough.
            let _ = tx.try_send(());
        }
    }

    /// Resolves once every server has been tried at least once, or after `limit`.
    pub async fn first_round(&self, limit: Duration) {
        let start = std::time::Instant::now();
        while self
            .status
            .borrow()
            .iter()
            .any(|s| matches!(s, ServerStatus::Pending))
            && start.elapsed() < limit
        {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run(
        self: Rc<Self>,
        server: usize,
        epoch: u64,
        session: UpstreamHandle,
        rx: LocalReceiver<()>,
    ) {
        let mut backoff = RETRY_MIN;
        let mut watching = false;
        let name = session.name().to_owned();
        loop {
            let listed = list_server(&session).await;
            if !self.current(server, epoch) {
                return;
            }
            let wait = match listed {
                Ok((listing, ttl)) => {
                    if session.is_stateless() && !watching {
                        watching = true;
                        let watch = watch::list_changes(
                            Rc::downgrade(&self),
                            server,
                            epoch,
                            session.clone(),
                        );
                        glommio::spawn_local(watch).detach();
                    }
                    let level = if matches!(&self.status.borrow()[server], ServerStatus::Up(l) if *l == listing)
                    {
                        log::Level::Debug
                    } else {
                        log::Level::Info
                    };
                    log::log!(level, server = name.as_str();
                        "discovered {name}: {} tools, {} prompts, {} resources, {} templates",
                        listing.tools.len(),
                        listing.prompts.len(),
                        listing.resources.len(),
                        listing.templates.len()
                    );
                    self.status.borrow_mut()[server] = ServerStatus::Up(listing);
                    crate::metrics::upstream_up(server, true);
                    backoff = RETRY_MIN;
                    // A list that may be kept only so long is listed again when it expires.
                    ttl.map(|t| t.max(TTL_FLOOR))
                }
                Err(e) => {
                    let was_down = matches!(self.status.borrow()[server], ServerStatus::Down(_));
                    if !was_down {
                        log::warn!(server = name.as_str(); "server {name} is unavailable: {e}");
                    }
                    self.status.borrow_mut()[server] = ServerStatus::Down(e.to_string());
                    crate::metrics::upstream_up(server, false);
                    let wait = backoff;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    Some(wait)
                }
            };
            self.publish();
            match wait {
                None => {
                    if rx.recv().await.is_none() {
                        return;
                    }
                }
                Some(wait) => {
                    let _ = glommio::timer::timeout(wait, async { Ok(rx.recv().await) }).await;
                }
            }
            if !self.current(server, epoch) {
                return;
            }
        }
    }

    fn publish(&self) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        let registry = shard.registry();
        // Drained and removed servers are published as down: their items leave the catalog.
        let status: Vec<ServerStatus> = registry
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| match e.state {
                ServerState::Active => self
                    .status
                    .borrow()
                    .get(i)
                    .cloned()
                    .unwrap_or(ServerStatus::Pending),
                ServerState::Draining => ServerStatus::Down("draining".into()),
                ServerState::Removed => ServerStatus::Down("removed".into()),
            })
            .collect();
        let identities = registry.identities();
        // Retries of a server that stays down change nothing: keep the generation (and so
        // clients' cursors and sessions' tool views) as they are.
        let current = shard.catalog();
        if current.status == status && current.servers == identities {
            return;
        }
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        let catalog = Catalog::build(generation, identities, status);
        shard.publish_catalog(Arc::new(catalog));
    }

    fn answer_server_request(&self, server: usize, id: &Id, method: &str) {
        // Discovery has no user to ask: it has no roots and declines sampling and elicitation.
        let answer = if method == "roots/list" {
            jsonrpc::result_body(id, br#"{"roots":[]}"#)
        } else {
            jsonrpc::error_body(
                Some(id),
                code::METHOD_NOT_FOUND,
                "the proxy's discovery session cannot do this",
            )
        };
        let Some(session) = self.sessions.borrow().get(server).cloned().flatten() else {
            return;
        };
        glommio::spawn_local(async move {
            let _ = session.post(&answer).await;
        })
        .detach();
    }
}

impl UpstreamSink for Discovery {
    fn unsolicited(&self, server: usize, message: Bytes) {
        let mut buf = message.to_vec();
        let Ok(msg) = jsonrpc::parse(&mut buf) else {
            return;
        };
        match jsonrpc::classify(&msg) {
            Ok(Kind::Notification { method }) if method.ends_with("/list_changed") => {
                self.trigger(server)
            }
            Ok(Kind::Request { id, method }) => self.answer_server_request(server, &id, method),
            _ => {}
        }
    }
}

/// Initializes (if needed) and lists everything `session`'s server declares; with the
/// shortest `ttlMs` its lists gave, if any.
async fn list_server(
    session: &UpstreamHandle,
) -> Result<(ServerListing, Option<Duration>), UpstreamError> {
    let init_result = session.init_result().await?;
    let mut buf = init_result.to_vec();
    let caps: Vec<&str> = match simd_json::to_borrowed_value(&mut buf) {
        Ok(v) => ["tools", "prompts", "resources"]
            .into_iter()
            .filter(|c| {
                v.get("capabilities")
                    .and_then(|caps| caps.get(*c))
                    .is_some()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut listing = ServerListing {
        init_result: init_result.clone(),
        ..ServerListing::default()
    };
    let mut ttl = None;
    if caps.contains(&"tools") {
        listing.tools = list_pages(session, "tools/list", "tools", &mut ttl).await?;
    }
    if caps.contains(&"prompts") {
        listing.prompts = list_pages(session, "prompts/list", "prompts", &mut ttl).await?;
    }
    if caps.contains(&"resources") {
        listing.resources = list_pages(session, "resources/list", "resources", &mut ttl).await?;
        listing.templates = list_pages(
            session,
            "resources/templates/list",
            "resourceTemplates",
            &mut ttl,
        )
        .await?;
    }
    Ok((listing, ttl.map(Duration::from_millis)))
}

/// Follows a list's pagination to the end.
pub async fn list_all(
    session: &UpstreamHandle,
    method: &str,
    key: &str,
) -> Result<Vec<Bytes>, UpstreamError> {
    list_pages(session, method, key, &mut None).await
}

/// Follows a list's pagination to the end, lowering `ttl_ms` to any page's `ttlMs`.
async fn list_pages(
    session: &UpstreamHandle,
    method: &str,
    key: &str,
    ttl_ms: &mut Option<u64>,
) -> Result<Vec<Bytes>, UpstreamError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(c) => {
                let mut p = b"{\"cursor\":".to_vec();
                jsonrpc::write_json_string(&mut p, c);
                p.push(b'}');
                p
            }
            None => b"{}".to_vec(),
        };
        let answer = match session.request(method, &params).await {
            Ok(answer) => answer,
            // A 2026-07-28 server answers a list it does not serve with 404 and -32601.
            Err(UpstreamError::Refused { code, .. })
                if code == i64::from(code::METHOD_NOT_FOUND) =>
            {
                return Ok(items)
            }
            Err(e) => return Err(e),
        };
        let mut buf = answer.to_vec();
        let protocol = |detail: String| UpstreamError::Protocol {
            server: session.name().to_owned(),
            detail,
        };
        let msg = jsonrpc::parse(&mut buf).map_err(|e| protocol(e.to_string()))?;
        if let Some(err) = msg.get("error") {
            // A server may declare a capability and still not implement one of its lists.
            if err.get_i64("code") == Some(i64::from(code::METHOD_NOT_FOUND)) {
                return Ok(items);
            }
            return Err(protocol(format!("{method} failed: {}", err.encode())));
        }
        let result = msg
            .get("result")
            .ok_or_else(|| protocol(format!("{method} answer has no result")))?;
        if let Some(ttl) = result.get_u64("ttlMs") {
            *ttl_ms = Some(ttl_ms.map_or(ttl, |t| t.min(ttl)));
        }
        if let Some(list) = result.get(key).and_then(|l| l.as_array()) {
            items.extend(
                list.iter()
                    .map(|item| Bytes::from(item.encode().into_bytes())),
            );
        }
        cursor = result
            .get_str("nextCursor")
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        if cursor.is_none() {
            return Ok(items);
        }
    }
    Err(UpstreamError::Protocol {
        server: session.name().to_owned(),
        detail: format!("{method} did not end after {MAX_PAGES} pages"),
    })
}
