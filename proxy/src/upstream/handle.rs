//! One upstream as seen from one session, whatever carries it.
//!
//! An HTTP upstream gets its own upstream MCP session per downstream session. A stdio upstream
//! is one child process with one MCP session that every downstream session shares: its link
//! lives on shard 0, and a session elsewhere reaches it over the mesh.

use std::cell::Cell;
use std::rc::{Rc, Weak};

use bytes::Bytes;

use super::client::{MessageStream, PostReply, ReplyBody, UpstreamClient, UpstreamError};
use super::session::{await_answer, UpstreamSession, UpstreamSink};
use crate::balance::Children;
use crate::config::ServerConfig;
use crate::protocol::jsonrpc::{self, Id};
use crate::shard::mesh::{Mesh, Sender};
use crate::shard::Shard;
use crate::upstream::stdio::connection::{LinkReply, StdioLink};
use crate::upstream::table::ShardUpstreams;

/// The shard every stdio link lives on.
pub const STDIO_SHARD: usize = 0;

/// One configured upstream server on one shard.
// One per server per shard, made once: its size does not matter, so the config is not boxed.
#[allow(clippy::large_enum_variant)]
pub enum Upstream {
    /// Reached over Streamable HTTP through this shard's pool.
    Http(Rc<UpstreamClient>),
    /// A child process; `link` is present on the shard that owns it.
    Stdio {
        /// Index of the server.
        index: usize,
        /// Its configuration.
        config: Box<ServerConfig>,
        /// The links of its children (`replicas = N`), on [`STDIO_SHARD`] only.
        links: Vec<Rc<StdioLink>>,
        /// Its children (`replicas = N`) as this shard binds sessions to them.
        children: Children,
    },
}

impl Upstream {
    /// Stdio server `index` with `replicas` children, whose `links` this shard holds (none
    /// but on [`STDIO_SHARD`]).
    pub fn stdio(
        index: usize,
        config: &ServerConfig,
        links: Vec<Rc<StdioLink>>,
        replicas: usize,
    ) -> Upstream {
        Upstream::Stdio {
            index,
            config: Box::new(config.clone()),
            links,
            children: Children::new(replicas),
        }
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        match self {
            Upstream::Http(c) => &c.config,
            Upstream::Stdio { config, .. } => config,
        }
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.config().name
    }

    /// Takes a new configuration in place when only strategy or weights changed; false when
    /// the server must be replaced instead.
    pub fn retune(&self, next: &ServerConfig) -> bool {
        match self {
            Upstream::Http(c) => c.retune(next),
            Upstream::Stdio { .. } => false,
        }
    }

    /// The replica a new session of this server should be bound to (`None` for a server with
    /// one child and for stateless servers, or when no replica is available).
    pub fn pick_binding(&self) -> Option<usize> {
        match self {
            Upstream::Http(client) if !client.config.balance.stateless => client.balancer.bind(),
            Upstream::Http(_) => None,
            Upstream::Stdio { children, .. } => children.bind(),
        }
    }

    /// A handle for one downstream session (`session_key`), not yet connected;
    /// `stateful_client` when that session's client speaks the stateful era.
    pub fn open(
        &self,
        shard: &Rc<Shard>,
        session_key: &str,
        init_params: Bytes,
        sink: Option<Weak<dyn UpstreamSink>>,
        preferred_replica: Option<usize>,
        stateful_client: bool,
    ) -> UpstreamHandle {
        match self {
            Upstream::Http(client) => {
                let session = UpstreamSession::new(client.clone(), init_params, sink);
                session.prefer(preferred_replica);
                if stateful_client {
                    session.for_stateful_client();
                }
                UpstreamHandle::Http(session)
            }
            Upstream::Stdio {
                index,
                config,
                children,
                ..
            } => UpstreamHandle::Stdio(Rc::new(StdioHandle {
                server: *index,
                // A session bound at initialize keeps its child across restarts of the proxy.
                replica: children.serving(preferred_replica),
                name: config.name.clone(),
                timeout: config.timeout,
                session_key: session_key.to_owned(),
                shard: Rc::downgrade(shard),
                next_id: Cell::new(1),
            })),
        }
    }
}

/// A session's way to one upstream.
#[derive(Clone)]
pub enum UpstreamHandle {
    /// Its own upstream MCP session over HTTP.
    Http(Rc<UpstreamSession>),
    /// Its share of a stdio child.
    Stdio(Rc<StdioHandle>),
}

impl UpstreamHandle {
    /// The server's name.
    pub fn name(&self) -> &str {
        match self {
            UpstreamHandle::Http(s) => s.client().name(),
            UpstreamHandle::Stdio(h) => &h.name,
        }
    }

    /// A fresh id for a request sent through this handle.
    pub fn next_id(&self) -> Id {
        match self {
            UpstreamHandle::Http(s) => s.next_id(),
            UpstreamHandle::Stdio(h) => {
                let n = h.next_id.get();
                h.next_id.set(n + 1);
                Id::Num(n)
            }
        }
    }

    /// Marks the handle as the proxy's own with no client waiting (discovery's): its failed
    /// exchanges do not count against a replica's circuit (`balance::Traffic::Background`).
    pub fn in_background(&self) {
        if let UpstreamHandle::Http(s) = self {
            s.in_background();
        }
    }

    /// True when the upstream is used in the stateless era (2026-07-28).
    pub fn is_stateless(&self) -> bool {
        match self {
            UpstreamHandle::Http(s) => s.is_stateless(),
            UpstreamHandle::Stdio(_) => false,
        }
    }

    /// Makes the requests of this handle ones made for the client `principal` (whose token a
    /// server configured for token exchange gets, exchanged).
    pub fn act_for(&self, principal: Option<[u8; 32]>) {
        if let UpstreamHandle::Http(s) = self {
            s.act_for(principal);
        }
    }

    /// True when messages can be passed on without opening anything new.
    pub fn is_open(&self) -> bool {
        match self {
            UpstreamHandle::Http(s) => s.current().is_some(),
            UpstreamHandle::Stdio(_) => true,
        }
    }

    /// Sends one message (its ids already chosen through this handle).
    pub async fn post(&self, body: &[u8]) -> Result<PostReply, UpstreamError> {
        match self {
            UpstreamHandle::Http(s) => s.post(body).await,
            UpstreamHandle::Stdio(h) => h.post(Bytes::copy_from_slice(body)).await,
        }
    }

    /// Sends one message, which may be sent again on another replica if the first one fails
    /// and `retry_safe` says repeating it does no harm.
    pub async fn send(&self, body: &[u8], retry_safe: bool) -> Result<PostReply, UpstreamError> {
        match self {
            UpstreamHandle::Http(s) => s.send(body, retry_safe).await,
            UpstreamHandle::Stdio(h) => h.post(Bytes::copy_from_slice(body)).await,
        }
    }

    /// [`send`](Self::send), kept on the replica in `pin` (see `UpstreamSession::send_pinned`).
    pub async fn send_pinned(
        &self,
        body: &[u8],
        retry_safe: bool,
        pin: &Cell<Option<usize>>,
    ) -> Result<PostReply, UpstreamError> {
        match self {
            UpstreamHandle::Http(s) => s.send_pinned(body, retry_safe, pin).await,
            UpstreamHandle::Stdio(h) => h.post(Bytes::copy_from_slice(body)).await,
        }
    }

    /// Sends a request of the proxy's own and returns the whole response message.
    pub async fn request(&self, method: &str, params_json: &[u8]) -> Result<Bytes, UpstreamError> {
        match self {
            UpstreamHandle::Http(s) => s.request(method, params_json).await,
            UpstreamHandle::Stdio(h) => {
                let id = self.next_id();
                let body = jsonrpc::request_body(&id, method, params_json);
                let reply = h.post(body).await?;
                await_answer(&h.name, reply, &id, |_| {}).await
            }
        }
    }

    /// Sends `body`, a request whose id `id` came from [`Self::next_id`], and returns the whole
    /// response message; the caller keeps the id to cancel the request upstream if it must.
    pub async fn request_as(&self, id: &Id, body: &[u8]) -> Result<Bytes, UpstreamError> {
        match self {
            UpstreamHandle::Http(s) => s.request_as(id, body).await,
            UpstreamHandle::Stdio(h) => {
                let reply = h.post(Bytes::copy_from_slice(body)).await?;
                await_answer(&h.name, reply, id, |_| {}).await
            }
        }
    }

    /// The `result` of the server's initialize answer, initializing first when needed.
    pub async fn init_result(&self) -> Result<Bytes, UpstreamError> {
        match self {
            UpstreamHandle::Http(s) => Ok(s.established().await?.init_result.clone()),
            UpstreamHandle::Stdio(h) => {
                let link = h.local_link().ok_or_else(|| UpstreamError::Protocol {
                    server: h.name.clone(),
                    detail: "stdio servers are listed on shard 0 only".into(),
                })?;
                link.init_result().await
            }
        }
    }

    /// The server accepted `resources/subscribe` for `uri` (its own URI): a re-opened
    /// upstream session subscribes to it again. A stdio link keeps and renews its own.
    pub fn subscribed(&self, uri: &str) {
        if let UpstreamHandle::Http(s) = self {
            s.subscribed(uri);
        }
    }

    /// The client let go of `uri`: no re-opened upstream session subscribes to it again.
    pub fn unsubscribed(&self, uri: &str) {
        if let UpstreamHandle::Http(s) = self {
            s.unsubscribed(uri);
        }
    }

    /// Ends this session's use of the upstream.
    pub async fn close(&self) {
        match self {
            UpstreamHandle::Http(s) => s.close().await,
            UpstreamHandle::Stdio(h) => h.detach().await,
        }
    }
}

/// A session's share of a stdio child.
pub struct StdioHandle {
    server: usize,
    /// The child this session is bound to.
    replica: usize,
    name: String,
    session_key: String,
    shard: Weak<Shard>,
    next_id: Cell<i64>,
    /// The server's timeout: the deadline of each answer (see `deadline`).
    timeout: std::time::Duration,
}

impl StdioHandle {
    fn local_link(&self) -> Option<Rc<StdioLink>> {
        let shard = self.shard.upgrade()?;
        match shard.upstreams().get(self.server)?.as_ref() {
            Upstream::Stdio { links, .. } => links.get(self.replica).cloned(),
            Upstream::Http(_) => None,
        }
    }

    fn gone(&self) -> UpstreamError {
        UpstreamError::Protocol {
            server: self.name.clone(),
            detail: "the proxy is shutting down".into(),
        }
    }

    async fn post(&self, body: Bytes) -> Result<PostReply, UpstreamError> {
        // The child's answer is bounded like an HTTP server's: its timeout, moved by progress.
        let deadline = super::deadline::AnswerDeadline::start(self.timeout);
        if let Some(link) = self.local_link() {
            return Ok(match link.post(&self.session_key, body).await? {
                LinkReply::Accepted => PostReply {
                    session_id: None,
                    body: ReplyBody::Accepted,
                },
                LinkReply::Stream(rx) => PostReply {
                    session_id: None,
                    body: ReplyBody::Stream(Box::new(
                        MessageStream::local(rx).within(deadline, &self.name),
                    )),
                },
            });
        }
        let shard = self.shard.upgrade().ok_or_else(|| self.gone())?;
        let (server, session) = ((self.server, self.replica), self.session_key.clone());
        let work = move |owner: Rc<Shard>, parts: Sender<StdioPart>| async move {
            serve_post(&owner, server, &session, body, parts).await;
        };
        let mut parts = Mesh::stream(&shard, STDIO_SHARD, work)
            .await
            .ok_or_else(|| self.gone())?;
        match parts.next().await {
            Some(StdioPart::Accepted) => Ok(PostReply {
                session_id: None,
                body: ReplyBody::Accepted,
            }),
            Some(StdioPart::Streaming) => Ok(PostReply {
                session_id: None,
                body: ReplyBody::Stream(Box::new(
                    MessageStream::remote(parts).within(deadline, &self.name),
                )),
            }),
            Some(StdioPart::Failed(detail)) => Err(UpstreamError::Protocol {
                server: self.name.clone(),
                detail,
            }),
            _ => Err(self.gone()),
        }
    }

    async fn detach(&self) {
        if let Some(link) = self.local_link() {
            link.detach(&self.session_key).await;
        } else if let Some(shard) = self.shard.upgrade() {
            let ((server, replica), session) =
                ((self.server, self.replica), self.session_key.clone());
            shard.mesh.tell(STDIO_SHARD, move |owner: &Rc<Shard>| {
                if let Some(link) = owner.stdio_link(server, replica) {
                    glommio::spawn_local(async move { link.detach(&session).await }).detach();
                }
            });
        }
    }
}

/// What the shard owning a stdio child sends back for a message posted from another shard.
pub enum StdioPart {
    /// The child took a notification or response.
    Accepted,
    /// The messages answering the request follow, ending with its response.
    Streaming,
    /// One of those messages.
    Message(Bytes),
    /// The child could not take it (it is not running here, or it failed).
    Failed(String),
}

/// Posts `body` from `session` to child `server` (its index and replica) on the shard that
/// owns it, and sends back what comes of it.
async fn serve_post(
    owner: &Shard,
    server: (usize, usize),
    session: &str,
    body: Bytes,
    parts: Sender<StdioPart>,
) {
    let outcome = match owner.stdio_link(server.0, server.1) {
        Some(link) => link.post(session, body).await,
        None => {
            let detail = "no stdio link on this shard".to_owned();
            parts.send(StdioPart::Failed(detail)).await;
            return;
        }
    };
    match outcome {
        Ok(LinkReply::Accepted) => {
            parts.send(StdioPart::Accepted).await;
        }
        Ok(LinkReply::Stream(rx)) => {
            if !parts.send(StdioPart::Streaming).await {
                return;
            }
            while let Some(message) = rx.recv().await {
                if !parts.send(StdioPart::Message(message)).await {
                    return;
                }
            }
        }
        Err(e) => {
            parts.send(StdioPart::Failed(e.to_string())).await;
        }
    }
}
