//! Stateless-era (2026-07-28) clients served through the stateful machinery.
//!
//! A 2026-07-28 request carries the client's capabilities and identity in `_meta` instead of an
//! `initialize`. The proxy serves it through a *bridge session*: a downstream session it keeps
//! itself, one per (capabilities, client identity) on each shard, never named to any client.
//! Its upstream sessions are opened with the client's own capabilities, exactly as for a
//! stateful client, so a stateful upstream sees an ordinary session.
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
use std::collections::HashMap;
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
        "initialize" => Answer::Refused(jsonrpc::error_body(
            Some(&id),
            code::INVALID_REQUEST,
            "initialize belongs to the stateful era: send it without MCP-Protocol-Version 2026-07-28, or call methods directly",
        )),
        "subscriptions/listen" => listen_streams::listen(shard, &id, &msg, client).await,
        "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe" => {
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
