//! One MCP session with one upstream server, owned by one downstream session (or by discovery).
//!
//! The upstream session is created lazily and re-created transparently: when the server
//! answers that it no longer knows the session (it restarted, or expired it), the session is
//! initialized again with the same client parameters and the request that hit the loss is sent
//! once more. That is safe because a server that does not know the session did not act on it.
//! The resource subscriptions the lost session held are renewed in the new one before that
//! request goes out; a session holding subscriptions is re-opened as soon as its GET stream
//! finds it lost, so a client that only listens keeps getting its updates.
//!
//! Which replica the session opens on, moves to, and each request of a stateless server goes
//! to is the balancer's decision (`balance::Balancer`); this module only asks.
//!
//! - `discover`: the 2026-07-28 probe and the envelope of a stateless server's requests.
//! - `era`: which era a stateful client's session is opened in, under `era = "auto"`.
//! - `listen`: the GET stream, and re-opening a lost session that held subscriptions.
//! - `answer`: reading a POST's answer until the response to one request.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use glommio::sync::Semaphore;
use glommio::task::JoinHandle;
use simd_json::prelude::*;

mod answer;
mod discover;
mod era;
mod listen;

pub use answer::{await_answer, response_id};
pub use discover::Envelope;

use super::client::{PostReply, ReplyBody, UpstreamClient, UpstreamError};
use super::subscriptions::{uri_params, Subscriptions};
use crate::balance::Traffic;
use crate::metrics::Outcome;
use crate::protocol::jsonrpc::{self, Id};

/// Receives what an upstream sends outside any request of ours (its GET stream).
pub trait UpstreamSink {
    /// One JSON-RPC message from server `server`.
    fn unsolicited(&self, server: usize, message: Bytes);
}

/// A live upstream session.
#[derive(Debug)]
pub struct Established {
    /// `Mcp-Session-Id` the upstream issued, if it is stateful.
    pub session_id: Option<String>,
    /// The protocol version the upstream agreed to.
    pub version: String,
    /// Bumped at each (re-)initialization, so a loss is handled once.
    pub generation: u64,
    /// The `result` of the upstream's initialize answer.
    pub init_result: Bytes,
    /// The replica the session lives on.
    pub replica: usize,
    /// The upstream speaks 2026-07-28: no session, the envelope goes on every request, and
    /// any replica may take any request.
    pub stateless: Option<Envelope>,
}

/// Attempts of one request across replicas, the first included.
const MAX_ATTEMPTS: u32 = 3;

/// One MCP session with one upstream, (re-)established on demand.
pub struct UpstreamSession {
    client: Rc<UpstreamClient>,
    /// `initialize` params sent upstream: the client's capabilities and info.
    init_params: Bytes,
    state: RefCell<Option<Rc<Established>>>,
    /// Serializes (re-)initialization so concurrent requests share one handshake.
    init_lock: Semaphore,
    generation: Cell<u64>,
    next_id: Cell<i64>,
    sink: Option<Weak<dyn UpstreamSink>>,
    listener: RefCell<Option<JoinHandle<()>>>,
    /// The replica chosen when the downstream session began (kept in its sealed id).
    preferred: Cell<Option<usize>>,
    /// Resource subscriptions to renew in a re-initialized session.
    subscriptions: Subscriptions,
    /// Whose work the session's own exchanges (set-up, messages of the proxy's) are:
    /// [`Traffic::Own`] for a client's session, [`Traffic::Background`] for discovery's.
    own: Cell<Traffic>,
    /// The downstream client speaks the stateful era: under `era = "auto"` the session is
    /// stateful wherever the server issues sessions (see [`era`]).
    stateful_client: Cell<bool>,
    /// The client the session works for, when it has a credential (its principal): a server
    /// configured for token exchange gets that client's token exchanged.
    acting_for: Cell<Option<[u8; 32]>>,
}

impl UpstreamSession {
    /// A session that will initialize with `init_params` on first use.
    pub fn new(
        client: Rc<UpstreamClient>,
        init_params: Bytes,
        sink: Option<Weak<dyn UpstreamSink>>,
    ) -> Rc<Self> {
        Rc::new(UpstreamSession {
            client,
            init_params,
            state: RefCell::new(None),
            init_lock: Semaphore::new(1),
            generation: Cell::new(0),
            next_id: Cell::new(1),
            sink,
            listener: RefCell::new(None),
            preferred: Cell::new(None),
            subscriptions: Subscriptions::default(),
            own: Cell::new(Traffic::Own),
            stateful_client: Cell::new(false),
            acting_for: Cell::new(None),
        })
    }

    /// Makes the session one of the client `principal`.
    pub fn act_for(&self, principal: Option<[u8; 32]>) {
        self.acting_for.set(principal);
    }

    /// The `Authorization` the session's requests carry when its server takes the client's
    /// token by exchange (none otherwise: the client credentials token, if any, is added per
    /// request by the client). A discovery session is the proxy's own and carries that.
    pub(super) async fn authorization(&self) -> Result<Option<Rc<str>>, UpstreamError> {
        let server = self.client.name();
        if self.own.get() == Traffic::Background || !super::credentials::takes_exchanged(server) {
            return Ok(None);
        }
        super::credentials::exchanged_authorization(self.acting_for.get(), server)
            .await
            .map(Some)
            .map_err(|detail| UpstreamError::Credential {
                server: server.to_owned(),
                detail,
            })
    }

    /// Marks the session as a stateful client's: what that client could use directly
    /// (server-initiated requests, `resources/subscribe`) needs a stateful upstream session.
    pub fn for_stateful_client(&self) {
        self.stateful_client.set(true);
    }

    /// The server accepted `resources/subscribe` for `uri` (its own URI) in this session.
    pub fn subscribed(&self, uri: &str) {
        self.subscriptions.add(uri);
    }

    /// The client let go of `uri`: a new session must not subscribe to it again.
    pub fn unsubscribed(&self, uri: &str) {
        self.subscriptions.remove(uri);
    }

    /// Binds to `replica` on first use, if it is available then.
    pub fn prefer(&self, replica: Option<usize>) {
        self.preferred
            .set(replica.filter(|r| *r < self.client.replica_count()));
    }

    /// Marks the session as the proxy's own, with no client waiting on it (discovery's): its
    /// failures do not count against a replica's circuit.
    pub fn in_background(&self) {
        self.own.set(Traffic::Background);
    }

    /// The server this session talks to.
    pub fn client(&self) -> &Rc<UpstreamClient> {
        &self.client
    }

    /// A fresh id for a request the proxy sends in this session.
    pub fn next_id(&self) -> Id {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        Id::Num(id)
    }

    /// The established session, if any, without initializing.
    pub fn current(&self) -> Option<Rc<Established>> {
        self.state.borrow().clone()
    }

    /// The established session, initializing it first when needed.
    pub async fn established(self: &Rc<Self>) -> Result<Rc<Established>, UpstreamError> {
        self.established_avoiding(None, self.own.get()).await
    }

    /// The established session; a session on a replica that was taken out (or on `avoid`)
    /// moves to another replica first: a new upstream session opened with the client's own
    /// capabilities, which the client never notices. A replica that is out still serves its
    /// sessions while the balancer is in panic (`balance::panic`): there is nowhere better.
    /// `traffic` is whose work the set-up is, should one be needed.
    async fn established_avoiding(
        self: &Rc<Self>,
        avoid: Option<usize>,
        traffic: Traffic,
    ) -> Result<Rc<Established>, UpstreamError> {
        if let Some(s) = self.current() {
            if self.client.balancer.keeps(s.replica, avoid) {
                return Ok(s);
            }
            crate::metrics::fleet::failed_over(self.client.name());
            log::info!(
                "upstream {}: moving a session off replica {} ({})",
                self.client.name(),
                s.replica,
                self.client.replica_url(s.replica)
            );
            self.invalidate(s.generation);
        }
        let _permit =
            self.init_lock
                .acquire_permit(1)
                .await
                .map_err(|e| UpstreamError::Protocol {
                    server: self.client.name().to_owned(),
                    detail: e.to_string(),
                })?;
        if let Some(s) = self.current() {
            return Ok(s);
        }
        if avoid.is_some() {
            // Moving off a failed replica: the original choice no longer holds.
            self.preferred.set(None);
        }
        let balancer = &self.client.balancer;
        let mut replica = balancer
            .open_on(self.preferred.get(), avoid)
            .ok_or_else(|| UpstreamError::Connect {
                server: self.client.name().to_owned(),
                addr: "every replica".into(),
                source: std::io::Error::other(
                    "no replica is available (each is draining or asked for a pause)",
                ),
            })?;
        // The client's request has not left the proxy while its upstream session is being
        // set up, so a replica that fails the set-up (refused, broken, timed out, a gateway
        // failure) is passed over for another, as any request that never left the proxy is:
        // the client does not pay for a replica whose circuit is about to open, nor for the
        // one request a half-open circuit lets through. At worst the failed replica keeps an
        // upstream session nobody uses, which it expires.
        let mut attempt = 1;
        loop {
            let error = match self.initialize(replica, traffic).await {
                Ok(est) => return Ok(est),
                Err(e) => e,
            };
            let retry = error.never_sent() || error.is_replica_failure();
            if !retry || attempt >= MAX_ATTEMPTS || !balancer.retry_budget.withdraw() {
                return Err(error);
            }
            let Some(next) = balancer.retry_elsewhere(replica) else {
                return Err(error);
            };
            crate::metrics::fleet::retried(self.client.name());
            log::info!(
                "upstream {}: replica {replica} ({}) failed to open a session: {error}; \
                 opening it on another replica",
                self.client.name(),
                self.client.replica_url(replica)
            );
            replica = next;
            attempt += 1;
        }
    }

    /// Forgets the session of `generation` (if still current) so the next use re-initializes.
    fn invalidate(&self, generation: u64) {
        let mut state = self.state.borrow_mut();
        if state.as_ref().is_some_and(|s| s.generation == generation) {
            *state = None;
            self.listener.borrow_mut().take();
        }
    }

    async fn initialize(
        self: &Rc<Self>,
        replica: usize,
        traffic: Traffic,
    ) -> Result<Rc<Established>, UpstreamError> {
        use crate::config::UpstreamEra;
        match self.client.config.era {
            UpstreamEra::Stateful => self.open_stateful(replica, traffic).await,
            UpstreamEra::Stateless => match self.discover(replica, traffic).await? {
                Some(est) => Ok(est),
                None => Err(UpstreamError::Protocol {
                    server: self.client.name().to_owned(),
                    detail: "it does not answer server/discover with 2026-07-28, which its era = \"2026-07-28\" requires; set era = \"auto\" or \"2025-11-25\"".into(),
                }),
            },
            UpstreamEra::Auto if self.stateful_client.get() => {
                era::for_stateful_client(self, replica, traffic).await
            }
            UpstreamEra::Auto => {
                if self.client.stateless.get() != Some(false) {
                    if let Some(est) = self.discover(replica, traffic).await? {
                        return Ok(est);
                    }
                }
                self.open_stateful(replica, traffic).await
            }
        }
    }

    /// `initialize`, `notifications/initialized` and the GET stream: a stateful session.
    async fn open_stateful(
        self: &Rc<Self>,
        replica: usize,
        traffic: Traffic,
    ) -> Result<Rc<Established>, UpstreamError> {
        let credential = self.authorization().await?;
        let auth = authorization_header(&credential);
        let id = self.next_id();
        let body = jsonrpc::request_body(&id, "initialize", &self.init_params);
        let reply = self
            .client
            .post_with(replica, traffic, None, None, auth.as_slice(), &body)
            .await?;
        let session_id = reply.session_id.clone();
        let answer = self.await_answer(reply, &id).await?;
        let mut buf = answer.to_vec();
        let protocol_error = |detail: String| UpstreamError::Protocol {
            server: self.client.name().to_owned(),
            detail,
        };
        let msg = jsonrpc::parse(&mut buf).map_err(|e| protocol_error(e.to_string()))?;
        if let Some(err) = msg.get("error") {
            return Err(protocol_error(format!(
                "initialize refused: {}",
                err.encode()
            )));
        }
        let result = msg
            .get("result")
            .ok_or_else(|| protocol_error("initialize answer has no result".into()))?;
        let version = result
            .get_str("protocolVersion")
            .unwrap_or(crate::protocol::version::LATEST)
            .to_owned();
        let init_result = Bytes::from(result.encode().into_bytes());
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        let est = Rc::new(Established {
            session_id,
            version,
            generation,
            init_result,
            replica,
            stateless: None,
        });
        let initialized = jsonrpc::notification_body("notifications/initialized", None);
        self.client
            .post_with(
                replica,
                traffic,
                est.session_id.as_deref(),
                Some(&est.version),
                auth.as_slice(),
                &initialized,
            )
            .await?;
        *self.state.borrow_mut() = Some(est.clone());
        self.start_listener(&est);
        log::debug!(
            "upstream {}: session {:?} ready ({})",
            self.client.name(),
            est.session_id,
            est.version
        );
        self.resubscribe(&est).await;
        Ok(est)
    }

    /// Subscribes `est`, a new session, to what the sessions before it held: the server forgot
    /// those with the old session, and the client still counts on their updates. Sent straight
    /// to `est` (no re-initialization of its own, so a session lost again cannot recurse), before
    /// the request that opened it; a failure is logged and fails nothing else, since the
    /// client's request is about something else, and counts nothing against the replica
    /// ([`Traffic::Background`]).
    async fn resubscribe(&self, est: &Established) {
        let uris = self.subscriptions.uris();
        if uris.is_empty() {
            return;
        }
        let credential = match self.authorization().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("{e}; subscriptions not renewed");
                return;
            }
        };
        let auth = authorization_header(&credential);
        let mut renewed = 0;
        for uri in &uris {
            let id = self.next_id();
            let body = jsonrpc::request_body(&id, "resources/subscribe", &uri_params(uri));
            let sent = self
                .client
                .post_with(
                    est.replica,
                    Traffic::Background,
                    est.session_id.as_deref(),
                    Some(&est.version),
                    auth.as_slice(),
                    &body,
                )
                .await;
            let answer = match sent {
                Ok(reply) => self.await_answer(reply, &id).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(a) if Outcome::of_response(&a) == Outcome::Ok => renewed += 1,
                Ok(a) => log::warn!(
                    server = self.client.name();
                    "upstream {}: could not renew the subscription to {uri} in a new session: {}",
                    self.client.name(),
                    String::from_utf8_lossy(&a[..a.len().min(300)])
                ),
                Err(e) => log::warn!(
                    server = self.client.name();
                    "upstream {}: could not renew the subscription to {uri} in a new session: {e}",
                    self.client.name()
                ),
            }
        }
        log::info!(
            "upstream {}: renewed {renewed} of {} resource subscriptions in a new session",
            self.client.name(),
            uris.len()
        );
    }

    /// True when the upstream is used in the stateless era.
    pub fn is_stateless(&self) -> bool {
        self.current().is_some_and(|e| e.stateless.is_some())
    }

    /// POSTs a message of the proxy's own in this session (not a client request: see
    /// [`Traffic`]); retried elsewhere only when it never left the proxy.
    pub async fn post(self: &Rc<Self>, body: &[u8]) -> Result<PostReply, UpstreamError> {
        self.deliver_with(body, false, self.own.get(), None).await
    }

    /// POSTs a message in this session. A session the upstream lost is re-initialized and the
    /// message sent once more (the server did not act on it). A replica that fails moves the
    /// session to another replica, and the message is sent again there only when that is safe:
    /// it never reached the upstream, or `retry_safe` (a read-only or idempotent tool). Retries
    /// back off with jitter and draw on the server's retry budget, so a failing fleet is not
    /// hammered.
    pub async fn send(
        self: &Rc<Self>,
        body: &[u8],
        retry_safe: bool,
    ) -> Result<PostReply, UpstreamError> {
        self.deliver_with(body, retry_safe, Traffic::Client, None)
            .await
    }

    /// [`send`](Self::send) to the replica in `pin` when it is usable, recording the replica
    /// that took the request there: the rounds of one `input_required` call stay on the
    /// replica that asked, which matters for servers whose `requestState` key is their own.
    pub async fn send_pinned(
        self: &Rc<Self>,
        body: &[u8],
        retry_safe: bool,
        pin: &Cell<Option<usize>>,
    ) -> Result<PostReply, UpstreamError> {
        self.deliver_with(body, retry_safe, Traffic::Client, Some(pin))
            .await
    }

    /// [`send`](Self::send), counting the request on its replica (requests, errors, latency
    /// histogram, balancer average) only when it is a client's: `traffic` says which.
    async fn deliver_with(
        self: &Rc<Self>,
        body: &[u8],
        retry_safe: bool,
        traffic: Traffic,
        pin: Option<&Cell<Option<usize>>>,
    ) -> Result<PostReply, UpstreamError> {
        let balancer = &self.client.balancer;
        balancer.retry_budget.deposit();
        let stateless = self.client.config.balance.stateless;
        let mut avoid = None;
        let mut attempt = 1;
        // A client's request opens what it needs on the client's behalf.
        let setup = match traffic {
            Traffic::Client => self.own.get(),
            own => own,
        };
        loop {
            let est = self.established_avoiding(avoid, setup).await?;
            // Stateless servers keep nothing per session: every request may go anywhere.
            let replica = if stateless || est.stateless.is_some() {
                balancer.for_request(pin.and_then(Cell::get), avoid, est.replica)
            } else {
                est.replica
            };
            if let Some(pin) = pin {
                pin.set(Some(replica));
            }
            let credential = self.authorization().await?;
            let auth = authorization_header(&credential);
            let started = std::time::Instant::now();
            let result = match &est.stateless {
                Some(envelope) => {
                    let Some(stamped) = crate::protocol::stateless::stamp(
                        body,
                        &envelope.capabilities,
                        &envelope.client_info,
                        |tool| {
                            let params = self.client.tool_params.borrow();
                            params.get(tool).cloned().unwrap_or_default()
                        },
                    ) else {
                        // No client notifications or responses exist in this era over HTTP
                        // (cancelling is closing the stream): nothing to send.
                        return Ok(PostReply {
                            session_id: None,
                            body: ReplyBody::Accepted,
                        });
                    };
                    let mut headers = vec![("Mcp-Method", stamped.method.as_str())];
                    if let Some(name) = stamped.name.as_deref() {
                        headers.push(("Mcp-Name", name));
                    }
                    headers.extend(stamped.params.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                    headers.extend(auth);
                    self.client
                        .post_with(
                            replica,
                            traffic,
                            None,
                            Some(&est.version),
                            &headers,
                            &stamped.body,
                        )
                        .await
                }
                None => {
                    self.client
                        .post_with(
                            replica,
                            traffic,
                            est.session_id.as_deref(),
                            Some(&est.version),
                            auth.as_slice(),
                            body,
                        )
                        .await
                }
            };
            if traffic == Traffic::Client {
                self.client
                    .record_request(replica, started.elapsed(), result.as_ref().err());
            }
            let error = match result {
                Err(e) => e,
                ok => return ok,
            };
            if let UpstreamError::SessionLost { server } = &error {
                if attempt == 1 {
                    log::info!("upstream {server}: session lost; initializing a new one");
                    self.invalidate(est.generation);
                    attempt += 1;
                    continue;
                }
                return Err(error);
            }
            let safe = error.never_sent() || (retry_safe && error.is_replica_failure());
            let others = self.client.replica_count() > 1;
            if !safe || attempt >= MAX_ATTEMPTS || !others || !balancer.retry_budget.withdraw() {
                return Err(error);
            }
            crate::metrics::fleet::retried(self.client.name());
            log::info!(
                "upstream {}: replica {replica} ({}) failed: {error}; retrying on another replica",
                self.client.name(),
                self.client.replica_url(replica)
            );
            if !stateless {
                self.invalidate(est.generation);
            }
            avoid = Some(replica);
            glommio::timer::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Sends a request of the proxy's own and returns the whole response message.
    pub async fn request(
        self: &Rc<Self>,
        method: &str,
        params_json: &[u8],
    ) -> Result<Bytes, UpstreamError> {
        let id = self.next_id();
        let body = jsonrpc::request_body(&id, method, params_json);
        self.request_as(&id, &body).await
    }

    /// Sends `body`, a request whose id `id` came from [`Self::next_id`], and returns the
    /// whole response message (the caller keeps the id, to cancel the request upstream).
    pub async fn request_as(self: &Rc<Self>, id: &Id, body: &[u8]) -> Result<Bytes, UpstreamError> {
        let reply = self.post(body).await?;
        self.await_answer(reply, id).await
    }

    /// Reads a POST's answer until the response to `id`, passing anything else to the sink.
    async fn await_answer(&self, reply: PostReply, id: &Id) -> Result<Bytes, UpstreamError> {
        await_answer(self.client.name(), reply, id, |m| self.deliver(m)).await
    }

    fn deliver(&self, message: Bytes) {
        if let Some(sink) = self.sink.as_ref().and_then(Weak::upgrade) {
            sink.unsolicited(self.client.index, message);
        }
    }

    /// Ends the upstream session (DELETE), if one was established.
    pub async fn close(&self) {
        let est = self.state.borrow_mut().take();
        if let Some(handle) = self.listener.borrow_mut().take() {
            handle.cancel();
        }
        if let Some(est) = est {
            if let Some(sid) = est.session_id.as_deref() {
                // Only a token in force: ending a session is not worth an exchange.
                let credential = match super::credentials::takes_exchanged(self.client.name()) {
                    true => self.acting_for.get().and_then(|p| {
                        super::credentials::exchanged_in_force(p, self.client.name())
                    }),
                    false => None,
                };
                self.client
                    .delete(est.replica, sid, &est.version, credential.as_deref())
                    .await;
            }
        }
    }
}

impl Drop for UpstreamSession {
    fn drop(&mut self) {
        if let Some(handle) = self.listener.get_mut().take() {
            handle.cancel();
        }
    }
}

/// Pause before retry `attempt` (1-based): 10 ms doubling, with ±50% jitter so shards and
/// sessions retrying together spread out.
fn backoff(attempt: u32) -> Duration {
    let base = 10u64 << attempt.min(6);
    let mut noise = [0u8; 2];
    let _ = getrandom::fill(&mut noise);
    let jitter = u64::from(u16::from_le_bytes(noise)) % base;
    Duration::from_millis(base / 2 + jitter)
}

/// The header that carries `credential`, if any.
fn authorization_header(credential: &Option<Rc<str>>) -> Option<(&'static str, &str)> {
    credential.as_deref().map(|c| ("Authorization", c))
}
