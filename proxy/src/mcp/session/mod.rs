//! Downstream sessions: one per client `initialize`, living on the shard that created it.
//!
//! A session holds what relaying a whole conversation needs: its upstream sessions (one per
//! server, created when first needed), its SSE streams, the client requests in flight (to pass
//! on cancellations) and the server-to-client requests awaiting the client's answer.
//!
//! - [`events`]: the session's SSE streams, their event logs and resumption positions.
//! - [`owner`]: who the session belongs to (with `[auth]`), its client's policy, and the
//!   check that a request comes from its owner.
//! - [`token`]: sealed session ids, from which any shard restores the session.
//! - [`ended`]: ids of sessions that ended, so a still-valid sealed id is not restored.
//! - [`local`]: the sessions of one shard.
//! - `calls`: a bridge session's calls in flight, and the requests an upstream sends
//!   outside any call's stream.

mod calls;
pub mod ended;
pub mod events;
pub mod local;
pub mod owner;
pub mod token;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::time::Instant;

use bytes::Bytes;

use crate::mcp::bridge::ShardBridge;
use crate::protocol::jsonrpc::Id;
use crate::shard::Shard;
use crate::upstream::table::ShardUpstreams;
use crate::upstream::{UpstreamHandle, UpstreamSink};
pub use events::{Closed, EventLog, Next, Position, STANDALONE};
pub use local::{Sessions, ShardSessions};

/// The id prefix of bridge sessions (never a sealed id, which starts with two hex digits).
pub const BRIDGE_PREFIX: &str = "bridge-";

/// A server-to-client request relayed to the client, awaiting its answer.
#[derive(Clone, Debug)]
pub struct PendingRequest {
    /// The server that asked.
    pub server: usize,
    /// The id that server used.
    pub upstream_id: Id,
}

/// The tools each server offers this session's client, for a given catalog generation.
#[derive(Debug)]
pub struct ToolView {
    /// The catalog generation the view was taken against.
    pub generation: u64,
    /// By server index: the original names offered, or `None` for "as discovered".
    pub visible: Vec<Option<HashSet<String>>>,
}

impl ToolView {
    /// True when the tool `original` of `server` is offered to this client.
    pub fn shows(&self, server: usize, original: &str) -> bool {
        match self.visible.get(server) {
            Some(Some(names)) => names.contains(original),
            _ => true,
        }
    }
}

/// One downstream MCP session.
pub struct Session {
    /// The `Mcp-Session-Id` issued at initialize.
    pub id: String,
    /// The protocol version agreed with the client.
    pub version: String,
    /// `initialize` params for upstream sessions: the client's capabilities and info.
    init_params: Bytes,
    /// The replica chosen for each server at initialize (sealed into the id).
    bindings: Vec<u8>,
    shard: Weak<Shard>,
    this: Weak<Session>,
    upstreams: RefCell<HashMap<usize, UpstreamHandle>>,
    /// The session's SSE streams.
    pub events: EventLog,
    /// Client request id -> (server, upstream id), while the request is in flight.
    inflight: RefCell<HashMap<Id, (usize, Id)>>,
    /// Proxy id -> the server-to-client request it stands for.
    pending: RefCell<HashMap<Id, PendingRequest>>,
    next_proxy_id: Cell<i64>,
    last_active: Cell<Instant>,
    /// Client requests the client cancelled while they were in flight.
    cancelled: RefCell<HashSet<Id>>,
    closed: Cell<bool>,
    tool_view: RefCell<Option<Rc<ToolView>>>,
    /// The client identity that opened the session, and its policy.
    pub auth: owner::Owner,
    /// Proxy id -> where the client's answer goes when the proxy itself asked (the input
    /// requests of a 2026-07-28 upstream, asked as server-to-client requests).
    waiters: RefCell<HashMap<Id, Rc<Waiter>>>,
    /// A bridge session's calls in flight and their streams (`calls`).
    calls: RefCell<calls::Calls>,
}

/// Receives the client's answers to requests the proxy asked on an upstream's behalf.
pub type Waiter = glommio::channels::local_channel::LocalSender<(Id, Bytes)>;

impl Session {
    /// A new session on `shard`.
    pub fn new(
        shard: &Rc<Shard>,
        id: String,
        version: String,
        init_params: Bytes,
        bindings: Vec<u8>,
    ) -> Rc<Session> {
        Rc::new_cyclic(|this| Session {
            id,
            version,
            init_params,
            bindings,
            shard: Rc::downgrade(shard),
            this: this.clone(),
            upstreams: RefCell::new(HashMap::new()),
            events: EventLog::new(),
            inflight: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            next_proxy_id: Cell::new(1),
            last_active: Cell::new(Instant::now()),
            cancelled: RefCell::new(HashSet::new()),
            closed: Cell::new(false),
            tool_view: RefCell::new(None),
            auth: Default::default(),
            waiters: RefCell::new(HashMap::new()),
            calls: RefCell::default(),
        })
    }

    /// The shard the session lives on.
    pub fn shard(&self) -> Option<Rc<Shard>> {
        self.shard.upgrade()
    }

    /// Marks the session used now (for idle expiry).
    pub fn touch(&self) {
        self.last_active.set(Instant::now());
    }

    /// When the session was last used.
    pub fn last_active(&self) -> Instant {
        self.last_active.get()
    }

    /// The way to `server` for this session, created (not yet connected) on first use.
    pub fn upstream(&self, server: usize) -> Option<UpstreamHandle> {
        if let Some(u) = self.upstreams.borrow().get(&server) {
            return Some(u.clone());
        }
        let shard = self.shard()?;
        let sink: Weak<dyn UpstreamSink> = self.this.clone();
        let preferred = self
            .bindings
            .get(server)
            .filter(|b| **b != token::NO_BINDING)
            .map(|b| usize::from(*b));
        let handle = shard.upstreams().get(server)?.open(
            &shard,
            &self.id,
            self.init_params.clone(),
            Some(sink),
            preferred,
            !self.is_bridge(),
        );
        handle.act_for(self.auth.principal());
        self.upstreams.borrow_mut().insert(server, handle.clone());
        Some(handle)
    }

    /// The upstreams this session has used.
    pub fn open_upstreams(&self) -> Vec<UpstreamHandle> {
        self.upstreams.borrow().values().cloned().collect()
    }

    /// Records a client request in flight upstream, for cancellation.
    pub fn begin_request(&self, client_id: Id, server: usize, upstream_id: Id) {
        if let Some(shard) = self.shard() {
            shard.forwarding_started();
        }
        self.inflight
            .borrow_mut()
            .insert(client_id, (server, upstream_id));
    }

    /// Forgets a finished client request.
    pub fn end_request(&self, client_id: &Id) {
        if let Some(shard) = self.shard() {
            shard.forwarding_ended();
        }
        self.inflight.borrow_mut().remove(client_id);
        self.cancelled.borrow_mut().remove(client_id);
        self.calls.borrow_mut().end(client_id);
    }

    /// Notes that the client cancelled an in-flight request.
    pub fn cancel_request(&self, client_id: &Id) {
        if self.inflight.borrow().contains_key(client_id) {
            self.cancelled.borrow_mut().insert(client_id.clone());
        }
    }

    /// True when nobody waits for an answer to `client_id` any more: the client cancelled it
    /// or ended the session. The spec asks that such requests get no response.
    pub fn abandoned(&self, client_id: &Id) -> bool {
        self.closed.get() || self.cancelled.borrow().contains(client_id)
    }

    /// Where a client request went, if still in flight.
    pub fn inflight(&self, client_id: &Id) -> Option<(usize, Id)> {
        self.inflight.borrow().get(client_id).cloned()
    }

    /// Gives a server-to-client request an id unique in this session.
    pub fn register_pending(&self, server: usize, upstream_id: Id) -> Id {
        let n = self.next_proxy_id.get();
        self.next_proxy_id.set(n + 1);
        let proxy_id = Id::Str(format!("mcp-proxy-{n}"));
        self.pending.borrow_mut().insert(
            proxy_id.clone(),
            PendingRequest {
                server,
                upstream_id,
            },
        );
        proxy_id
    }

    /// Takes the request a client's answer is for.
    pub fn take_pending(&self, proxy_id: &Id) -> Option<PendingRequest> {
        self.pending.borrow_mut().remove(proxy_id)
    }

    /// Gives a request the proxy asks the client an id unique in this session; the answer
    /// goes to `waiter`.
    pub fn register_waiter(&self, waiter: Rc<Waiter>) -> Id {
        let n = self.next_proxy_id.get();
        self.next_proxy_id.set(n + 1);
        let proxy_id = Id::Str(format!("mcp-proxy-{n}"));
        self.waiters.borrow_mut().insert(proxy_id.clone(), waiter);
        proxy_id
    }

    /// Hands the client's answer to the proxy's waiter for `proxy_id`; false when none waits.
    pub fn answer_waiter(&self, proxy_id: &Id, message: Bytes) -> bool {
        let Some(waiter) = self.waiters.borrow_mut().remove(proxy_id) else {
            return false;
        };
        let _ = waiter.try_send((proxy_id.clone(), message));
        true
    }

    /// Forgets waiters that will never be read (their call ended).
    pub fn forget_waiters(&self, ids: &[Id]) {
        let mut waiters = self.waiters.borrow_mut();
        for id in ids {
            waiters.remove(id);
        }
    }

    /// True for the proxy's own sessions serving 2026-07-28 clients (`mcp::bridge`).
    pub fn is_bridge(&self) -> bool {
        self.id.starts_with(BRIDGE_PREFIX)
    }

    /// The answer to bridge call `client_id` is relayed into session stream `out`; requests
    /// the server sent it outside that stream before then are pushed there first.
    pub fn follow_call(&self, client_id: &Id, out: u64) {
        let held = self.calls.borrow_mut().open(client_id, out);
        for message in held {
            self.events.push(out, message);
        }
    }

    /// Hands a server-to-client request that `server` sent outside any call's stream to the
    /// oldest call in flight to it (see `calls`); false when there is none.
    fn hand_to_call(&self, server: usize, message: Bytes) -> bool {
        let oldest = self
            .inflight
            .borrow()
            .iter()
            .filter(|(_, (s, _))| *s == server)
            .map(|(client_id, _)| client_id)
            .min_by_key(|id| calls::arrival(id))
            .cloned();
        let Some(client_id) = oldest else {
            return false;
        };
        let to = self.calls.borrow_mut().hand(&client_id, message.clone());
        if let Some(out) = to {
            self.events.push(out, message);
        }
        true
    }

    /// The proxy id standing for `(server, upstream_id)`, for relaying the server's cancellation.
    pub fn pending_proxy_id(&self, server: usize, upstream_id: &Id) -> Option<Id> {
        self.pending
            .borrow()
            .iter()
            .find(|(_, p)| p.server == server && &p.upstream_id == upstream_id)
            .map(|(k, _)| k.clone())
    }

    /// The tool view taken against catalog `generation`, if there is one.
    pub fn tool_view(&self, generation: u64) -> Option<Rc<ToolView>> {
        self.tool_view
            .borrow()
            .as_ref()
            .filter(|v| v.generation == generation)
            .cloned()
    }

    /// Keeps a freshly taken tool view.
    pub fn set_tool_view(&self, view: ToolView) -> Rc<ToolView> {
        let view = Rc::new(view);
        *self.tool_view.borrow_mut() = Some(view.clone());
        view
    }

    /// Ends the session for `why`: streams close and upstream sessions are deleted.
    pub async fn close(&self, why: Closed) {
        self.closed.set(true);
        self.auth.release();
        self.events.end(why);
        let ups: Vec<_> = self
            .upstreams
            .borrow_mut()
            .drain()
            .map(|(_, u)| u)
            .collect();
        for u in ups {
            u.close().await;
        }
    }
}

impl UpstreamSink for Session {
    fn unsolicited(&self, server: usize, message: Bytes) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        if let Some(out) =
            crate::mcp::routing::relay::from_upstream(&this, server, None, &message).into_message()
        {
            if self.is_bridge() {
                if let Some(proxy_id) = request_id(&out) {
                    if !self.hand_to_call(server, out) {
                        glommio::spawn_local(refuse_stray(this, server, proxy_id)).detach();
                    }
                    return;
                }
            }
            // No client reads a bridge session's own stream: resource updates go to the listen
            // streams subscribed to them.
            let taken = self.is_bridge()
                && self
                    .shard()
                    .is_some_and(|s| s.bridge().unsolicited(&self.id, &out));
            if !taken {
                self.events.push(STANDALONE, out);
            }
        }
    }
}

/// The id of a JSON-RPC request (a message with a method and an id); `None` for anything else.
fn request_id(message: &[u8]) -> Option<Id> {
    use simd_json::prelude::*;
    let mut buf = message.to_vec();
    let parsed = crate::protocol::jsonrpc::parse(&mut buf).ok()?;
    parsed.get_str("method")?;
    parsed.get("id").and_then(Id::from_value)
}

/// Answers a request `server` sent a bridge session while no call to it was in flight: no
/// 2026-07-28 client can be asked outside a call, and the server should not wait for its
/// own timeout to learn that.
async fn refuse_stray(session: Rc<Session>, server: usize, proxy_id: Id) {
    use crate::protocol::jsonrpc::{self, code};
    log::debug!(
        "session {}: server {server} asked outside any call; refused",
        session.id
    );
    let mut body = jsonrpc::error_body(
        Some(&proxy_id),
        code::INTERNAL_ERROR,
        "no call is in flight to ask this of: the proxy serves this session for 2026-07-28 clients, who are asked only within a call",
    )
    .to_vec();
    let Ok(parsed) = jsonrpc::parse(&mut body) else {
        return;
    };
    crate::mcp::routing::forward::client_response(&session, &proxy_id, parsed).await;
}
