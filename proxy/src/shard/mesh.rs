//! Messages between shards over glommio's channel mesh.
//!
//! Requests for a session owned by another shard travel as [`Msg::Forward`]; the owner's reply
//! comes back as a series of [`Msg::Reply`] parts (head, data, end) tagged with the requester's
//! token, so a streamed reply (SSE) flows back as it is produced (with why it ended, when that
//! is not the default, so the requester counts the stream's end as the owner saw it). Receive loops never block:
//! they hand each message to a local channel or a new task.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::task::JoinHandle;

use super::Shard;
use crate::admin::replicas::ReplicaReport;
use crate::endpoint::http::{McpRequest, Reply};
use crate::mcp::session::Closed;
use crate::orchestration::fleet::{self, Ask, Tell};
use crate::registry::servers::Registry;
use crate::registry::Catalog;
use crate::upstream::stdio::connection::LinkReply;

/// Capacity of each shard-to-shard channel.
pub const CHANNEL_SIZE: usize = 1024;

/// One message between shards.
pub enum Msg {
    /// Serve this request for a session you own; answer with `Reply` parts under `token`.
    Forward {
        /// The requesting shard.
        from: usize,
        /// The requester's tag for the reply.
        token: u64,
        /// The request, boxed: it is the largest message by far, and every other one would
        /// otherwise be sized like it in the channel.
        request: Box<McpRequest>,
    },
    /// The requester's client went away: stop producing the reply for `token`.
    Abandon {
        /// The requesting shard.
        from: usize,
        /// The reply to stop.
        token: u64,
    },
    /// A part of the reply for `token`.
    Reply {
        /// The requester's tag.
        token: u64,
        /// The part.
        part: ReplyPart,
    },
    /// Pass this message from `session` to stdio server `server` (whose link you own).
    StdioPost {
        /// The requesting shard.
        from: usize,
        /// The requester's tag for the reply.
        token: u64,
        /// The stdio server's index and the child (replica) bound to the session.
        server: (usize, usize),
        /// The downstream session sending it.
        session: String,
        /// The JSON-RPC message.
        body: Bytes,
    },
    /// `session` ended: drop what stdio server `server` keeps for it.
    StdioDetach {
        /// The stdio server's index and child.
        server: (usize, usize),
        /// The session.
        session: String,
    },
    /// A message a stdio child sent unasked, for `session` (which you own).
    Unsolicited {
        /// The session.
        session: String,
        /// The server that sent it.
        server: usize,
        /// The JSON-RPC message.
        message: Bytes,
    },
    /// Shard 0: list this server again.
    Rediscover(usize),
    /// Report your statistics of server `server`'s replicas (admin API, from shard 0).
    ReplicaQuery {
        /// The asking shard.
        from: usize,
        /// Its tag for the report.
        token: u64,
        /// The server's index.
        server: usize,
    },
    /// The answer to a `ReplicaQuery`.
    ReplicaReport {
        /// The asker's tag.
        token: u64,
        /// One entry per replica; empty when the server is not an HTTP server here.
        replicas: Vec<ReplicaReport>,
    },
    /// The live registry (servers added, removed or changed) and the catalog built from it,
    /// from shard 0: one message, so a shard applies both at once.
    Snapshot {
        /// The registry.
        registry: Arc<Registry>,
        /// The catalog.
        catalog: Arc<Catalog>,
    },
    /// A question for this shard's fleet figures or control (see
    /// [`crate::orchestration::fleet`]); answered with one `Data` part and `End` under `token`.
    Ask {
        /// The asking shard.
        from: usize,
        /// The asker's tag for the answer.
        token: u64,
        /// The question.
        ask: Ask,
    },
    /// A one-way fleet notice (saved workflows changed).
    Tell(Tell),
}

/// A piece of a forwarded reply.
pub enum ReplyPart {
    /// Status and headers; `streaming` when data parts are SSE chunks to flush one by one.
    Head {
        /// HTTP status.
        status: u16,
        /// Headers to send.
        headers: Vec<(String, String)>,
        /// Whether the body is a stream.
        streaming: bool,
    },
    /// Body bytes.
    Data(Bytes),
    /// Why a streamed reply's source ran out, sent just before `End` when it is not
    /// `Finished`: the requesting shard counts the stream's end under the owner's reason.
    Ended(Closed),
    /// The reply is complete.
    End,
}

/// Where the parts of one reply go: the requesting shard and its token.
struct ReplyTo {
    senders: Rc<Senders<Msg>>,
    to: usize,
    token: u64,
}

impl ReplyTo {
    /// Sends one part; false when the requesting shard is gone.
    async fn send(&self, part: ReplyPart) -> bool {
        let msg = Msg::Reply {
            token: self.token,
            part,
        };
        self.senders.send_to(self.to, msg).await.is_ok()
    }
}

/// This shard's end of the mesh.
pub struct Mesh {
    senders: Option<Rc<Senders<Msg>>>,
    waiting: RefCell<HashMap<u64, LocalSender<ReplyPart>>>,
    serving: RefCell<HashMap<(usize, u64), JoinHandle<()>>>,
    next_token: Cell<u64>,
    reports: RefCell<HashMap<u64, LocalSender<Vec<ReplicaReport>>>>,
}

impl Mesh {
    /// A mesh end; `None` senders when this is the only shard.
    pub fn new(senders: Option<Senders<Msg>>) -> Mesh {
        Mesh {
            senders: senders.map(Rc::new),
            waiting: RefCell::new(HashMap::new()),
            serving: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            reports: RefCell::new(HashMap::new()),
        }
    }

    fn send_later(&self, peer: usize, msg: Msg) {
        if let Some(senders) = self.senders.clone() {
            glommio::spawn_local(async move {
                if senders.send_to(peer, msg).await.is_err() {
                    log::warn!("shard {peer} is gone; message dropped");
                }
            })
            .detach();
        }
    }

    /// Sends the live registry and its catalog to `peer`.
    pub fn send_snapshot(&self, peer: usize, registry: Arc<Registry>, catalog: Arc<Catalog>) {
        self.send_later(peer, Msg::Snapshot { registry, catalog });
    }

    /// Asks `peer` for its statistics of server `server`'s replicas; `None` when it does not
    /// answer within `limit` (a shard busy for that long is reported as such).
    pub async fn query_replicas(
        &self,
        me: usize,
        peer: usize,
        server: usize,
        limit: std::time::Duration,
    ) -> Option<Vec<ReplicaReport>> {
        let senders = self.senders.as_ref()?;
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.reports.borrow_mut().insert(token, tx);
        let msg = Msg::ReplicaQuery {
            from: me,
            token,
            server,
        };
        let got = if senders.send_to(peer, msg).await.is_ok() {
            glommio::timer::timeout(limit, async { Ok(rx.recv().await) })
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        self.reports.borrow_mut().remove(&token);
        got
    }

    /// Asks `peer` (shard 0) to rediscover `server`.
    pub fn send_rediscover(&self, peer: usize, server: usize) {
        self.send_later(peer, Msg::Rediscover(server));
    }

    /// Sends a message for a stdio server to its owner; the reply comes back in parts.
    pub async fn stdio_post(
        &self,
        me: usize,
        owner: usize,
        server: (usize, usize),
        session: String,
        body: Bytes,
    ) -> Option<(u64, LocalReceiver<ReplyPart>)> {
        let senders = self.senders.as_ref()?;
        let (token, rx) = self.expect_reply();
        let msg = Msg::StdioPost {
            from: me,
            token,
            server,
            session,
            body,
        };
        if senders.send_to(owner, msg).await.is_err() {
            self.waiting.borrow_mut().remove(&token);
            return None;
        }
        Some((token, rx))
    }

    /// Tells the owner of stdio server `server` that `session` ended.
    pub fn stdio_detach(&self, owner: usize, server: (usize, usize), session: String) {
        self.send_later(owner, Msg::StdioDetach { server, session });
    }

    /// Hands an unasked stdio message to the shard owning `session`.
    pub fn send_unsolicited(&self, owner: usize, session: String, server: usize, message: Bytes) {
        self.send_later(
            owner,
            Msg::Unsolicited {
                session,
                server,
                message,
            },
        );
    }

    fn expect_reply(&self) -> (u64, LocalReceiver<ReplyPart>) {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = local_channel::new_unbounded();
        self.waiting.borrow_mut().insert(token, tx);
        (token, rx)
    }

    /// Asks `peer` a fleet question; the answer's body, or `None` when the peer is gone or
    /// has not answered `within`.
    pub async fn ask(&self, me: usize, peer: usize, ask: Ask, within: Duration) -> Option<Bytes> {
        let senders = self.senders.as_ref()?;
        let (token, rx) = self.expect_reply();
        let answer = async {
            let msg = Msg::Ask {
                from: me,
                token,
                ask,
            };
            senders.send_to(peer, msg).await.ok()?;
            let mut body = Vec::new();
            while let Some(part) = rx.recv().await {
                match part {
                    ReplyPart::Data(b) => body.extend_from_slice(&b),
                    ReplyPart::End => return Some(Bytes::from(body)),
                    ReplyPart::Head { .. } | ReplyPart::Ended(_) => {}
                }
            }
            None
        };
        let late = async {
            glommio::timer::sleep(within).await;
            None
        };
        let answer = futures_lite::future::or(answer, late).await;
        // Answered, gone or late: a reply arriving from now on has nowhere to go.
        self.waiting.borrow_mut().remove(&token);
        answer
    }

    /// Sends a fleet notice to `peer`.
    pub fn tell(&self, peer: usize, tell: Tell) {
        self.send_later(peer, Msg::Tell(tell));
    }

    /// Tells `owner` that the reply for `token` is no longer wanted.
    pub fn abandon(&self, me: usize, owner: usize, token: u64) {
        self.waiting.borrow_mut().remove(&token);
        self.send_later(owner, Msg::Abandon { from: me, token });
    }

    /// Sends `request` to `owner` and returns the stream of reply parts.
    pub async fn forward(
        &self,
        me: usize,
        owner: usize,
        request: McpRequest,
    ) -> Option<(u64, LocalReceiver<ReplyPart>)> {
        let senders = self.senders.as_ref()?;
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = local_channel::new_unbounded();
        self.waiting.borrow_mut().insert(token, tx);
        if senders
            .send_to(
                owner,
                Msg::Forward {
                    from: me,
                    token,
                    request: Box::new(request),
                },
            )
            .await
            .is_err()
        {
            self.waiting.borrow_mut().remove(&token);
            return None;
        }
        Some((token, rx))
    }

    /// Starts one receive loop per peer.
    pub fn spawn_receivers(shard: &Rc<Shard>, mut receivers: Receivers<Msg>) {
        for (_peer, rx) in receivers.streams() {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    shard.mesh.receive(&shard, msg);
                }
            })
            .detach();
        }
    }

    fn receive(&self, shard: &Rc<Shard>, msg: Msg) {
        match msg {
            Msg::Forward {
                from,
                token,
                request,
            } => {
                let owner = shard.clone();
                let task = glommio::spawn_local(async move {
                    let reply = crate::endpoint::http::handle_owned(&owner, *request).await;
                    owner.mesh.send_reply(from, token, reply).await;
                    owner.mesh.serving.borrow_mut().remove(&(from, token));
                })
                .detach();
                self.serving.borrow_mut().insert((from, token), task);
            }
            Msg::Abandon { from, token } => {
                if let Some(task) = self.serving.borrow_mut().remove(&(from, token)) {
                    task.cancel();
                }
            }
            Msg::Reply { token, part } => {
                let end = matches!(part, ReplyPart::End);
                let mut waiting = self.waiting.borrow_mut();
                if let Some(tx) = waiting.get(&token) {
                    // Unbounded, so this never waits; a closed receiver means the client left.
                    let _ = tx.try_send(part);
                }
                if end {
                    waiting.remove(&token);
                }
            }
            Msg::StdioPost {
                from,
                token,
                server,
                session,
                body,
            } => {
                let owner = shard.clone();
                glommio::spawn_local(async move {
                    owner
                        .mesh
                        .serve_stdio_post(&owner, from, token, server, session, body)
                        .await;
                })
                .detach();
            }
            Msg::StdioDetach { server, session } => {
                if let Some(link) = shard.stdio_link(server.0, server.1) {
                    glommio::spawn_local(async move { link.detach(&session).await }).detach();
                }
            }
            Msg::Unsolicited {
                session,
                server,
                message,
            } => {
                // A stdio child's updates for a bridge session (mcp::bridge) come here too.
                let found = shard
                    .session(&session)
                    .or_else(|| shard.bridge.session_named(&session));
                if let Some(s) = found {
                    crate::upstream::UpstreamSink::unsolicited(&*s, server, message);
                }
            }
            Msg::Rediscover(server) => shard.request_rediscovery(server),
            Msg::ReplicaQuery {
                from,
                token,
                server,
            } => {
                let replicas = crate::admin::replicas::local_report(shard, server);
                self.send_later(from, Msg::ReplicaReport { token, replicas });
            }
            Msg::ReplicaReport { token, replicas } => {
                if let Some(tx) = self.reports.borrow_mut().remove(&token) {
                    let _ = tx.try_send(replicas);
                }
            }
            Msg::Snapshot { registry, catalog } => shard.install_snapshot(registry, catalog),
            Msg::Ask { from, token, ask } => {
                let owner = shard.clone();
                glommio::spawn_local(async move {
                    let body = fleet::answer(&owner, ask).await;
                    if let Some(senders) = owner.mesh.senders.clone() {
                        let reply_to = ReplyTo {
                            senders,
                            to: from,
                            token,
                        };
                        let _ = reply_to.send(ReplyPart::Data(body)).await
                            && reply_to.send(ReplyPart::End).await;
                    }
                })
                .detach();
            }
            Msg::Tell(tell) => fleet::told(shard, tell),
        }
    }

    async fn serve_stdio_post(
        &self,
        shard: &Rc<Shard>,
        to: usize,
        token: u64,
        server: (usize, usize),
        session: String,
        body: Bytes,
    ) {
        let Some(senders) = self.senders.clone() else {
            return;
        };
        let reply_to = ReplyTo { senders, to, token };
        let send = |part: ReplyPart| reply_to.send(part);
        let head = |status: u16| ReplyPart::Head {
            status,
            headers: Vec::new(),
            streaming: status == 200,
        };
        let outcome = match shard.stdio_link(server.0, server.1) {
            Some(link) => link.post(&session, body).await,
            None => {
                let _ = send(head(502)).await
                    && send(ReplyPart::Data(Bytes::from_static(
                        b"no stdio link on this shard",
                    )))
                    .await
                    && send(ReplyPart::End).await;
                return;
            }
        };
        match outcome {
            Ok(LinkReply::Accepted) => {
                let _ = send(head(202)).await && send(ReplyPart::End).await;
            }
            Ok(LinkReply::Stream(rx)) => {
                if !send(head(200)).await {
                    return;
                }
                while let Some(message) = rx.recv().await {
                    if !send(ReplyPart::Data(message)).await {
                        return;
                    }
                }
                send(ReplyPart::End).await;
            }
            Err(e) => {
                let _ = send(head(502)).await
                    && send(ReplyPart::Data(Bytes::from(e.to_string()))).await
                    && send(ReplyPart::End).await;
            }
        }
    }

    async fn send_reply(&self, to: usize, token: u64, reply: Reply) {
        let Some(senders) = self.senders.clone() else {
            return;
        };
        let reply_to = ReplyTo { senders, to, token };
        let send = |part: ReplyPart| reply_to.send(part);
        match reply {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let headers = headers
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect();
                let _ = send(ReplyPart::Head {
                    status,
                    headers,
                    streaming: false,
                })
                .await
                    && send(ReplyPart::Data(body)).await
                    && send(ReplyPart::End).await;
            }
            Reply::Events {
                headers,
                mut source,
            } => {
                let headers = headers
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect();
                if !send(ReplyPart::Head {
                    status: 200,
                    headers,
                    streaming: true,
                })
                .await
                {
                    return;
                }
                while let Some(chunk) = source.next().await {
                    if !send(ReplyPart::Data(chunk)).await {
                        return;
                    }
                }
                // One more message only for the rare ends; a finished answer is the default.
                if let Some(why) = source.closed().filter(|w| *w != Closed::Finished) {
                    if !send(ReplyPart::Ended(why)).await {
                        return;
                    }
                }
                send(ReplyPart::End).await;
            }
        }
    }
}
