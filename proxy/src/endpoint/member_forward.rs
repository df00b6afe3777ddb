//! A request for a session another member of the fleet serves: sent there over HTTP, its
//! reply streamed back as it arrives.
//!
//! The session id names its owner member; [`Routes::serving`] says who serves it now (the
//! owner, or its successor once the owner is gone). A request for another member is sent to
//! its advertise address on this shard, with the project's HTTP client and a keep-alive pool
//! per member ([`crate::upstream::pool::Pool`]), signed as a member hop
//! ([`crate::cluster::member_hop`]) so the receiver serves it itself. An SSE reply (a GET
//! stream, a streamed answer) is relayed chunk by chunk, unbuffered; `Last-Event-ID` goes
//! along. A member that cannot be reached (connection refused, connect timeout) is left out
//! and the session goes to the next in line, which may be this member: it then restores the
//! session from its sealed id and takes it over.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::http::{HttpMethod, McpRequest, Reply};
use super::reply::EventSource;
use crate::cluster::member_hop::{self, HopKey};
use crate::cluster::member_routes::{self, RouteMember, Routes, Target};
use crate::config::{BalanceConfig, Config, ReplicaConfig, ServerConfig, Transport, UpstreamUrl};
use crate::http::{ClientConn, OwnedBody};
use crate::mcp::session::ShardSessions;
use crate::metrics::Closed;
use crate::protocol::jsonrpc::code;
use crate::shard::Shard;
use crate::tls::UpstreamStream;
use crate::upstream::pool::Pool;

/// How long a member may take to accept a connection before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The headers of a member's reply passed on to the client (the framing ones are the
/// client connection's own).
const PASSED: [&str; 6] = [
    "Content-Type",
    "Mcp-Session-Id",
    "WWW-Authenticate",
    "Retry-After",
    "Allow",
    "Access-Control-Allow-Origin",
];

/// The client's `Authorization` header, kept for the member serving its session (which checks
/// it again); never printed.
pub struct Credentials(pub String);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(redacted)")
    }
}

/// A shard's way to the other members: the routes in force and a pool per member.
pub struct MemberLinks {
    routes: RefCell<Arc<Routes>>,
    pools: RefCell<HashMap<u32, (RouteMember, Rc<Pool>)>>,
    hop: Option<HopKey>,
    /// This member's tag, in the hops it signs.
    this: u32,
}

impl MemberLinks {
    /// The links of a member of the fleet `config` names (none for a single instance).
    pub fn new(config: &Config) -> MemberLinks {
        let cluster = crate::cluster::get();
        let hop = cluster
            .and(config.proxy.session_key.as_deref())
            .and_then(|k| crate::config::session_key::key_bytes(k).ok())
            .map(|k| HopKey::new(&k));
        MemberLinks {
            routes: RefCell::new(Arc::new(Routes::default())),
            pools: RefCell::new(HashMap::new()),
            hop,
            this: cluster.map_or(0, |c| member_routes::member_tag(&c.identity.name)),
        }
    }

    /// Whether `value` of the hop header signs this request.
    pub fn verify_hop(&self, value: &str, method: HttpMethod, session: &str, body: &[u8]) -> bool {
        self.hop
            .as_ref()
            .is_some_and(|k| k.verify(value, unix_now(), method_name(method), session, body))
    }

    fn pool(&self, member: &RouteMember) -> Rc<Pool> {
        let mut pools = self.pools.borrow_mut();
        if let Some((known, pool)) = pools.get(&member.tag) {
            if known == member {
                return pool.clone();
            }
        }
        let mut url = member.url.clone();
        // Connect to the address the control thread resolved: a shard never looks names up
        // (with TLS the name stays, for the certificate check).
        if let (false, Some(addr)) = (url.tls, member.addr) {
            url.host = addr.ip().to_string();
            url.port = addr.port();
        }
        let pool = Rc::new(member_pool(&member.name, url));
        pools.insert(member.tag, (member.clone(), pool.clone()));
        pool
    }
}

/// A pool of connections to one member's MCP listener at `url`.
fn member_pool(name: &str, url: UpstreamUrl) -> Pool {
    let config = ServerConfig {
        name: format!("member {name}"),
        prefix: String::new(),
        transport: Transport::Http {
            replicas: Vec::new(),
            headers: Vec::new(),
        },
        balance: BalanceConfig::default(),
        timeout: Duration::MAX,
        connect_timeout: CONNECT_TIMEOUT,
        tags: Vec::new(),
        tls: None,
        // Unused: the pool only connects; what is spoken is the proxy's own /mcp.
        era: Default::default(),
    };
    let replica = ReplicaConfig {
        url,
        weight: 1,
        drain: false,
    };
    Pool::new(&config, &[replica])
}

/// Follows the routes the cluster's control thread publishes, on every shard of a member.
pub async fn follow_routes(shard: Rc<Shard>) {
    if crate::cluster::get().is_none() {
        return;
    }
    let published = member_routes::subscribe();
    while let Ok(routes) = published.recv_async().await {
        *shard.local::<MemberLinks>().routes.borrow_mut() = routes.clone();
        // A session this member took over (or its own, once it is detached) that another
        // member serves now is let go, so its client's streams follow it there.
        shard
            .let_go_sessions(|id| {
                crate::mcp::session::token::member_of(id)
                    .is_some_and(|owner| routes.serving(owner, id, &[]) != Target::Here)
            })
            .await;
    }
}

/// Sends `request` to the member serving its session, if that is another member; gives the
/// request back when it is to be served here.
pub async fn to_member(shard: &Rc<Shard>, request: McpRequest) -> Result<Reply, McpRequest> {
    if request.from_member {
        return Err(request);
    }
    let Some(id) = request.session_id.clone() else {
        return Err(request);
    };
    let Some(owner) = crate::mcp::session::token::member_of(&id) else {
        return Err(request);
    };
    let links = shard.local::<MemberLinks>();
    let Some(hop) = &links.hop else {
        return Err(request);
    };
    let routes = links.routes.borrow().clone();
    let mut unreachable = Vec::new();
    loop {
        let member = match routes.serving(owner, &id, &unreachable) {
            Target::Here => return Err(request),
            Target::Member(m) => m,
        };
        let signed = hop.sign(
            links.this,
            unix_now(),
            method_name(request.method),
            &id,
            &request.body,
        );
        match send(&links.pool(member), &request, &signed).await {
            Ok(reply) => return Ok(reply),
            Err(Failed::Unreachable(why)) => {
                log::warn!(
                    "member {} unreachable ({why}); its sessions go to the next member in line",
                    member.name
                );
                unreachable.push(member.tag);
            }
            Err(Failed::Broken(why)) => {
                log::warn!("member {} failed while answering: {why}", member.name);
                return Ok(Reply::error(
                    502,
                    code::INTERNAL_ERROR,
                    &format!(
                        "the proxy member serving this session ({}) failed while answering; retry the request",
                        member.name
                    ),
                ));
            }
        }
    }
}

enum Failed {
    /// Never reached: nothing was sent, or the connection broke before any answer and the
    /// member answers nothing now (it died).
    Unreachable(String),
    /// The request was sent, the answer did not come whole.
    Broken(String),
}

async fn send(pool: &Rc<Pool>, request: &McpRequest, hop: &str) -> Result<Reply, Failed> {
    let pooled = pool.checkout(0);
    let reused = pooled.is_some();
    let mut conn = match pooled {
        Some(c) => c,
        None => connect(pool).await?,
    };
    match exchange(&mut conn, request, hop).await {
        Ok(head) => finish(pool, conn, head).await,
        // A kept connection the member closed meanwhile: once more on a fresh one.
        Err(_) if reused => {
            let mut conn = connect(pool).await?;
            match exchange(&mut conn, request, hop).await {
                Ok(head) => finish(pool, conn, head).await,
                Err(e) => Err(gone_or_broken(pool, e).await),
            }
        }
        Err(e) => Err(gone_or_broken(pool, e).await),
    }
}

/// A request that got no answer at all: the member is gone unless it still answers a request.
/// A connection alone proves nothing: a member that was killed keeps completing handshakes for
/// some milliseconds after its process is reaped (its listeners close only when the kernel
/// tears down its io_uring), then resets them.
async fn gone_or_broken(pool: &Pool, why: String) -> Failed {
    if answers(pool).await {
        Failed::Broken(why)
    } else {
        Failed::Unreachable(why)
    }
}

/// Whether the member answers a request within [`CONNECT_TIMEOUT`]. Any answer will do: a
/// member's 404 for a path it does not serve is proof enough that it is alive.
async fn answers(pool: &Pool) -> bool {
    let probe = async {
        let Ok(mut conn) = pool.connect(0).await else {
            return Ok(false);
        };
        if conn
            .send("GET", "mcp-proxy-member", "/", &[], None)
            .await
            .is_err()
        {
            return Ok(false);
        }
        let head = conn
            .read_response_head(&crate::http::Limits::default())
            .await;
        Ok(head.is_ok())
    };
    glommio::timer::timeout(CONNECT_TIMEOUT, probe)
        .await
        .unwrap_or(false)
}

async fn connect(pool: &Pool) -> Result<ClientConn<UpstreamStream>, Failed> {
    pool.connect(0)
        .await
        .map_err(|e| Failed::Unreachable(e.to_string()))
}

async fn exchange(
    conn: &mut ClientConn<UpstreamStream>,
    request: &McpRequest,
    hop: &str,
) -> Result<crate::http::ResponseHead, String> {
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(8);
    if let Some(id) = request.session_id.as_deref() {
        headers.push(("Mcp-Session-Id", id));
    }
    if let Some(v) = request.protocol_version.as_deref() {
        headers.push(("MCP-Protocol-Version", v));
    }
    if let Some(v) = request.last_event_id.as_deref() {
        headers.push(("Last-Event-ID", v));
    }
    if let Some(v) = &request.authorization {
        headers.push(("Authorization", v.0.as_str()));
    }
    headers.push((member_hop::HEADER, hop));
    let body = match request.method {
        HttpMethod::Post => {
            headers.push(("Accept", "application/json, text/event-stream"));
            headers.push(("Content-Type", "application/json"));
            Some(&request.body[..])
        }
        HttpMethod::Get => {
            headers.push(("Accept", "text/event-stream"));
            None
        }
        HttpMethod::Delete => {
            headers.push(("Accept", "application/json, text/event-stream"));
            None
        }
    };
    let host = "mcp-proxy-member";
    conn.send(method_name(request.method), host, "/mcp", &headers, body)
        .await
        .map_err(|e| e.to_string())?;
    conn.read_response_head(&crate::http::Limits::default())
        .await
        .map_err(|e| e.to_string())
}

async fn finish(
    pool: &Pool,
    mut conn: ClientConn<UpstreamStream>,
    head: crate::http::ResponseHead,
) -> Result<Reply, Failed> {
    let streaming = head
        .header("content-type")
        .is_some_and(|t| t.trim_start().starts_with("text/event-stream"));
    let headers: Vec<(&'static str, String)> = PASSED
        .iter()
        .filter(|name| !(streaming && **name == "Content-Type"))
        .filter_map(|name| head.header(name).map(|v| (*name, v.to_owned())))
        .collect();
    if streaming {
        return Ok(Reply::Events {
            headers,
            source: EventSource::Member(Box::new(MemberEvents::new(conn.into_body(&head)))),
        });
    }
    let limit = crate::http::Limits::default().max_body_bytes;
    let body = conn
        .body(&head)
        .read_to_end(limit)
        .await
        .map_err(|e| Failed::Broken(e.to_string()))?;
    if conn.reusable() {
        pool.checkin(0, conn);
    }
    Ok(Reply::Full {
        status: head.status,
        headers,
        body,
    })
}

/// An SSE reply relayed from the member serving the session.
pub struct MemberEvents {
    body: OwnedBody<UpstreamStream>,
    /// The last bytes relayed, enough to tell how the member ended the stream.
    tail: Vec<u8>,
    closed: Option<Closed>,
}

/// Bytes of the relayed stream kept to read its end: a `retry` event with any number.
const TAIL: usize = 32;

impl MemberEvents {
    fn new(body: OwnedBody<UpstreamStream>) -> MemberEvents {
        MemberEvents {
            body,
            tail: Vec::with_capacity(2 * TAIL),
            closed: None,
        }
    }

    /// The next chunk as the member sent it; `None` at the end.
    pub async fn next(&mut self) -> Option<Bytes> {
        if self.closed.is_some() {
            return None;
        }
        match self.body.next_chunk().await {
            Ok(Some(chunk)) => {
                self.tail
                    .extend_from_slice(&chunk[chunk.len().saturating_sub(TAIL)..]);
                let excess = self.tail.len().saturating_sub(TAIL);
                self.tail.drain(..excess);
                Some(chunk)
            }
            Ok(None) => {
                // The member ends a stream for SSE polling, and only then, with a `retry`
                // event of its own (`reply::Follower`).
                self.closed = Some(if ends_with_retry(&self.tail) {
                    Closed::Polling
                } else {
                    Closed::Finished
                });
                None
            }
            Err(e) => {
                // The member went away mid-stream: the client resumes with Last-Event-ID.
                log::debug!("a stream relayed from another member broke: {e}");
                self.closed = Some(Closed::SessionEnded);
                None
            }
        }
    }

    /// Why the stream ended, once it has.
    pub fn closed(&self) -> Option<Closed> {
        self.closed
    }
}

/// Whether an SSE stream's last event is a lone `retry` field (`retry: 1000\n\n`).
fn ends_with_retry(tail: &[u8]) -> bool {
    let Some(event) = tail.strip_suffix(b"\n\n") else {
        return false;
    };
    let start = event
        .windows(2)
        .rposition(|w| w == b"\n\n")
        .map_or(0, |at| at + 2);
    let event = &event[start..];
    event.strip_prefix(b"retry:").is_some_and(|ms| {
        !ms.trim_ascii().is_empty() && ms.trim_ascii().iter().all(u8::is_ascii_digit)
    })
}

fn method_name(method: HttpMethod) -> &'static str {
    match method {
        HttpMethod::Post => "POST",
        HttpMethod::Get => "GET",
        HttpMethod::Delete => "DELETE",
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_at(port: u16) -> Pool {
        let url = UpstreamUrl::parse(&format!("http://127.0.0.1:{port}/mcp")).expect("url");
        member_pool("m", url)
    }

    #[test]
    fn a_relayed_stream_ended_by_a_retry_event_ended_for_polling() {
        assert!(ends_with_retry(b"retry: 1000\n\n"));
        assert!(ends_with_retry(b"id: 0-1\ndata:\n\nretry: 5\n\n"));
        assert!(!ends_with_retry(b"id: 0-1\ndata: {}\n\n"));
        assert!(!ends_with_retry(b"data: retry: 5\n\n"));
        assert!(!ends_with_retry(b"retry: 5\n\nid: 0-2\ndata: {}\n\n"));
        assert!(!ends_with_retry(b"retry: soon\n\n"));
        assert!(!ends_with_retry(b""));
    }

    #[test]
    fn a_member_that_answers_anything_is_alive() {
        crate::http::run_glommio(|| async {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            glommio::spawn_local(async move {
                if let Ok(stream) = listener.accept().await {
                    let mut conn = crate::http::ServerConn::new(stream);
                    if let Ok(Some(_)) = conn.read_request(&crate::http::Limits::default()).await {
                        let _ = conn.write_response(404, &[], b"not found", true).await;
                    }
                }
            })
            .detach();
            assert!(answers(&pool_at(port)).await);
        });
    }

    /// What a killed member looks like for some milliseconds: its listener still completes
    /// handshakes, and then closes the connections without a word.
    #[test]
    fn a_member_that_takes_connections_but_never_answers_is_gone() {
        // Handshakes complete in the backlog of a listener nobody accepts from.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let silent_port = silent.local_addr().expect("addr").port();
        // Connections accepted and closed at once.
        let closing = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closing_port = closing.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in closing.incoming() {
                drop(stream);
            }
        });
        // Nothing listening at all.
        let refused_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("addr")
            .port();
        let gone = crate::http::run_glommio(move || async move {
            let mut gone = Vec::new();
            for port in [silent_port, closing_port, refused_port] {
                gone.push(!answers(&pool_at(port)).await);
            }
            gone
        });
        drop(silent);
        assert_eq!(gone, [true, true, true]);
    }
}
