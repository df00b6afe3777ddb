//! The `/mcp` endpoint: Streamable HTTP as clients see it (basic/transports.mdx, 2025-11-25).
//!
//! Header-level checks (path, Origin, method, Accept, protocol version) happen on the shard
//! that accepted the connection; everything that needs the session happens on the session's
//! owner shard, reached over the mesh when that is another shard.

use std::rc::Rc;

use bytes::Bytes;

use super::reply::{reply, Follower};
pub use super::reply::{EventSource, Reply};
use crate::http::{sse, Method, Request, ServerConn};
use crate::mcp::routing::{self, Answer};
use crate::mcp::session::ShardSessions;
use crate::mcp::session::{Position, STANDALONE};
use crate::metrics::Closed;
use crate::protocol::jsonrpc::{self, code, Kind};
use crate::protocol::{stateless, stateless_answer, version};
use crate::shard::drain;
use crate::shard::Shard;

/// The HTTP methods of Streamable HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMethod {
    /// Client-to-server messages.
    Post,
    /// The server-to-client stream.
    Get,
    /// Session end.
    Delete,
}

/// A request reduced to what MCP needs; `Send`, so it can be forwarded to the owner shard.
#[derive(Debug)]
pub struct McpRequest {
    /// POST, GET or DELETE.
    pub method: HttpMethod,
    /// `Mcp-Session-Id`, if sent.
    pub session_id: Option<String>,
    /// `MCP-Protocol-Version`, if sent (already checked to be supported).
    pub protocol_version: Option<String>,
    /// `Last-Event-ID`, for resuming a stream.
    pub last_event_id: Option<String>,
    /// Whether the client takes `text/event-stream` answers.
    pub accepts_sse: bool,
    /// The request-metadata headers when the request speaks the stateless era (2026-07-28).
    pub stateless: Option<stateless::Headers>,
    /// The JSON-RPC message.
    pub body: Bytes,
    /// The authenticated client (`None` with `[auth]` off).
    pub client: Option<crate::auth::Identity>,
    /// The client's credentials, kept in a fleet only: another member serving the session
    /// checks them again.
    pub authorization: Option<super::member_forward::Credentials>,
    /// Whether another member of the fleet forwarded this request (signed): it is served
    /// here, never forwarded again.
    pub from_member: bool,
    /// When the request was read: the proxy's own time on it is counted from here, across a
    /// hop to the owner shard too.
    pub received: std::time::Instant,
}

/// The most a client may send ahead (a pipelined request) while its request is served before
/// the proxy stops reading, and so stops watching for it to leave.
const PIPELINED_KEPT: usize = 64 * 1024;

/// How long a connection closed after an HTTP-level error keeps draining the client's input,
/// so the error response is read before the close (see `ServerConn::linger`).
const ERROR_LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// The most input drained while lingering; a client pushing more is cut off at once.
const ERROR_LINGER_BYTES: usize = 64 * 1024;

/// Serves one client connection (plain or TLS, see `crate::endpoint::accept`) until it closes.
pub async fn serve_connection<S>(shard: Rc<Shard>, stream: S)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    let limits = crate::endpoint::limits::http_limits();
    let mut conn = ServerConn::new(stream);
    loop {
        // A draining shard closes a connection that waits for its next request at once.
        if !conn
            .next_request_begins(limits.idle_timeout, drain::started())
            .await
        {
            return;
        }
        let request = match conn.read_request(&limits).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                if let Some(status) = e.status() {
                    let body = jsonrpc::error_body(None, code::INVALID_REQUEST, &e.to_string());
                    if conn
                        .write_response(
                            status,
                            &[("Content-Type", "application/json")],
                            &body,
                            false,
                        )
                        .await
                        .is_ok()
                    {
                        conn.linger(ERROR_LINGER, ERROR_LINGER_BYTES).await;
                    }
                }
                return;
            }
        };
        let (started, is_post) = (std::time::Instant::now(), request.method == Method::Post);
        let mut opened = None;
        let mut checked = check(&shard, &request);
        if checked.is_err() {
            // A token signed with a key the issuer just rotated in: checked again once the
            // refresh its unknown kid asked for is in force.
            if let Some(keys_fetched) = crate::auth::take_key_wait() {
                keys_fetched.await;
                checked = check(&shard, &request);
            }
        }
        let reply = match checked {
            Ok(mcp) => {
                opened = crate::auth::Opened::of(mcp.client.as_ref());
                let _busy = shard.begin_request();
                // A client that goes away while its request is served takes the work with it:
                // dropping `handle` drops the upstream exchange (the server is told to stop,
                // see `routing::forward`) or, across shards, sends the owner `Abandon`.
                let served = async { Some(handle(&shard, mcp).await) };
                let gone = async {
                    conn.gone(PIPELINED_KEPT).await;
                    None
                };
                match futures_lite::future::or(served, gone).await {
                    Some(reply) => reply,
                    None => return,
                }
            }
            Err(reply) => reply,
        };
        // While draining, every answer is the connection's last.
        let keep_alive = request.keep_alive && !drain::draining();
        // Access ends with the credential: when it expires or a reload stops accepting it.
        let deadline = matches!(reply, Reply::Events { .. })
            .then(|| crate::auth::stream_deadline(opened, request.header("authorization")));
        drop(request);
        let written = match reply {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                conn.write_response(status, &headers, &body, keep_alive)
                    .await
                    .is_ok()
            }
            Reply::Events {
                headers,
                mut source,
            } => {
                let mut all: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                all.push(("Content-Type", "text/event-stream"));
                all.push(("Cache-Control", "no-cache"));
                let counted = crate::metrics::EventStream::open();
                let mut ok = conn.start_stream(200, &all, keep_alive).await.is_ok();
                let mut deadline = deadline.unwrap_or_else(|| sse::Deadline::new(None));
                while ok {
                    // A client that leaves is noticed at once, not at the next write (which
                    // may be a keep-alive 25 s away): its connection is freed.
                    let next = async { Some(deadline.within(source.next()).await.flatten()) };
                    let gone = async {
                        conn.gone(PIPELINED_KEPT).await;
                        None
                    };
                    match futures_lite::future::or(next, gone).await {
                        Some(Some(chunk)) => ok = conn.write_chunk(&chunk).await.is_ok(),
                        Some(None) => break,
                        None => ok = false,
                    }
                }
                let ok = ok && conn.finish_stream().await.is_ok();
                let closed = source.closed();
                counted.end(crate::metrics::StreamEnd::of(deadline.ended(), closed, ok));
                ok
            }
        };
        if is_post {
            crate::metrics::request_done(started);
        }
        if !written || !keep_alive {
            return;
        }
    }
}

/// The header-level checks of the transport, done where the request arrived.
fn check(shard: &Shard, request: &Request) -> Result<McpRequest, Reply> {
    if request.method == Method::Get {
        // RFC 9728: where OAuth clients learn which authorization servers issue tokens for
        // this proxy; public, so any origin may read it.
        if let Some(doc) = crate::auth::oauth::metadata_document(request.path()) {
            return Err(Reply::Full {
                status: 200,
                headers: vec![
                    ("Content-Type", "application/json".into()),
                    ("Access-Control-Allow-Origin", "*".into()),
                ],
                body: doc.into(),
            });
        }
    }
    if request.path() != "/mcp" {
        return Err(Reply::error(
            404,
            code::INVALID_REQUEST,
            "not found: the MCP endpoint is /mcp",
        ));
    }
    if let Some(origin) = request.header("origin") {
        if !shard.config.proxy.origin_allowed(origin) {
            return Err(Reply::error(
                403,
                code::INVALID_REQUEST,
                &format!("origin {origin} is not allowed; add it to [proxy] allowed_origins"),
            ));
        }
    }
    let method = match request.method {
        Method::Post => HttpMethod::Post,
        Method::Get => HttpMethod::Get,
        Method::Delete => HttpMethod::Delete,
        _ => {
            return Err(method_not_allowed(
                "GET, POST, DELETE",
                "method not allowed: use POST, GET or DELETE",
            ))
        }
    };
    let from_member = match request.header(crate::cluster::member_hop::HEADER) {
        None => false,
        Some(hop) => {
            let session = request.header("mcp-session-id").unwrap_or("");
            let links = shard.local::<crate::endpoint::member_forward::MemberLinks>();
            if !links.verify_hop(hop, method, session, &request.body) {
                return Err(Reply::error(
                    403,
                    code::INVALID_REQUEST,
                    "forbidden: Mcp-Proxy-Hop is for requests one proxy member forwards to another; a client must not send it",
                ));
            }
            true
        }
    };
    let client = if from_member {
        // The member that received the request took the client's rate token.
        crate::auth::check_forwarded(|| request.header("authorization"))
    } else {
        crate::endpoint::gate::authenticate(request)
    }
    .map_err(crate::endpoint::gate::refusal)?;
    if request.method == Method::Post {
        crate::auth::check_tool_scope(client.as_ref(), &request.body)
            .map_err(crate::endpoint::gate::refusal)?;
    }
    let protocol_version = request.header("mcp-protocol-version").map(str::to_owned);
    if let Some(v) = protocol_version.as_deref() {
        if !version::is_supported(v) {
            // The era's UnsupportedProtocolVersionError lists both eras, so a client of either
            // can pick one (and a dual-era client knows this server speaks 2026-07-28).
            let id = request_id(&request.body);
            return Err(Reply::json(
                400,
                stateless_answer::unsupported_version(id.as_ref(), v, &version::ALL),
            ));
        }
    }
    let stateless_headers = protocol_version
        .as_deref()
        .filter(|v| stateless::is_stateless_version(v))
        .map(|v| stateless::Headers {
            version: Some(v.to_owned()),
            method: request.header("mcp-method").map(str::to_owned),
            name: request.header("mcp-name").map(str::to_owned),
            params: stateless::param_fields(request.fields().iter()),
        });
    if stateless_headers.is_some() && method != HttpMethod::Post {
        // 2026-07-28 has no GET stream and no session to DELETE.
        return Err(method_not_allowed(
            "POST",
            "method not allowed: 2026-07-28 has no GET stream or sessions; POST requests (subscriptions/listen for change notifications)",
        ));
    }
    let (accepts_json, accepts_sse) = accepts(request);
    match method {
        HttpMethod::Post if !(accepts_json && accepts_sse) => {
            return Err(Reply::error(
                406,
                code::INVALID_REQUEST,
                "not acceptable: a POST must accept both application/json and text/event-stream",
            ))
        }
        HttpMethod::Get if !accepts_sse => {
            return Err(Reply::error(
                406,
                code::INVALID_REQUEST,
                "not acceptable: a GET must accept text/event-stream",
            ))
        }
        HttpMethod::Post => {
            let json = request.header("content-type").is_some_and(|c| {
                c.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
            });
            if !json {
                return Err(Reply::error(
                    415,
                    code::INVALID_REQUEST,
                    "unsupported media type: send Content-Type: application/json",
                ));
            }
        }
        _ => {}
    }
    Ok(McpRequest {
        method,
        // A stateless-era request ignores any session id (streamable-http.mdx).
        session_id: request
            .header("mcp-session-id")
            .filter(|_| stateless_headers.is_none())
            .map(str::to_owned),
        stateless: stateless_headers,
        protocol_version,
        last_event_id: request.header("last-event-id").map(str::to_owned),
        accepts_sse,
        body: request.body.clone(),
        client,
        authorization: crate::cluster::get()
            .and(request.header("authorization"))
            .map(|v| super::member_forward::Credentials(v.to_owned())),
        from_member,
        received: std::time::Instant::now(),
    })
}

/// The id of the request in `body`, when it is a JSON-RPC request that parses: an error
/// decided from the headers alone still names the request it answers.
fn request_id(body: &[u8]) -> Option<jsonrpc::Id> {
    use simd_json::prelude::*;
    let mut buf = body.to_vec();
    let msg = jsonrpc::parse(&mut buf).ok()?;
    msg.get("id").and_then(jsonrpc::Id::from_value)
}

/// Which of JSON and SSE the client's `Accept` headers allow.
fn accepts(request: &Request) -> (bool, bool) {
    let (mut json, mut sse) = (false, false);
    for value in request.headers("accept") {
        for media in value.split(',') {
            let media = media
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            match media.as_str() {
                "*/*" => (json, sse) = (true, true),
                "application/json" | "application/*" => json = true,
                "text/event-stream" | "text/*" => sse = true,
                _ => {}
            }
        }
    }
    (json, sse)
}

/// Serves a checked request here, on the session's owner shard, or on the fleet member
/// serving the session.
pub async fn handle(shard: &Rc<Shard>, request: McpRequest) -> Reply {
    let request = match super::member_forward::to_member(shard, request).await {
        Ok(reply) => return reply,
        Err(here) => here,
    };
    let owner = match request.session_id.as_deref() {
        // A stateless request goes to the shard holding its round or its bridge session.
        None => match &request.stateless {
            Some(h) => crate::mcp::bridge::owner(shard, h, &request.body, request.client.as_ref()),
            None => shard.id,
        },
        Some(id) => match shard.owner_of(id) {
            Some(owner) => owner,
            None => return unknown_session(),
        },
    };
    if owner == shard.id {
        return handle_owned(shard, request).await;
    }
    super::forward::to_owner(shard, owner, request).await
}

/// 405 with the methods this endpoint takes, as a JSON-RPC error.
fn method_not_allowed(allow: &str, message: &str) -> Reply {
    Reply::Full {
        status: 405,
        headers: vec![
            ("Allow", allow.into()),
            ("Content-Type", "application/json".into()),
        ],
        body: jsonrpc::error_body(None, code::INVALID_REQUEST, message),
    }
}

fn unknown_session() -> Reply {
    Reply::error(
        404,
        code::INVALID_REQUEST,
        "session not found: it ended or expired; send initialize to start a new one",
    )
}

fn missing_session() -> Reply {
    Reply::error(
        400,
        code::INVALID_REQUEST,
        "bad request: Mcp-Session-Id header is required; send initialize first",
    )
}

/// Serves a request on the shard that owns its session (or will, for initialize).
pub async fn handle_owned(shard: &Rc<Shard>, request: McpRequest) -> Reply {
    match request.method {
        HttpMethod::Post => post(shard, request).await,
        HttpMethod::Get => get(shard, request),
        HttpMethod::Delete => {
            let Some(id) = request.session_id else {
                return missing_session();
            };
            let Some(session) = shard.find_session(&id) else {
                return unknown_session();
            };
            if let Err(denial) = session.auth.admit(request.client.as_ref()) {
                return crate::endpoint::gate::refusal(denial);
            }
            if shard.end_session(&id, Closed::SessionEnded).await {
                Reply::Full {
                    status: 200,
                    headers: Vec::new(),
                    body: Bytes::new(),
                }
            } else {
                unknown_session()
            }
        }
    }
}

async fn post(shard: &Rc<Shard>, request: McpRequest) -> Reply {
    if let Some(headers) = &request.stateless {
        let answer = crate::mcp::bridge::handle(
            shard,
            headers,
            request.body,
            request.accepts_sse,
            request.client.as_ref(),
            request.received,
        )
        .await;
        return reply(answer, None);
    }
    let Some(session_id) = request.session_id.as_deref() else {
        return sessionless_post(shard, request.body, request.client.as_ref()).await;
    };
    let Some(session) = shard.find_session(session_id) else {
        return unknown_session();
    };
    if let Err(denial) = session.auth.admit(request.client.as_ref()) {
        return crate::endpoint::gate::refusal(denial);
    }
    session.touch();
    let Some(slot) = stream_slot(&session.id) else {
        return too_many_streams();
    };
    let answer = routing::handle(
        shard,
        &session,
        request.body,
        request.accepts_sse,
        request.received,
    )
    .await;
    reply(answer, Some(slot))
}

/// A POST without a session: only `initialize` may open one.
async fn sessionless_post(
    shard: &Rc<Shard>,
    body: Bytes,
    client: Option<&crate::auth::Identity>,
) -> Reply {
    let mut buf = body.to_vec();
    let refused = |body| reply(Answer::Refused(body), None);
    let msg = match jsonrpc::parse(&mut buf) {
        Ok(m) => m,
        Err(e) => return refused(jsonrpc::error_body(None, e.code(), &e.to_string())),
    };
    match jsonrpc::classify(&msg) {
        Err(e) => refused(jsonrpc::error_body(None, e.code(), &e.to_string())),
        Ok(Kind::Request { id, method: "initialize" }) => {
            let opening = match crate::auth::open(client) {
                Ok(opening) => opening,
                Err(denial) => return crate::endpoint::gate::refusal(denial),
            };
            match routing::initialize(shard, &id, &msg, opening) {
                Ok((session, answer)) => Reply::Full {
                    status: 200,
                    headers: vec![("Content-Type", "application/json".into()), ("Mcp-Session-Id", session.id.clone())],
                    body: answer,
                },
                Err(answer) => refused(answer),
            }
        }
        // 2026-07-28 requests are recognized by their MCP-Protocol-Version header; without it
        // this is no request of either era.
        Ok(Kind::Request { id, method: "server/discover" }) => refused(
            jsonrpc::error_body(
                Some(&id),
                code::INVALID_REQUEST,
                "server/discover is a 2026-07-28 method: send it with MCP-Protocol-Version: 2026-07-28 (or initialize for the stateful protocol)",
            ),
        ),
        Ok(_) => missing_session(),
    }
}

fn get(shard: &Rc<Shard>, request: McpRequest) -> Reply {
    let Some(session_id) = request.session_id.as_deref() else {
        return missing_session();
    };
    let Some(session) = shard.find_session(session_id) else {
        return unknown_session();
    };
    if let Err(denial) = session.auth.admit(request.client.as_ref()) {
        return crate::endpoint::gate::refusal(denial);
    }
    session.touch();
    let Some(slot) = stream_slot(&session.id) else {
        return too_many_streams();
    };
    let resume = request
        .last_event_id
        .as_deref()
        .and_then(Position::parse)
        .filter(|p| session.events.contains(p.stream));
    let (stream, after) = match resume {
        Some(p) => (p.stream, p.seq),
        None => (STANDALONE, session.events.delivered(STANDALONE)),
    };
    Reply::Events {
        headers: Vec::new(),
        source: EventSource::Follow(Follower::new(session, stream, after).holding(slot)),
    }
}

/// A stream slot of the session, within `[limits] max_streams_per_session`.
fn stream_slot(id: &str) -> Option<crate::endpoint::limits::StreamSlot> {
    crate::endpoint::limits::stream_slot(id, crate::endpoint::limits::max_streams_per_session())
}

fn too_many_streams() -> Reply {
    let max = crate::endpoint::limits::max_streams_per_session();
    Reply::Full {
        status: 429,
        headers: vec![("Content-Type", "application/json".into()), ("Retry-After", "1".into())],
        body: jsonrpc::error_body(
            None,
            code::INVALID_REQUEST,
            &format!("too many open streams in this session (limit {max}): close a GET stream or wait for a request to finish (or raise [limits] max_streams_per_session)"),
        ),
    }
}
