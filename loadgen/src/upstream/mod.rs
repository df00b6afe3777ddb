//! `mcp-loadgen upstream`: a fast MCP server on Streamable HTTP at `/mcp`, with faults on demand.
//!
//! # Layout
//! - this file: the listener, one task per connection, the Streamable HTTP rules (sessions,
//!   202 for notifications, JSON or SSE answers) and crash-after;
//! - [`methods`]: what each MCP method answers (tools `echo`, `get-sum`, `slow`, a prompt, a
//!   resource, `ping`);
//! - [`faults`]: latency distributions, error and stall rates.
//!
//! # Behaviour
//! - Stateful (default): `initialize` issues an `Mcp-Session-Id`; any other POST without one gets
//!   400, with one this process did not issue 404 (so a restarted upstream forgets sessions, as
//!   a real one would). Ids are `<process secret>-<thread>-<counter>`: any thread can check one
//!   without shared state. Stateless: no session ids at all.
//! - GET (server stream) and DELETE (end session) get 405, which the spec allows.
//! - Injected errors (`--error-rate`) are JSON-RPC -32603 with HTTP 200 by default, or HTTP 500
//!   with the same JSON-RPC body with `--error-kind http`.
//! - Injected front-end failures (`--http-error-rate`, `--http-error-status`, 503 by default)
//!   answer any POST, initialize and notifications included, with that status and a text body
//!   (503 with `Retry-After: 1`, or `--retry-after VALUE` with any status) before anything of
//!   MCP is read, as a broken load balancer or an overloaded front end would; with
//!   `--log-requests` each one logs `http-error STATUS` instead of a request line (the server
//!   never saw it). `--http-error-after N` serves the first N POSTs (of the process) normally,
//!   so a replica can start failing under sessions already open on it.
//! - A stalled request is never answered; the connection stays open until the client closes it.
//! - `--crash-after N`: the process exits (status 3) right after writing its Nth HTTP response
//!   (every POST counts, notifications and a gateway's discovery requests included).
//! - `--crash-on TOOL,...`: the process exits (status 3) as soon as it has read a `tools/call` of
//!   one of these tools, before answering: the request reached this upstream and was never
//!   answered, which is what a gateway must not blindly retry.
//! - `--id NAME`: the server name in `initialize` becomes `mcp-loadgen-upstream:NAME` and a tool
//!   `whoami` (annotated read-only and idempotent) answers NAME, so tests can tell replicas apart.
//! - `--log-requests`: one stderr line per request read, `mcp-loadgen upstream[NAME]: request
//!   METHOD [TOOL]`, written before the request is handled, so tests can count what reached it.

pub mod faults;
pub mod methods;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};
use mcp_proxy::http::{encode_event, Limits, Method, Request, ServerConn};
use mcp_proxy::protocol::jsonrpc::{self, code, Id, Kind};
use simd_json::prelude::*;

use faults::{Decision, ErrorKind, Faults, Rng};
use methods::Outcome;

/// How answers to requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerMode {
    /// One `application/json` body.
    Json,
    /// A `text/event-stream` with one event carrying the answer (chunked).
    Sse,
}

/// Everything the upstream is told on the command line.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// JSON or SSE answers.
    pub mode: AnswerMode,
    /// No session ids when true.
    pub stateless: bool,
    /// Injected faults.
    pub faults: Faults,
    /// Exit after writing this many responses.
    pub crash_after: Option<u64>,
    /// Executor threads (each binds the same port).
    pub threads: usize,
    /// Reported by `whoami` and in the server name.
    pub id: Option<String>,
    /// Print every request and notification read to stderr.
    pub log_requests: bool,
    /// Exit on reading a `tools/call` of one of these tools.
    pub crash_on: Vec<String>,
}

/// Why the upstream could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The executors could not start.
    #[error("cannot start executors: {0}")]
    Executors(String),
}

/// A started upstream.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The executor threads.
    handles: glommio::PoolThreadHandles<()>,
}

impl Running {
    /// The MCP endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Blocks until the server stops (it does not, short of a crash or a signal).
    pub fn join(self) {
        for r in self.handles.join_all() {
            if let Err(e) = r {
                eprintln!("mcp-loadgen upstream: a thread stopped: {e}");
            }
        }
    }
}

/// What every thread shares.
struct Shared {
    /// The settings.
    config: UpstreamConfig,
    /// Random per process, so ids from an earlier process are unknown here.
    secret: String,
    /// Answers written so far, for crash-after.
    answered: AtomicU64,
    /// POSTs to `/mcp` read so far, for `--http-error-after`.
    posts: AtomicU64,
}

/// What one thread owns.
struct Local {
    /// What all threads share.
    shared: Arc<Shared>,
    /// This thread's number, part of the session ids it issues.
    thread: usize,
    /// Counter for the session ids this thread issues.
    next_session: Cell<u64>,
    /// Draws for fault decisions.
    rng: std::cell::RefCell<Rng>,
    /// HTTP limits for reading requests.
    limits: Limits,
}

/// Binds the address and starts serving; returns once every thread listens.
pub fn start(config: UpstreamConfig) -> Result<Running, UpstreamError> {
    let addr = resolve_port(config.listen)?;
    let threads = config.threads.max(1);
    let mut rng = Rng::from_entropy();
    let shared = Arc::new(Shared {
        secret: format!("{:016x}", rng.next_u64()),
        config,
        answered: AtomicU64::new(0),
        posts: AtomicU64::new(0),
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), UpstreamError>>();
    let counter = Arc::new(AtomicU64::new(0));
    let handles = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(threads))
        .name("mcp-loadgen-upstream")
        .on_all_shards(move || {
            let (shared, ready, counter) = (shared.clone(), ready_tx.clone(), counter.clone());
            async move {
                let thread = counter.fetch_add(1, Ordering::Relaxed) as usize;
                let listener = match TcpListener::bind(addr) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready.send(Err(UpstreamError::Bind {
                            addr,
                            source: e.into(),
                        }));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                let local = Rc::new(Local {
                    shared,
                    thread,
                    next_session: Cell::new(0),
                    rng: std::cell::RefCell::new(Rng::from_entropy()),
                    limits: Limits::default(),
                });
                accept_loop(listener, local).await;
            }
        })
        .map_err(|e| UpstreamError::Executors(e.to_string()))?;
    for _ in 0..threads {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(UpstreamError::Executors("a thread died at start".into())),
        }
    }
    Ok(Running { addr, handles })
}

/// Port 0 is resolved once up front so that every thread binds the same real port.
fn resolve_port(addr: SocketAddr) -> Result<SocketAddr, UpstreamError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe =
        std::net::TcpListener::bind(addr).map_err(|source| UpstreamError::Bind { addr, source })?;
    probe
        .local_addr()
        .map_err(|source| UpstreamError::Bind { addr, source })
}

async fn accept_loop(listener: TcpListener, local: Rc<Local>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(stream, local.clone())).detach();
            }
            Err(e) => {
                eprintln!("mcp-loadgen upstream: accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A response to write: status, extra header, body, and whether it goes out as SSE.
struct Answer {
    /// HTTP status.
    status: u16,
    /// `Mcp-Session-Id` to set (initialize answers).
    session: Option<String>,
    /// The body (a JSON-RPC message, or empty).
    body: Vec<u8>,
    /// Whether to send the body as one SSE event.
    sse: bool,
    /// An injected front-end failure: a text body, no JSON-RPC.
    gateway: bool,
    /// Its `Retry-After`.
    retry_after: Option<String>,
}

impl Answer {
    fn plain(status: u16, body: Vec<u8>) -> Answer {
        Answer {
            status,
            session: None,
            body,
            sse: false,
            gateway: false,
            retry_after: None,
        }
    }

    /// What a failing load balancer answers: the status, a line of text, and for 503 a
    /// `Retry-After`, as proxies such as Envoy and nginx send.
    fn gateway(status: u16, retry_after: Option<&str>) -> Answer {
        Answer {
            gateway: true,
            retry_after: retry_after.map(str::to_owned),
            ..Answer::plain(
                status,
                format!("mcp-loadgen upstream: injected HTTP {status} (--http-error-rate)\n")
                    .into_bytes(),
            )
        }
    }
}

/// Serves one connection until it closes.
async fn serve(stream: TcpStream, local: Rc<Local>) {
    let _ = stream.set_nodelay(true);
    let mut conn = ServerConn::new(stream);
    loop {
        let request = match conn.read_request(&local.limits).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                if let Some(status) = e.status() {
                    let _ = conn.write_response(status, &[], b"", false).await;
                }
                return;
            }
        };
        let keep_alive = request.keep_alive;
        let answer = match handle(&local, &request).await {
            Some(a) => a,
            None => {
                // A stall: never answer; hold the connection until the client gives up.
                let patient = Limits {
                    idle_timeout: Duration::from_secs(3600),
                    ..local.limits.clone()
                };
                let _ = conn.read_request(&patient).await;
                return;
            }
        };
        let written = write(&mut conn, &answer, keep_alive).await;
        count_answer(&local.shared);
        if written.is_err() || !keep_alive {
            return;
        }
    }
}

async fn write(
    conn: &mut ServerConn<TcpStream>,
    a: &Answer,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(2);
    if let Some(s) = &a.session {
        headers.push(("Mcp-Session-Id", s));
    }
    if a.gateway {
        headers.push(("Content-Type", "text/plain"));
        if let Some(value) = &a.retry_after {
            headers.push(("Retry-After", value));
        }
        return conn
            .write_response(a.status, &headers, &a.body, keep_alive)
            .await;
    }
    if a.sse {
        headers.push(("Content-Type", "text/event-stream"));
        headers.push(("Cache-Control", "no-cache"));
        conn.start_stream(a.status, &headers, keep_alive).await?;
        conn.write_chunk(&encode_event(None, &a.body)).await?;
        conn.finish_stream().await
    } else {
        if !a.body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        conn.write_response(a.status, &headers, &a.body, keep_alive)
            .await
    }
}

/// Counts one written response and exits once `--crash-after` is reached.
fn count_answer(shared: &Shared) {
    let n = shared.answered.fetch_add(1, Ordering::AcqRel) + 1;
    if shared.config.crash_after.is_some_and(|limit| n >= limit) {
        eprintln!("mcp-loadgen upstream: exiting after {n} answers (--crash-after)");
        std::process::exit(3);
    }
}

/// Whether `id` was issued by this process.
fn known_session(local: &Local, id: &str) -> bool {
    id.strip_prefix(local.shared.secret.as_str())
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| {
            rest.split_once('-')
                .is_some_and(|(t, n)| t.parse::<u64>().is_ok() && n.parse::<u64>().is_ok())
        })
}

fn rpc_error(status: u16, id: Option<&Id>, code: i32, message: &str) -> Answer {
    Answer::plain(status, jsonrpc::error_body(id, code, message).to_vec())
}

/// Handles one request; None means "stall: never answer".
async fn handle(local: &Local, request: &Request) -> Option<Answer> {
    if request.path() != "/mcp" {
        return Some(Answer::plain(404, Vec::new()));
    }
    if request.method != Method::Post {
        return Some(Answer::plain(405, Vec::new()));
    }
    let config = &local.shared.config;
    // The front end fails the POST before the server reads it: nothing of MCP is looked at.
    let earlier = local.shared.posts.fetch_add(1, Ordering::AcqRel);
    if let Some(status) = config.faults.gateway(&mut local.rng.borrow_mut(), earlier) {
        if config.log_requests {
            eprintln!(
                "mcp-loadgen upstream[{}]: http-error {status}",
                config.id.as_deref().unwrap_or("")
            );
        }
        return Some(Answer::gateway(status, config.faults.retry_after(status)));
    }
    let mut body = request.body.to_vec();
    let msg = match jsonrpc::parse(&mut body) {
        Ok(m) => m,
        Err(e) => return Some(rpc_error(400, None, e.code(), &e.to_string())),
    };
    let (id, method) = match jsonrpc::classify(&msg) {
        Ok(Kind::Request { id, method }) => (id, method),
        // Notifications and responses need no answer beyond 202 (after the session check).
        Ok(Kind::Notification { method }) => {
            if local.shared.config.log_requests {
                // The request id a cancellation names, so a test can match it to its call.
                let about = msg
                    .get("params")
                    .and_then(|p| p.get("requestId"))
                    .map(|id| format!(" {id}"))
                    .unwrap_or_default();
                eprintln!(
                    "mcp-loadgen upstream[{}]: notification {method}{about}",
                    local.shared.config.id.as_deref().unwrap_or("")
                );
            }
            return Some(check_session(local, request).unwrap_or(Answer::plain(202, Vec::new())));
        }
        Ok(_) => {
            return Some(check_session(local, request).unwrap_or(Answer::plain(202, Vec::new())))
        }
        Err(e) => return Some(rpc_error(400, None, e.code(), &e.to_string())),
    };
    let sse = config.mode == AnswerMode::Sse;
    let tool = if method == "tools/call" {
        msg.get("params").and_then(|p| p.get_str("name"))
    } else {
        None
    };
    if config.log_requests {
        eprintln!(
            "mcp-loadgen upstream[{}]: request {method}{}{}",
            config.id.as_deref().unwrap_or(""),
            if tool.is_some() { " " } else { "" },
            tool.unwrap_or("")
        );
    }
    if method == "initialize" {
        let params = msg.get("params");
        let version = methods::negotiate(params.and_then(|p| p.get_str("protocolVersion")));
        let session = (!config.stateless).then(|| {
            let n = local.next_session.get();
            local.next_session.set(n + 1);
            format!("{}-{}-{n}", local.shared.secret, local.thread)
        });
        let result = methods::initialize_result(version, config.id.as_deref());
        return Some(Answer {
            status: 200,
            session,
            body: jsonrpc::result_body(&id, &result).to_vec(),
            sse,
            gateway: false,
            retry_after: None,
        });
    }
    if let Some(refused) = check_session(local, request) {
        return Some(refused);
    }
    if let Some(t) = tool.filter(|t| config.crash_on.iter().any(|c| c == t)) {
        eprintln!("mcp-loadgen upstream: exiting on a call of {t} (--crash-on)");
        std::process::exit(3);
    }
    let decision = config.faults.decide(&mut local.rng.borrow_mut());
    let (delay, fail) = match decision {
        Decision::Stall => return None,
        Decision::Answer(d) => (d, false),
        Decision::Fail(d) => (d, true),
    };
    if !delay.is_zero() {
        glommio::timer::sleep(delay).await;
    }
    if fail {
        let status = match config.faults.error_kind {
            ErrorKind::Rpc => 200,
            ErrorKind::Http => 500,
        };
        let mut a = rpc_error(status, Some(&id), code::INTERNAL_ERROR, "injected failure");
        a.sse = sse && status == 200;
        return Some(a);
    }
    let body = match methods::answer(method, msg.get("params"), config.id.as_deref()) {
        Outcome::Result(r) => jsonrpc::result_body(&id, &r),
        Outcome::After(wait, r) => {
            glommio::timer::sleep(wait).await;
            jsonrpc::result_body(&id, &r)
        }
        Outcome::Error(c, m) => jsonrpc::error_body(Some(&id), c, &m),
    };
    Some(Answer {
        status: 200,
        session: None,
        body: body.to_vec(),
        sse,
        gateway: false,
        retry_after: None,
    })
}

/// The refusal for a request whose session is missing (400) or unknown (404); None when fine.
fn check_session(local: &Local, request: &Request) -> Option<Answer> {
    if local.shared.config.stateless {
        return None;
    }
    match request.header("mcp-session-id") {
        None => Some(rpc_error(
            400,
            None,
            code::INVALID_REQUEST,
            "Mcp-Session-Id header is required; send initialize first",
        )),
        Some(id) if !known_session(local, id) => Some(rpc_error(
            404,
            None,
            code::INVALID_REQUEST,
            "unknown session",
        )),
        Some(_) => None,
    }
}
