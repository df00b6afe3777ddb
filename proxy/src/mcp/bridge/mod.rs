//! Stateless-era (2026-07-28) clients served through the stateful machinery.
//!
//! A 2026-07-28 request carries the client's capabilities and identity in `_meta` instead of an
//! `initialize`. The proxy serves it through a *bridge session*: a downstream session it keeps
//! itself, one per (principal, capabilities, client identity), never named to any client.
//! Its upstream sessions are opened with the client's own capabilities, exactly as for a
//! stateful client, so a stateful upstream sees an ordinary session.
//!
//! Each such key has one *owner shard* ([`owner`]), a stable hash of the key over the shard
//! count: every request served through a bridge session, and every `subscriptions/listen`, runs
//! there whichever shard accepted its connection (`endpoint::forward` carries it over the mesh
//! and streams the reply back). So a client's listen stream and all its calls share one bridge
//! session and hence one upstream session, and a server that notifies only the session that
//! asked (resource updates, log messages) reaches them.
//!
//! Server-to-client requests (sampling, elicitation, roots) cannot travel to a 2026-07-28 client:
//! they become an `InputRequiredResult` whose `inputRequests` are the upstream's requests and
//! whose `requestState` names a *round* kept here. The upstream call stays open, waiting; the
//! client's retry carries `inputResponses`, which are delivered to the upstream as the
//! answers to its requests, and the proxy goes on reading the same upstream stream. A request
//! the upstream sends on its session's GET stream instead joins the round of a call in flight
//! to it (`mcp::session::calls`). The mapping is documented in `docs/stateless.md`.
//!
//! - [`rounds`]: a bridged call followed to its answer, and the input rounds it raises.
//! - [`listen_streams`]: open `subscriptions/listen` streams (list changes, resource updates).
//! - [`listen`]: the resource subscriptions of `subscriptions/listen` streams, held upstream
//!   through bridge sessions.
//! - [`stateless_upstream`]: a 2026-07-28 upstream's `input_required`, asked of a stateful
//!   client as server-to-client requests.
//!
//! Bridge request ids are proxy-unique (clients all start at 1 and share bridge sessions);
//! the client's id is put back on the answer.

pub mod listen;
pub mod listen_streams;
pub mod rounds;
pub mod stateless_upstream;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use simd_json::prelude::*;

use crate::auth::Identity;
use crate::mcp::routing::forward::Delivery;
use crate::mcp::routing::Answer;
use crate::mcp::session::{Closed, Session};
use crate::protocol::jsonrpc::{self, code, Id, Kind};
use crate::protocol::stateless::{self, Headers};
use crate::protocol::stateless_answer;
use crate::protocol::version;
use crate::shard::Shard;
use listen_streams::Listener;
use rounds::Round;

/// Prefix of the `requestState` tokens the proxy mints: then two hex digits naming the shard
/// holding the round, a dot, and a random part.
const ROUND_PREFIX: &str = "mcp-proxy-round.";
/// How long a round waits for the client's retry.
const ROUND_TTL: Duration = Duration::from_secs(600);
/// Rounds kept per shard; the oldest go first.
const MAX_ROUNDS: usize = 4096;
/// Bridge sessions kept per shard (distinct client capability sets).
const MAX_SESSIONS: usize = 64;
/// The method of log messages, searched for in upstream messages before any parse.
const LOG_METHOD: &str = "\"notifications/message\"";
/// Stateful-era methods 2026-07-28 clients are refused (the era has no session to act on).
const NOT_SERVED: [&str; 4] = [
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];
/// The revision bridge sessions speak to stateful upstreams.
const BRIDGED_VERSION: &str = "2025-11-25";

/// A shard's bridge sessions, the local the bridge keeps on each shard.
pub trait ShardBridge {
    /// This shard's bridge sessions and pending input rounds.
    fn bridge(&self) -> &BridgeSessions;
}

impl ShardBridge for Shard {
    fn bridge(&self) -> &BridgeSessions {
        self.local::<BridgeSessions>()
    }
}

/// Per-shard bridge state.
#[derive(Default)]
pub struct BridgeSessions {
    sessions: RefCell<HashMap<String, Rc<Session>>>,
    rounds: RefCell<HashMap<String, Round>>,
    next_id: Cell<i64>,
    next_session: Cell<u64>,
    listeners: RefCell<Vec<Listener>>,
    /// Bridge sessions whose logging upstreams were asked for every level.
    logging: RefCell<HashSet<String>>,
    /// The open calls that opted in to log messages, by bridge session id.
    log_calls: RefCell<Vec<(String, Rc<rounds::LogTarget>)>>,
    /// Resource subscriptions held upstream for listen streams, through bridge sessions.
    pub(crate) held: listen::Held,
}

impl BridgeSessions {
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
        let key = session_key(caps, info, client);
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
                self.logging.borrow_mut().remove(&old.id);
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
        crate::metrics::bridge_sessions(self.sessions.borrow().len());
        session
    }

    /// Has the upstreams of `session` that log send every level, the first time one of its
    /// clients opts in to log messages (`_meta` logLevel). The session is shared by clients
    /// asking for different levels, so each bridged call filters by its own request's level
    /// rather than the upstream by the last one set; calls without the opt-in get none.
    pub(super) async fn open_logging(&self, shard: &Rc<Shard>, session: &Rc<Session>) {
        if !self.logging.borrow_mut().insert(session.id.clone()) {
            return;
        }
        let mut params = br#"{"params":{"level":"debug"}}"#.to_vec();
        let Ok(msg) = jsonrpc::parse(&mut params) else {
            return;
        };
        let id = self.fresh_id();
        let catalog = shard.catalog();
        crate::mcp::routing::forward::set_level(session, &catalog, &id, &msg).await;
    }

    /// Hands a log message an upstream sent bridge session `bridge` outside any call (on its
    /// GET stream, as server-everything's simulated logging does) to that session's open calls
    /// that opted in to logs, each filtering by its own level: the era delivers log messages
    /// only on a request's own stream. True when the message is a log message (taken, even
    /// when no call is open to receive it: no client reads a bridge session's own stream).
    pub(crate) fn log_to_calls(&self, bridge: &str, message: &Bytes) -> bool {
        if !message
            .windows(LOG_METHOD.len())
            .any(|w| w == LOG_METHOD.as_bytes())
        {
            return false;
        }
        let calls: Vec<Rc<rounds::LogTarget>> = self
            .log_calls
            .borrow()
            .iter()
            .filter(|(b, _)| b == bridge)
            .map(|(_, target)| target.clone())
            .collect();
        for target in calls {
            match &*target {
                rounds::LogTarget::Stream(stream) => {
                    if let Some(session) = self.session_named(bridge) {
                        session.events.push(*stream, message.clone());
                    }
                }
                rounds::LogTarget::Held(held) => held.borrow_mut().push(message.clone()),
            }
        }
        true
    }

    /// The bridge session with this id, if the shard keeps it.
    pub fn session_named(&self, id: &str) -> Option<Rc<Session>> {
        self.sessions
            .borrow()
            .values()
            .find(|s| s.id == id)
            .cloned()
    }

    /// Ends every bridge session (shutdown).
    pub async fn close(&self) {
        for l in self.listeners.borrow_mut().drain(..) {
            l.end();
        }
        self.rounds.borrow_mut().clear();
        self.logging.borrow_mut().clear();
        let sessions: Vec<_> = self.sessions.borrow_mut().drain().map(|(_, s)| s).collect();
        crate::metrics::bridge_sessions(0);
        for s in sessions {
            // Closing the session ends its upstream subscriptions with it.
            self.held.forget(&s.id);
            s.close(Closed::Shutdown).await;
        }
    }
}

/// The key naming a client's bridge session: its principal (clients authenticated as different
/// principals never share one, their policies differ), capabilities and identity.
fn session_key(caps: &str, info: &str, client: Option<&Identity>) -> String {
    let principal: String = client
        .map(|c| c.principal.iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_default();
    format!("{principal}\u{0}{caps}\u{0}{info}")
}

/// The shard that serves a 2026-07-28 request: the shard holding the round a retry continues;
/// for any other request served through a bridge session, the owner shard of the client's
/// session key, so all of one client's calls and listen streams meet in one bridge session;
/// the accepting shard for what no bridge session serves (`server/discover`, the removed
/// methods). `Mcp-Method` says which (a request whose body disagrees is refused wherever it
/// runs).
pub fn owner(shard: &Shard, headers: &Headers, body: &[u8], client: Option<&Identity>) -> usize {
    serving_shard(shard.id, shard.nr_shards, headers, body, client)
}

/// [`owner`] for a request accepted on shard `here` of `shards`.
fn serving_shard(
    here: usize,
    shards: usize,
    headers: &Headers,
    body: &[u8],
    client: Option<&Identity>,
) -> usize {
    let shards = shards.max(1);
    if shards == 1 {
        return here;
    }
    let Some(method) = headers.method.as_deref() else {
        return here;
    };
    if stateless::may_require_input(method) {
        if let Some(n) = round_shard(body) {
            return n % shards;
        }
    }
    if !through_bridge(method) {
        return here;
    }
    let mut buf = body.to_vec();
    let Ok(msg) = jsonrpc::parse(&mut buf) else {
        return here;
    };
    let (caps, info) = stateless::client_meta(&msg);
    let key = session_key(&caps, &info, client);
    // Every shard must name the same owner: a fixed hash (FNV-1a), not a seeded `RandomState`.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % shards as u64) as usize
}

/// Whether requests of `method` are served through the client's bridge session (or, for a
/// listen stream, may hold resource subscriptions through it).
fn through_bridge(method: &str) -> bool {
    !matches!(method, "server/discover" | "initialize") && !NOT_SERVED.contains(&method)
}

/// The shard named in the proxy's round token in `body`, found by a byte search (no parse);
/// `None` when the request continues no round of this proxy.
fn round_shard(body: &[u8]) -> Option<usize> {
    let prefix = ROUND_PREFIX.as_bytes();
    let at = body.windows(prefix.len()).position(|w| w == prefix)?;
    let hex = body.get(at + prefix.len()..at + prefix.len() + 2)?;
    usize::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Serves one POST of the stateless era.
pub async fn handle(
    shard: &Rc<Shard>,
    headers: &Headers,
    body: Bytes,
    sse: bool,
    client: Option<&Identity>,
    received: Instant,
) -> Answer {
    let mut buf = body.to_vec();
    let mut msg = match jsonrpc::parse(&mut buf) {
        Ok(m) => m,
        Err(e) => return Answer::Refused(jsonrpc::error_body(None, e.code(), &e.to_string())),
    };
    let (id, method) = match jsonrpc::classify(&msg) {
        Err(e) => {
            let id = msg.get("id").and_then(Id::from_value);
            return Answer::Refused(jsonrpc::error_body(id.as_ref(), e.code(), &e.to_string()));
        }
        // No client-to-server notification exists over HTTP in this era; taking one is harmless.
        Ok(Kind::Notification { .. }) => return Answer::Accepted,
        Ok(Kind::Response { .. }) => {
            return Answer::Refused(jsonrpc::error_body(
                None,
                code::INVALID_REQUEST,
                "2026-07-28 clients send no responses: answer input requests with inputResponses on a retry",
            ))
        }
        Ok(Kind::Request { id, method }) => (id, method.to_owned()),
    };
    if let Err(why) = stateless::check_headers(headers, &method, &msg) {
        return Answer::Refused(jsonrpc::error_body(
            Some(&id),
            stateless::code::HEADER_MISMATCH,
            &why,
        ));
    }
    if let Err(why) = stateless::check_envelope(&msg) {
        return Answer::Refused(jsonrpc::error_body(Some(&id), code::INVALID_PARAMS, &why));
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
            return Answer::Refused(jsonrpc::error_body(
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
        if !version::is_supported(v) || !stateless::is_stateless_version(v) {
            return Answer::Refused(stateless_answer::unsupported_version(
                Some(&id),
                v,
                &version::ALL,
            ));
        }
    }
    match method.as_str() {
        "server/discover" => restore(
            &method,
            &id,
            jsonrpc::result_body(&id, discover(shard).as_bytes()),
        ),
        // The era removed these methods: a server that does not implement one answers 404
        // with -32601 (basic/index.mdx), `initialize` included.
        "initialize" => Answer::Unknown(jsonrpc::error_body(
            Some(&id),
            code::METHOD_NOT_FOUND,
            "method not found: initialize belongs to the stateful era; send it without MCP-Protocol-Version 2026-07-28, or call methods directly",
        )),
        "subscriptions/listen" => listen_streams::listen(shard, &id, &msg, client).await,
        m if NOT_SERVED.contains(&m) => {
            Answer::Unknown(jsonrpc::error_body(
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
                    rounds::continuation(shard, id, &method, &msg, &token, sse, client).await
                }
                _ => {
                    let delivery = Delivery {
                        accepts_sse: sse,
                        received,
                    };
                    rounds::first_call(shard, id, &method, &mut msg, delivery, client).await
                }
            }
        }
    }
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

/// Puts the client's id back on an answer and dresses it for the stateless era, with the
/// HTTP status its error code calls for (a method no one serves is 404, a refusal 400).
fn restore(method: &str, id: &Id, body: Bytes) -> Answer {
    let dressed = stateless_answer::dress(method, Some(id), body, &server_info());
    match dressed.status {
        404 => Answer::Unknown(dressed.body),
        400 => Answer::Refused(dressed.body),
        _ => Answer::Json(dressed.body),
    }
}

/// The proxy's `Implementation`, as JSON: what 2026-07-28 clients see in `serverInfo`.
fn server_info() -> String {
    format!(
        r#"{{"name":"mcp-proxy","version":"{}"}}"#,
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(method: &str) -> Headers {
        Headers {
            version: Some(stateless::VERSION.to_owned()),
            method: Some(method.to_owned()),
            name: None,
            params: Vec::new(),
        }
    }

    fn call(client_name: &str) -> Vec<u8> {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a__echo","arguments":{{}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}},"io.modelcontextprotocol/clientInfo":{{"name":"{client_name}","version":"1"}}}}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn one_clients_requests_are_served_on_one_shard_whichever_accepted_them() {
        let body = call("alice");
        let owners: HashSet<usize> = (0..4)
            .map(|here| serving_shard(here, 4, &headers("tools/call"), &body, None))
            .collect();
        assert_eq!(owners.len(), 1, "{owners:?}");
        let listen = serving_shard(1, 4, &headers("subscriptions/listen"), &body, None);
        assert!(owners.contains(&listen));
    }

    #[test]
    fn different_clients_spread_over_the_shards() {
        let owners: HashSet<usize> = (0..32)
            .map(|n| serving_shard(0, 4, &headers("tools/call"), &call(&format!("c{n}")), None))
            .collect();
        assert!(owners.len() > 1, "{owners:?}");
    }

    #[test]
    fn what_no_bridge_session_serves_stays_where_it_arrived() {
        for here in 0..4 {
            let at = serving_shard(here, 4, &headers("server/discover"), &call("alice"), None);
            assert_eq!(at, here);
        }
    }

    #[test]
    fn a_retry_goes_to_the_shard_holding_its_round() {
        let retry = br#"{"params":{"requestState":"mcp-proxy-round.03.abc"}}"#;
        assert_eq!(serving_shard(0, 4, &headers("tools/call"), retry, None), 3);
    }
}
