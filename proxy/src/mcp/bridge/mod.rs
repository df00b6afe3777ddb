//! Stateless-era (2026-07-28) clients served through the stateful machinery.
//!
//! A modern request carries the client's capabilities and identity in `_meta` instead of an
//! `initialize`. The proxy serves it through a *bridge session*: a downstream session it keeps
//! itself, one per (capabilities, client identity) on each shard, never named to any client.
//! Its upstream sessions are opened with the client's own capabilities, exactly as for a
//! stateful client, so a stateful upstream sees an ordinary session.
//!
//! Server-to-client requests (sampling, elicitation, roots) cannot travel to a modern client:
//! they become an `InputRequiredResult` whose `inputRequests` are the upstream's requests and
//! whose `requestState` names a *round* kept here. The upstream call stays open, waiting; the
//! client's retry carries `inputResponses`, which are delivered to the upstream as the
//! answers to its requests, and the proxy goes on reading the same upstream stream. The
//! mapping is documented in `docs/stateless.md`.
//!
//! - [`listen`]: the resource subscriptions of `subscriptions/listen` streams, held upstream
//!   through bridge sessions.
//! - [`stateless_upstream`]: a 2026-07-28 upstream's `input_required`, asked of a stateful
//!   client as server-to-client requests.
//!
//! Bridge request ids are proxy-unique (clients all start at 1 and share bridge sessions);
//! the client's id is put back on the answer.

pub mod listen;
pub mod stateless_upstream;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use futures_lite::future::{poll_fn, poll_once};
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use crate::auth::Identity;
use crate::mcp::routing::forward::Delivery;
use crate::mcp::routing::relay;
use crate::mcp::routing::Answer;
use crate::mcp::session::{Closed, Next, Session};
use crate::protocol::cursor::ListKind;
use crate::protocol::jsonrpc::{self, code, Id, Kind};
use crate::protocol::stateless::{self, Headers};
use crate::protocol::version;
use crate::shard::Shard;
use listen::{Grant, SUBSCRIPTION_ID};

/// Prefix of the `requestState` tokens the proxy mints: then two hex digits naming the shard
/// holding the round, a dot, and a random part.
const ROUND_PREFIX: &str = "mcp-proxy-round.";
/// How long a round waits for the client's retry.
const ROUND_TTL: Duration = Duration::from_secs(600);
/// Rounds kept per shard; the oldest go first.
const MAX_ROUNDS: usize = 4096;
/// Bridge sessions kept per shard (distinct client capability sets).
const MAX_SESSIONS: usize = 64;
/// The revision bridge sessions speak to stateful upstreams.
const BRIDGED_VERSION: &str = "2025-11-25";

/// What the transport should answer a modern POST.
pub enum Modern {
    /// 200 with this JSON-RPC message.
    Json(Bytes),
    /// 400 with this JSON-RPC error (bad message, header mismatch, unsupported version).
    Refused(Bytes),
    /// 404 with this -32601 error: the method does not exist in this era.
    Unknown(Bytes),
    /// 202: a notification, taken and ignored.
    Accepted,
    /// An SSE stream carried by this session's stream: `subscriptions/listen`, or a call
    /// relaying progress before its answer.
    Stream(Rc<Session>, u64),
}

/// A server-to-client exchange waiting for the client's `inputResponses`.
struct Round {
    session: Rc<Session>,
    /// The session stream relaying the upstream call.
    stream: u64,
    /// The last message of that stream already handled.
    after: u64,
    method: String,
    name: Option<String>,
    /// `inputRequests` key -> the proxy id the upstream's request got in the session.
    keys: Vec<(String, Id)>,
    /// The client's own requests, re-offered if a retry leaves some unanswered.
    requests: Vec<(String, Bytes)>,
    created: Instant,
}

/// Per-shard bridge state.
/// A shard's bridge sessions, the local the bridge keeps on each shard.
pub trait ShardBridge {
    /// This shard's bridge sessions and pending input rounds.
    fn bridge(&self) -> &State;
}

impl ShardBridge for Shard {
    fn bridge(&self) -> &State {
        self.local::<State>()
    }
}

#[derive(Default)]
pub struct State {
    sessions: RefCell<HashMap<String, Rc<Session>>>,
    rounds: RefCell<HashMap<String, Round>>,
    next_id: Cell<i64>,
    next_session: Cell<u64>,
    listeners: RefCell<Vec<Listener>>,
    /// Resource subscriptions held upstream for listen streams, through bridge sessions.
    pub(crate) held: listen::Held,
}

/// An open `subscriptions/listen` stream.
struct Listener {
    /// The stream's own session (it only carries the stream); gone when the client left.
    session: std::rc::Weak<Session>,
    stream: u64,
    /// The listen request's id, as JSON: the subscription id.
    id_json: String,
    /// Opted in to tools, prompts and resources list changes.
    wants: [bool; 3],
    /// The bridge session its resource subscriptions go through, if it has any.
    bridge: Option<Rc<Session>>,
    /// Resources granted on stateful upstreams: their updates reach the bridge session.
    resources: Vec<Grant>,
}

impl State {
    fn fresh_id(&self) -> Id {
        let n = self.next_id.get().wrapping_add(1);
        self.next_id.set(n);
        Id::Str(format!("mcp-proxy-b{n}"))
    }

    /// The bridge session for a client with these capabilities and identity; clients
    /// authenticated as different principals never share one (their policies differ).
    fn session(
        &self,
        shard: &Rc<Shard>,
        caps: &str,
        info: &str,
        client: Option<&Identity>,
    ) -> Rc<Session> {
        let owner: String = client
            .map(|c| c.principal.iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default();
        let key = format!("{owner}\u{0}{caps}\u{0}{info}");
        if let Some(s) = self.sessions.borrow().get(&key) {
            s.touch();
            return s.clone();
        }
        if self.sessions.borrow().len() >= MAX_SESSIONS {
            // A session holding listen streams' resource subscriptions goes last: closing it
            // ends them (its listeners are told, and re-listen).
            let oldest = self
                .sessions
                .borrow()
                .iter()
                .min_by_key(|(_, s)| (self.held.holds(&s.id), s.last_active()))
                .map(|(k, _)| k.clone());
            if let Some(old) = oldest.and_then(|k| self.sessions.borrow_mut().remove(&k)) {
                self.end_listeners_of(&old.id);
                self.held.forget(&old.id);
                glommio::spawn_local(async move { old.close(Closed::SessionEnded).await }).detach();
            }
        }
        let n = self.next_session.get() + 1;
        self.next_session.set(n);
        let params = Bytes::from(format!(
            r#"{{"protocolVersion":"{BRIDGED_VERSION}","capabilities":{caps},"clientInfo":{info}}}"#
        ));
        // The session's own version is the client's era (its streams carry no priming
        // event); upstreams get BRIDGED_VERSION through `params`.
        let session = Session::new(
            shard,
            format!("{}{:02x}-{n}", crate::mcp::session::BRIDGE_PREFIX, shard.id),
            stateless::VERSION.to_owned(),
            params,
            Vec::new(),
        );
        session.auth.assume(client);
        self.sessions.borrow_mut().insert(key, session.clone());
        session
    }

    /// The bridge session with this id, if the shard keeps it.
    pub fn session_named(&self, id: &str) -> Option<Rc<Session>> {
        self.sessions
            .borrow()
            .values()
            .find(|s| s.id == id)
            .cloned()
    }

    fn keep_round(&self, shard_id: usize, round: Round) -> String {
        let mut random = [0u8; 18];
        // A token that cannot be guessed is what stops one client from answering another's
        // round; without randomness the round is not kept.
        if getrandom::fill(&mut random).is_err() {
            return String::new();
        }
        let token = format!(
            "{ROUND_PREFIX}{shard_id:02x}.{}",
            URL_SAFE_NO_PAD.encode(random)
        );
        let mut rounds = self.rounds.borrow_mut();
        rounds.retain(|_, r| r.created.elapsed() < ROUND_TTL);
        if rounds.len() >= MAX_ROUNDS {
            if let Some(oldest) = rounds
                .iter()
                .min_by_key(|(_, r)| r.created)
                .map(|(k, _)| k.clone())
            {
                rounds.remove(&oldest);
            }
        }
        rounds.insert(token.clone(), round);
        token
    }

    /// Tells listeners that opted in which lists changed.
    pub fn lists_changed(&self, kinds: &[ListKind]) {
        self.listeners.borrow_mut().retain(|l| {
            let Some(session) = l.session.upgrade() else {
                return false;
            };
            let mut sent = [false; 3];
            for kind in kinds {
                let (slot, method) = match kind {
                    ListKind::Tools => (0, "notifications/tools/list_changed"),
                    ListKind::Prompts => (1, "notifications/prompts/list_changed"),
                    ListKind::Resources | ListKind::ResourceTemplates => {
                        (2, "notifications/resources/list_changed")
                    }
                };
                if l.wants[slot] && !sent[slot] {
                    sent[slot] = true;
                    let params = format!(r#"{{"_meta":{{"{SUBSCRIPTION_ID}":{}}}}}"#, l.id_json);
                    session.events.push(
                        l.stream,
                        jsonrpc::notification_body(method, Some(params.as_bytes())),
                    );
                }
            }
            true
        });
    }

    /// Ends the listen streams whose resource subscriptions go through bridge session `id`.
    fn end_listeners_of(&self, id: &str) {
        self.listeners.borrow_mut().retain(|l| {
            let through = l.bridge.as_ref().is_some_and(|b| b.id == id);
            if through {
                l.end();
            }
            !through
        });
    }

    /// Takes what a bridge session's upstreams sent unprompted: a resource update goes to the
    /// listen streams granted its (prefixed) URI. False for anything else.
    pub fn unsolicited(&self, bridge: &str, message: &[u8]) -> bool {
        let Some(uri) = listen::updated_uri(message) else {
            return false;
        };
        let granted = |l: &&Listener| {
            l.bridge.as_ref().is_some_and(|b| b.id == bridge)
                && l.resources.iter().any(|g| g.exposed == uri)
        };
        for l in self.listeners.borrow().iter().filter(granted) {
            if let Some(session) = l.session.upgrade() {
                session
                    .events
                    .push(l.stream, listen::updated(&l.id_json, &uri));
            }
        }
        true
    }

    /// Ends every bridge session (shutdown).
    pub async fn close(&self) {
        for l in self.listeners.borrow_mut().drain(..) {
            l.end();
        }
        self.rounds.borrow_mut().clear();
        let sessions: Vec<_> = self.sessions.borrow_mut().drain().map(|(_, s)| s).collect();
        for s in sessions {
            // Closing the session ends its upstream subscriptions with it.
            self.held.forget(&s.id);
            s.close(Closed::Shutdown).await;
        }
    }
}

impl Listener {
    /// Ends the stream gracefully: the listen request gets its response, then the stream ends.
    fn end(&self) {
        if let Some(session) = self.session.upgrade() {
            let result = format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{"resultType":"complete","_meta":{{"{SUBSCRIPTION_ID}":{}}}}}}}"#,
                self.id_json, self.id_json
            );
            session.events.push(self.stream, Bytes::from(result));
            session.events.finish(self.stream);
        }
    }
}

/// The shard holding the round a retry continues, found from the headers and a byte search
/// for the proxy's token (no parse); `None` when the request continues no round of this proxy.
/// Only the methods that can have rounds are searched, as `Mcp-Method` says.
pub fn owner(shard: &Shard, headers: &Headers, body: &[u8]) -> Option<usize> {
    if !headers
        .method
        .as_deref()
        .is_some_and(stateless::may_require_input)
    {
        return None;
    }
    let prefix = ROUND_PREFIX.as_bytes();
    let at = body.windows(prefix.len()).position(|w| w == prefix)?;
    let hex = body.get(at + prefix.len()..at + prefix.len() + 2)?;
    let n = usize::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    Some(n % shard.nr_shards.max(1))
}

/// Serves one POST of the stateless era.
pub async fn handle(
    shard: &Rc<Shard>,
    headers: &Headers,
    body: Bytes,
    sse: bool,
    client: Option<&Identity>,
    received: Instant,
) -> Modern {
    let mut buf = body.to_vec();
    let mut msg = match jsonrpc::parse(&mut buf) {
        Ok(m) => m,
        Err(e) => return Modern::Refused(jsonrpc::error_body(None, e.code(), &e.to_string())),
    };
    let (id, method) = match jsonrpc::classify(&msg) {
        Err(e) => {
            let id = msg.get("id").and_then(Id::from_value);
            return Modern::Refused(jsonrpc::error_body(id.as_ref(), e.code(), &e.to_string()));
        }
        // No client-to-server notification exists over HTTP in this era; taking one is harmless.
        Ok(Kind::Notification { .. }) => return Modern::Accepted,
        Ok(Kind::Response { .. }) => {
            return Modern::Refused(jsonrpc::error_body(
                None,
                code::INVALID_REQUEST,
                "2026-07-28 clients send no responses: answer input requests with inputResponses on a retry",
            ))
        }
        Ok(Kind::Request { id, method }) => (id, method.to_owned()),
    };
    if let Err(why) = stateless::check_headers(headers, &method, &msg) {
        return Modern::Refused(jsonrpc::error_body(
            Some(&id),
            stateless::code::HEADER_MISMATCH,
            &why,
        ));
    }
    if method == "tools/call" {
        let params = msg.get("params");
        let checked = params.and_then(|p| p.get_str("name")).map(|tool| {
            let catalog = shard.catalog();
            stateless::check_param_headers(
                catalog.tool_param_headers(tool),
                &headers.params,
                params.and_then(|p| p.get("arguments")),
            )
        });
        if let Some(Err(why)) = checked {
            return Modern::Refused(jsonrpc::error_body(
                Some(&id),
                stateless::code::HEADER_MISMATCH,
                &why,
            ));
        }
    }
    let requested = msg
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get_str(stateless::META_VERSION))
        .map(str::to_owned);
    if let Some(v) = requested.as_deref() {
        if !version::is_supported(v) || !stateless::is_modern(v) {
            return Modern::Refused(stateless::unsupported_version(Some(&id), v, &version::ALL));
        }
    }
    match method.as_str() {
        "server/discover" => Modern::Json(jsonrpc::result_body(&id, discover(shard).as_bytes())),
        "initialize" => Modern::Refused(jsonrpc::error_body(
            Some(&id),
            code::INVALID_REQUEST,
            "initialize belongs to the stateful era: send it without MCP-Protocol-Version 2026-07-28, or call methods directly",
        )),
        "subscriptions/listen" => listen(shard, &id, &msg, client).await,
        "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe" => {
            Modern::Unknown(jsonrpc::error_body(
            Some(&id),
            code::METHOD_NOT_FOUND,
                &format!("method not found: {method} is not served to 2026-07-28 clients"),
            ))
        }
        _ => {
            let state = msg
                .get("params")
                .and_then(|p| p.get_str("requestState"))
                .filter(|s| s.starts_with(ROUND_PREFIX))
                .map(str::to_owned);
            match state {
                Some(token) if stateless::may_require_input(&method) => {
                    continuation(shard, id, &method, &msg, &token, sse, client).await
                }
                _ => {
                    let delivery = Delivery {
                        accepts_sse: sse,
                        received,
                    };
                    first_call(shard, id, &method, &mut msg, delivery, client).await
                }
            }
        }
    }
}

/// Opens a `subscriptions/listen` stream: the list changes the client opted in to, and the
/// updates of the resources it names that the proxy could subscribe to upstream on its behalf
/// (`mcp::bridge::listen`). The acknowledgment lists exactly what is granted.
async fn listen(shard: &Rc<Shard>, id: &Id, msg: &Value<'_>, client: Option<&Identity>) -> Modern {
    let filter = msg.get("params").and_then(|p| p.get("notifications"));
    let wants = [
        "toolsListChanged",
        "promptsListChanged",
        "resourcesListChanged",
    ]
    .map(|k| filter.and_then(|f| f.get_bool(k)).unwrap_or(false));
    let uris = match listen::requested(filter) {
        Ok(uris) => uris,
        Err(why) => return Modern::Json(jsonrpc::error_body(Some(id), code::INVALID_PARAMS, &why)),
    };
    let mut id_buf = Vec::new();
    id.write_json(&mut id_buf);
    let id_json = String::from_utf8_lossy(&id_buf).into_owned();
    let n = shard.bridge().next_session.get() + 1;
    shard.bridge().next_session.set(n);
    let session = Session::new(
        shard,
        format!(
            "{}listen-{:02x}-{n}",
            crate::mcp::session::BRIDGE_PREFIX,
            shard.id
        ),
        stateless::VERSION.to_owned(),
        Bytes::from_static(b"{}"),
        Vec::new(),
    );
    session.auth.assume(client);
    let stream = session.events.open();
    let target = listen::Target {
        session: Rc::downgrade(&session),
        stream,
        id_json: id_json.clone(),
        ready: Rc::new(Cell::new(false)),
    };
    let mut subscribed = listen::Subscribed::default();
    let mut bridge = None;
    if !uris.is_empty() {
        // Upstream subscriptions go through the client's bridge session: the upstream session
        // that watches a resource is the one its calls use.
        let (caps, info) = stateless::client_meta(msg);
        let through = shard.bridge().session(shard, &caps, &info, client);
        let catalog = shard.catalog();
        let wanted: Vec<Grant> = uris
            .iter()
            .filter_map(|u| {
                listen::resolve(&catalog, &through, u).map(|(server, original)| Grant {
                    server,
                    original,
                    exposed: u.clone(),
                })
            })
            .collect();
        drop(catalog);
        if !wanted.is_empty() {
            subscribed = listen::subscribe(shard, &through, wanted, &target).await;
            bridge = Some(through);
        }
    }
    // Granted in the client's order.
    let granted: Vec<Grant> = uris
        .iter()
        .filter_map(|u| {
            subscribed
                .stateful
                .iter()
                .chain(&subscribed.modern)
                .find(|g| g.exposed == *u)
                .cloned()
        })
        .collect();
    let ack = format!(
        r#"{{"_meta":{{"{SUBSCRIPTION_ID}":{id_json}}},"notifications":{}}}"#,
        listen::acknowledged(wants, &granted)
    );
    session.events.push(
        stream,
        jsonrpc::notification_body(
            "notifications/subscriptions/acknowledged",
            Some(ack.as_bytes()),
        ),
    );
    target.ready.set(true);
    let watching = !granted.is_empty();
    shard.bridge().listeners.borrow_mut().push(Listener {
        session: Rc::downgrade(&session),
        stream,
        id_json,
        wants,
        bridge: bridge.clone().filter(|_| watching),
        resources: subscribed.stateful.clone(),
    });
    if watching {
        // The listen session is owned by the client's response stream alone: when the client
        // goes, it is dropped, and with it this sender, which is what ends the subscriptions.
        let (tx, rx) = glommio::channels::local_channel::new_bounded(1);
        session.register_waiter(Rc::new(tx));
        let shard = shard.clone();
        let readers = std::mem::take(&mut subscribed.readers);
        let stateful = std::mem::take(&mut subscribed.stateful);
        glommio::spawn_local(async move {
            let _ = rx.recv().await;
            for reader in readers {
                reader.cancel();
            }
            shard
                .bridge()
                .listeners
                .borrow_mut()
                .retain(|l| l.session.strong_count() > 0);
            if let Some(bridge) = bridge {
                listen::unsubscribe(&shard, &bridge, stateful).await;
            }
        })
        .detach();
    } else {
        for reader in subscribed.readers {
            reader.cancel();
        }
    }
    Modern::Stream(session, stream)
}

/// The `server/discover` result: the proxy's versions, capabilities and identity.
fn discover(shard: &Rc<Shard>) -> String {
    let versions: Vec<String> = version::ALL
        .iter()
        .rev()
        .map(|v| format!("\"{v}\""))
        .collect();
    format!(
        r#"{{"resultType":"complete","supportedVersions":[{}],"capabilities":{},"_meta":{{"io.modelcontextprotocol/serverInfo":{{"name":"mcp-proxy","version":"{}"}}}},"instructions":"{}","ttlMs":0,"cacheScope":"public"}}"#,
        versions.join(","),
        crate::mcp::routing::server_capabilities(&shard.catalog()),
        env!("CARGO_PKG_VERSION"),
        crate::mcp::routing::INSTRUCTIONS,
    )
}

async fn first_call(
    shard: &Rc<Shard>,
    id: Id,
    method: &str,
    msg: &mut Value<'_>,
    delivery: Delivery,
    client: Option<&Identity>,
) -> Modern {
    let (caps, info) = stateless::client_meta(msg);
    let name = stateless::named_field(method)
        .and_then(|f| msg.get("params").and_then(|p| p.get_str(f)))
        .map(str::to_owned);
    stateless::strip_envelope(msg);
    let session = shard.bridge().session(shard, &caps, &info, client);
    let inner = shard.bridge().fresh_id();
    relay::set(msg, "id", inner.to_value());
    let owned = std::mem::replace(msg, Value::null());
    // The answer comes back through the bridge session, which always takes a stream.
    let inner_delivery = Delivery {
        accepts_sse: true,
        ..delivery
    };
    let answer =
        crate::mcp::routing::request(shard, &session, inner, method, owned, inner_delivery).await;
    match answer {
        Answer::Json(body) => Modern::Json(restore(method, &id, body)),
        Answer::BadRequest(body) => Modern::Refused(restore(method, &id, body)),
        Answer::Stream(stream) => {
            let call = Bridged {
                session,
                stream,
                id,
                method: method.to_owned(),
                name,
            };
            call.follow(shard, 0, delivery.accepts_sse.then_some(Relay::Open))
                .await
        }
        Answer::Accepted | Answer::Silent => Modern::Json(jsonrpc::error_body(
            Some(&id),
            code::INTERNAL_ERROR,
            "the request ended without an answer",
        )),
    }
}

/// Where a bridged call's notifications go.
#[derive(Clone, Copy)]
enum Relay {
    /// The client takes SSE: a stream is opened at the first notification.
    Open,
    /// Into this stream of the bridge session, already handed to the client.
    Into(u64),
}

/// A bridged call: the session stream relaying it upstream, and what the client asked.
struct Bridged {
    session: Rc<Session>,
    stream: u64,
    id: Id,
    method: String,
    name: Option<String>,
}

impl Bridged {
    /// Reads the call's stream from `after` until its answer, or until the upstream asks the
    /// client something: then the call becomes a round. Progress and log notifications go to
    /// the client on an SSE answer when it takes one (opened at the first), else are dropped.
    fn follow(
        self,
        shard: &Rc<Shard>,
        mut after: u64,
        relay: Option<Relay>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Modern> + '_>> {
        Box::pin(async move {
            let session = self.session.clone();
            let stream = self.stream;
            let epoch = session.events.claim(stream);
            let mut asked: Vec<(String, Id, Bytes)> = Vec::new();
            loop {
                // Once the upstream has asked something, take only what is already there: the
                // client answers the batch, and the call waits for that.
                let next = if asked.is_empty() {
                    Some(poll_fn(|cx| session.events.poll_next(stream, after, epoch, cx)).await)
                } else {
                    poll_once(poll_fn(|cx| {
                        session.events.poll_next(stream, after, epoch, cx)
                    }))
                    .await
                };
                let Some(next) = next else { break };
                let (seq, message) = match next {
                    Next::Event(seq, message) => (seq, message),
                    Next::End(_) if asked.is_empty() => {
                        return Modern::Json(jsonrpc::error_body(
                            Some(&self.id),
                            code::UPSTREAM_PROTOCOL,
                            "the upstream call ended without an answer",
                        ))
                    }
                    Next::End(_) => break,
                };
                after = seq;
                let mut buf = message.to_vec();
                let Ok(parsed) = jsonrpc::parse(&mut buf) else {
                    continue;
                };
                let proxy_id = parsed.get("id").and_then(Id::from_value);
                match (parsed.get_str("method"), proxy_id) {
                    // A server-to-client request: it becomes one of the client's input requests.
                    (Some(_), Some(proxy_id)) => {
                        if let Some(request) = stateless::input_request_of(&parsed) {
                            let key = match &proxy_id {
                                Id::Str(s) => s.clone(),
                                Id::Num(n) => n.to_string(),
                            };
                            asked.push((key, proxy_id, Bytes::from(request)));
                        }
                    }
                    (Some(_), None) => match relay {
                        Some(Relay::Into(out)) => session.events.push(out, message),
                        Some(Relay::Open) if asked.is_empty() => {
                            let out = session.events.open();
                            session.events.push(out, message);
                            let shard = shard.clone();
                            let handed = session.clone();
                            let session = session.clone();
                            glommio::spawn_local(async move {
                                let answer =
                                    self.follow(&shard, after, Some(Relay::Into(out))).await;
                                if let Modern::Json(b) | Modern::Refused(b) = answer {
                                    session.events.push(out, b);
                                }
                                session.events.finish(out);
                            })
                            .detach();
                            return Modern::Stream(handed, out);
                        }
                        _ => {}
                    },
                    (None, _) => {
                        drop(parsed);
                        return Modern::Json(restore(&self.method, &self.id, message));
                    }
                }
            }
            let requests: Vec<(String, Bytes)> = asked
                .iter()
                .map(|(k, _, r)| (k.clone(), r.clone()))
                .collect();
            let id = self.id.clone();
            let round = Round {
                session: self.session,
                stream,
                after,
                method: self.method,
                name: self.name,
                keys: asked.into_iter().map(|(k, p, _)| (k, p)).collect(),
                requests: requests.clone(),
                created: Instant::now(),
            };
            let token = shard.bridge().keep_round(shard.id, round);
            if token.is_empty() {
                return Modern::Json(jsonrpc::error_body(
                    Some(&id),
                    code::INTERNAL_ERROR,
                    "the server asked for input but the proxy could not keep the round (no randomness)",
                ));
            }
            Modern::Json(stateless::input_required(&id, &requests, &token))
        })
    }
}

/// A retry carrying `inputResponses` for a round: answers go to the upstream that asked, and
/// the call goes on.
async fn continuation(
    shard: &Rc<Shard>,
    id: Id,
    method: &str,
    msg: &Value<'_>,
    token: &str,
    sse: bool,
    client: Option<&Identity>,
) -> Modern {
    // A round answered with other credentials is treated as unknown (and stays kept for its
    // owner): a leaked requestState gives no one else the call.
    let owned = shard
        .bridge()
        .rounds
        .borrow()
        .get(token)
        .map(|r| r.session.auth.owned_by(client));
    let round = match owned {
        Some(true) => shard.bridge().rounds.borrow_mut().remove(token),
        _ => None,
    };
    let Some(round) = round else {
        return Modern::Json(jsonrpc::error_body(
            Some(&id),
            code::INVALID_PARAMS,
            "requestState names no pending round (it expired, was already used, or was altered); call again without requestState",
        ));
    };
    let params = msg.get("params");
    let name = stateless::named_field(method)
        .and_then(|f| params.and_then(|p| p.get_str(f)))
        .map(str::to_owned);
    if round.method != method || round.name != name {
        return Modern::Json(jsonrpc::error_body(
            Some(&id),
            code::INVALID_PARAMS,
            &format!(
                "requestState belongs to {} {}, not to this request; retry the original request with it",
                round.method,
                round.name.as_deref().unwrap_or("")
            ),
        ));
    }
    let responses = params.and_then(|p| p.get("inputResponses"));
    let mut missing = Vec::new();
    for ((key, proxy_id), request) in round.keys.iter().zip(&round.requests) {
        match responses.and_then(|r| r.get(key.as_str())) {
            Some(value) => {
                let mut answer = Vec::with_capacity(64);
                answer.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
                proxy_id.write_json(&mut answer);
                answer.extend_from_slice(b",\"result\":");
                answer.extend_from_slice(value.encode().as_bytes());
                answer.push(b'}');
                deliver(&round.session, proxy_id, answer).await;
            }
            None => missing.push((key.clone(), proxy_id.clone(), request.1.clone())),
        }
    }
    if !missing.is_empty() {
        // MRTR: what was not answered is asked again rather than failing the call.
        let requests: Vec<(String, Bytes)> = missing
            .iter()
            .map(|(k, _, r)| (k.clone(), r.clone()))
            .collect();
        let again = Round {
            keys: missing.into_iter().map(|(k, p, _)| (k, p)).collect(),
            requests: requests.clone(),
            created: Instant::now(),
            ..round
        };
        let token = shard.bridge().keep_round(shard.id, again);
        return Modern::Json(stateless::input_required(&id, &requests, &token));
    }
    let call = Bridged {
        session: round.session,
        stream: round.stream,
        id,
        method: round.method,
        name: round.name,
    };
    call.follow(shard, round.after, sse.then_some(Relay::Open))
        .await
}

/// Hands one answer to the upstream request it is for.
async fn deliver(session: &Rc<Session>, proxy_id: &Id, mut answer: Vec<u8>) {
    if let Ok(parsed) = jsonrpc::parse(&mut answer) {
        crate::mcp::routing::forward::client_response(session, proxy_id, parsed).await;
    }
}

/// Puts the client's id back on an answer and dresses it for the stateless era.
fn restore(method: &str, id: &Id, body: Bytes) -> Bytes {
    stateless::modernize_response(method, Some(id), body)
}
