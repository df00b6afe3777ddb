//! HTTP exchanges with one upstream server, over a per-shard keep-alive pool.
//!
//! Each shard owns its own pool (no sharing, no locks). Node-based servers close idle
//! keep-alive connections after 5 s, so pooled connections are retired after
//! [`POOL_IDLE`] and a reused connection that fails before any byte of the answer arrives
//! is retried once on a fresh one: the server closed it while idle, so it never saw the request.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::net::TcpStream;

use crate::tls::UpstreamStream;

use crate::balance::panic::{self, Mode};
use crate::balance::{Picker, ReplicaStats, RetryBudget, Traffic, Transition};
use crate::config::{ReplicaConfig, ServerConfig, Strategy, Transport, UpstreamUrl};
use crate::metrics::ProbeOutcome;
use glommio::channels::local_channel::LocalReceiver;

use super::deadline::{self, AnswerDeadline};
use crate::http::{ClientConn, HttpError, Limits, OwnedBody, ResponseHead, SseParser};
use crate::protocol::stateless::ParamHeader;
use crate::shard::mesh::Stream;
use crate::upstream::handle::StdioPart;

/// How long an idle pooled connection is trusted (below Node's 5 s keep-alive timeout).
pub const POOL_IDLE: Duration = Duration::from_secs(4);
/// Idle connections kept per server per shard.
const POOL_MAX_IDLE: usize = 64;
/// Upper bound on a JSON answer or one SSE event from an upstream.
const MAX_UPSTREAM_MESSAGE: usize = 16 * 1024 * 1024;

/// Why an exchange with an upstream failed, and whether repeating it elsewhere is safe.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made: the request never left the proxy.
    #[error("cannot connect to upstream {server} at {addr}: {source}")]
    Connect {
        /// The server's configured name.
        server: String,
        /// host:port tried.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The connection broke or timed out after the request was written.
    #[error("upstream {server} failed mid-exchange: {detail}")]
    Exchange {
        /// The server's configured name.
        server: String,
        /// What went wrong.
        detail: String,
    },
    /// The upstream did not answer within its timeout.
    #[error("upstream {server} did not answer within {timeout:?}")]
    Timeout {
        /// The server's configured name.
        server: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The upstream no longer knows the session (404, or 400 naming the session).
    #[error("upstream {server} lost the session")]
    SessionLost {
        /// The server's configured name.
        server: String,
    },
    /// The upstream answered with an HTTP error status.
    #[error("upstream {server} answered HTTP {status}: {body}")]
    Status {
        /// The server's configured name.
        server: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body, for the error message.
        body: String,
        /// The pause its `Retry-After` asked for (503, 429), if any.
        pause: Option<Duration>,
    },
    /// The upstream answered something that is not Streamable HTTP.
    #[error("upstream {server} broke the protocol: {detail}")]
    Protocol {
        /// The server's configured name.
        server: String,
        /// What was wrong.
        detail: String,
    },
}

/// True for the HTTP statuses that say the replica, not the request, failed: 502 Bad Gateway,
/// 503 Service Unavailable and 504 Gateway Timeout (what Envoy calls gateway failures). They
/// count against the replica's circuit like a refused connection. 500 is deliberately not one:
/// it is the application's own answer to this request (a handler that threw), and a replica
/// that answers it is up and reachable; ejecting it would move healthy traffic off a server
/// whose other tools work.
pub fn is_gateway_failure(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// True when an answer with `status`, whose `Retry-After` asked for `pause`, says the replica
/// failed: a gateway failure, or a 429 that asks for a pause. The proxy is a replica's one
/// client, so "too many requests, retry after N" is about all the work it sends there; a 429
/// without one says nothing of when to come back and stays the request's own error.
pub fn is_replica_status(status: u16, pause: Option<Duration>) -> bool {
    is_gateway_failure(status) || (status == 429 && pause.is_some())
}

impl UpstreamError {
    /// True when the replica itself failed (no answer, broken or overloaded), as opposed to
    /// the server refusing the request.
    pub fn is_replica_failure(&self) -> bool {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::Exchange { .. }
            | UpstreamError::Timeout { .. } => true,
            UpstreamError::Status { status, pause, .. } => is_replica_status(*status, *pause),
            _ => false,
        }
    }

    /// True when the request certainly never reached the upstream, so sending it again is safe.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. } | UpstreamError::SessionLost { .. }
        )
    }
}

/// What a POST returned, with the session id the upstream assigned (on initialize).
pub struct PostReply {
    /// `Mcp-Session-Id` from the response, if any.
    pub session_id: Option<String>,
    /// The body, by kind.
    pub body: ReplyBody,
}

/// The three answers Streamable HTTP allows to a POST.
pub enum ReplyBody {
    /// 202: a notification or response was taken.
    Accepted,
    /// One JSON-RPC message.
    Json(Bytes),
    /// An SSE stream of messages.
    Stream(Box<MessageStream>),
}

struct Idle {
    conn: ClientConn<UpstreamStream>,
    since: Instant,
}

/// One replica's address and idle connections.
struct Replica {
    url: UpstreamUrl,
    idle: RefCell<Vec<Idle>>,
}

/// One upstream server as seen from one shard: its replicas, their connection pools and this
/// shard's view of how each is doing.
pub struct UpstreamClient {
    /// Index of the server in the registry.
    pub index: usize,
    /// Its configuration.
    pub config: ServerConfig,
    replicas: Vec<Replica>,
    /// This shard's latency, load and failure statistics, by replica.
    pub stats: Vec<ReplicaStats>,
    /// This shard's picking state for the server.
    pub picker: Picker,
    /// The strategy in force: the configured one until `balance_load` changes it live.
    strategy: Cell<Strategy>,
    /// Retries this shard may still spend on the server.
    pub retry_budget: RetryBudget,
    /// Upstream latency histogram of each replica (time to the response head).
    latency: Vec<metrics::Histogram>,
    /// The same latencies kept on this shard for exact per-replica quantiles (allocated on
    /// the first sample): the one source the admin API and the fleet views read, kept as
    /// long as the replica's other statistics.
    replica_latency: Vec<RefCell<Option<hdrhistogram::Histogram<u64>>>>,
    /// `mcp_proxy_balancer_picks_total` of each replica.
    pick_counters: Vec<metrics::Counter>,
    /// This shard's panic state for the server (`balance::panic`).
    panic: panic::Watch,
    /// `mcp_proxy_health_probes_total` of each replica, by outcome.
    probe_counters: Vec<crate::metrics::fleet::ProbeCounters>,
    headers: Vec<(String, String)>,
    limits: Limits,
    /// Client TLS configuration for `https://` replicas (built once; none without any).
    tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
    /// The server's protocol era as this shard found it: `None` until first probed,
    /// `Some(true)` for 2026-07-28 (stateless), `Some(false)` for the stateful era.
    pub modern: std::cell::Cell<Option<bool>>,
    /// The `x-mcp-header` annotations of the server's tools, by upstream tool name, from the
    /// catalog this shard serves (only tools that have some).
    pub tool_params: RefCell<std::collections::HashMap<String, Vec<ParamHeader>>>,
}

impl UpstreamClient {
    /// A client with an empty pool.
    pub fn new(index: usize, config: ServerConfig, replicas: &[ReplicaConfig]) -> Rc<Self> {
        let headers = config.headers().to_vec();
        let stats = replicas
            .iter()
            .map(|r| ReplicaStats::new(r.weight, r.drain))
            .collect();
        let urls: Vec<String> = replicas.iter().map(|r| r.url.to_string()).collect();
        crate::metrics::fleet::register_replicas(&config.name, &urls);
        let latency = urls
            .iter()
            .map(|u| crate::metrics::replica_latency(&config.name, u))
            .collect();
        let replica_latency = replicas.iter().map(|_| RefCell::new(None)).collect();
        let pick_counters = urls
            .iter()
            .map(|u| crate::metrics::fleet::picks(&config.name, u))
            .collect();
        let panic = panic::Watch::new(&config.name);
        let probe_counters = urls
            .iter()
            .map(|u| crate::metrics::fleet::ProbeCounters::new(&config.name, u))
            .collect();
        let replicas: Vec<Replica> = replicas
            .iter()
            .map(|r| Replica {
                url: r.url.clone(),
                idle: RefCell::new(Vec::new()),
            })
            .collect();
        let tls = replicas
            .iter()
            .any(|r| r.url.tls)
            .then(|| crate::tls::client_config(config.tls.as_ref()).map_err(|e| e.to_string()));
        let limits = Limits {
            max_body_bytes: MAX_UPSTREAM_MESSAGE,
            head_timeout: config.timeout,
            body_timeout: config.timeout,
            ..Limits::default()
        };
        Rc::new(UpstreamClient {
            index,
            strategy: Cell::new(config.balance.strategy),
            config,
            replicas,
            stats,
            picker: Picker::default(),
            retry_budget: RetryBudget::default(),
            latency,
            replica_latency,
            pick_counters,
            panic,
            probe_counters,
            headers,
            limits,
            tls,
            modern: std::cell::Cell::new(None),
            tool_params: RefCell::default(),
        })
    }

    /// The server's name, for errors and logs.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Number of replicas.
    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// A replica's URL, for logs and errors.
    pub fn replica_url(&self, replica: usize) -> String {
        self.replicas
            .get(replica)
            .map(|r| r.url.to_string())
            .unwrap_or_default()
    }

    /// Records one client request sent to `replica`: counted, and when it was answered
    /// (`error` is `None`), its upstream latency (time to the response head) recorded.
    pub fn record_request(&self, replica: usize, took: Duration, error: Option<&UpstreamError>) {
        if let Some(stats) = self.stats.get(replica) {
            stats.served(error.is_none());
        }
        if error.is_some() {
            return;
        }
        if let Some(h) = self.latency.get(replica) {
            h.record(took.as_secs_f64());
        }
        if let Some(slot) = self.replica_latency.get(replica) {
            crate::metrics::latency::record_into(&mut slot.borrow_mut(), took);
        }
    }

    /// This shard's latency histogram of `replica` (microseconds), if it recorded any.
    pub fn replica_latency(&self, replica: usize) -> Option<hdrhistogram::Histogram<u64>> {
        self.replica_latency.get(replica)?.borrow().clone()
    }

    /// Picks a replica for new work (a new session binding, or a stateless request).
    pub fn pick(&self, exclude: Option<usize>) -> Option<usize> {
        let now = Instant::now();
        let mode = self.balancer_mode(now);
        let picked = self
            .picker
            .pick_in(mode, self.strategy.get(), &self.stats, exclude, now);
        if let Some(r) = picked.and_then(|r| self.stats.get(r)) {
            r.picked();
            self.panic.let_through(!r.available(now));
        }
        if let Some(c) = picked.and_then(|r| self.pick_counters.get(r)) {
            c.increment(1);
        }
        picked
    }

    /// Which replicas may take work now (`balance::panic`).
    pub fn balancer_mode(&self, now: Instant) -> Mode {
        self.panic.mode(self.name(), &self.stats, now)
    }

    /// True when `replica` may take new work now (a session bound or opened there).
    pub fn takes_new_work(&self, replica: usize, now: Instant) -> bool {
        self.stats.get(replica).is_some_and(|r| {
            let mode = || self.balancer_mode(now);
            r.available(now) || self.panic.let_through(mode().takes_new_work(r, now))
        })
    }

    /// True when the sessions already on `replica` may go on using it.
    pub fn serves(&self, replica: usize, now: Instant) -> bool {
        self.stats.get(replica).is_some_and(|r| {
            r.usable(now)
                || self
                    .panic
                    .let_through(self.balancer_mode(now).serves(r, now))
        })
    }

    /// The balancing strategy in force.
    pub fn strategy(&self) -> Strategy {
        self.strategy.get()
    }

    /// Takes `next`'s strategy and weights in place when that is all that differs from this
    /// client's configuration, so sessions, pools and statistics carry on; false otherwise
    /// (the caller then replaces the client).
    pub fn retune(&self, next: &ServerConfig) -> bool {
        let weights = |c: &ServerConfig| match &c.transport {
            Transport::Http { replicas, .. } => replicas.iter().map(|r| r.weight).collect(),
            Transport::Stdio(_) => Vec::new(),
        };
        let mut same = next.clone();
        same.balance.strategy = self.config.balance.strategy;
        if let Transport::Http { replicas, .. } = &mut same.transport {
            for (r, w) in replicas.iter_mut().zip(weights(&self.config)) {
                r.weight = w;
            }
        }
        if same != self.config {
            return false;
        }
        self.strategy.set(next.balance.strategy);
        for (stats, w) in self.stats.iter().zip(weights(next)) {
            stats.weight.set(w.max(1));
        }
        true
    }

    /// Records a replica's answer (or failure, with its message and the pause it asked for) to
    /// an exchange and logs what that changed; `timed_out` when it got no answer in time.
    fn record(
        &self,
        replica: usize,
        traffic: Traffic,
        started: Instant,
        failure: Option<String>,
        pause: Option<Duration>,
        timed_out: bool,
    ) {
        let now = Instant::now();
        let ok = failure.is_none();
        let stats = &self.stats[replica];
        note_failure(stats, now, failure, pause);
        let threshold = self.config.balance.failover_threshold;
        let change = if timed_out {
            stats.timed_out(traffic, now - started, threshold, now)
        } else {
            stats.end(traffic, now - started, ok, threshold, now)
        };
        self.transition(replica, change);
    }

    /// Exports and logs a change of `replica`'s circuit.
    fn transition(&self, replica: usize, change: Transition) {
        match change {
            Transition::Ejected(pause) => {
                crate::metrics::fleet::circuit(self.name(), &self.replica_url(replica), true);
                log::warn!(
                    "replica {replica} of {} ({}) ejected for {pause:?} after consecutive failures",
                    self.name(),
                    self.replica_url(replica)
                )
            }
            Transition::Restored => {
                crate::metrics::fleet::circuit(self.name(), &self.replica_url(replica), false);
                log::info!(
                    "replica {replica} of {} ({}) answers again",
                    self.name(),
                    self.replica_url(replica)
                )
            }
            Transition::None => return,
        }
        self.balancer_mode(Instant::now());
    }

    fn checkout(&self, replica: usize) -> Option<ClientConn<UpstreamStream>> {
        let mut idle = self.replicas[replica].idle.borrow_mut();
        while let Some(mut entry) = idle.pop() {
            if entry.since.elapsed() < POOL_IDLE && still_open(entry.conn.get_mut()) {
                return Some(entry.conn);
            }
        }
        None
    }

    fn checkin(&self, replica: usize, conn: ClientConn<UpstreamStream>) {
        let mut idle = self.replicas[replica].idle.borrow_mut();
        if idle.len() < POOL_MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self, replica: usize) -> Result<ClientConn<UpstreamStream>, UpstreamError> {
        let url = &self.replicas[replica].url;
        let addr = if url.host.contains(':') {
            format!("[{}]:{}", url.host, url.port)
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let stream = TcpStream::connect_timeout(addr.as_str(), self.config.connect_timeout)
            .await
            .map_err(|e| UpstreamError::Connect {
                server: self.config.name.clone(),
                addr: addr.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        // Requests are small and latency-bound; Nagle would hold them back.
        let _ = stream.set_nodelay(true);
        if !url.tls {
            return Ok(ClientConn::new(UpstreamStream::Plain(stream)));
        }
        let failed = |detail: String| UpstreamError::Connect {
            server: self.config.name.clone(),
            addr: addr.clone(),
            source: std::io::Error::other(detail),
        };
        let config = match &self.tls {
            Some(Ok(config)) => config.clone(),
            Some(Err(e)) => return Err(failed(format!("TLS settings unusable: {e}"))),
            None => {
                return Err(failed(
                    "no TLS configuration for an https:// replica".into(),
                ))
            }
        };
        // The handshake shares the connect budget: both are "reaching the server".
        let handshake = glommio::timer::timeout(self.config.connect_timeout, async {
            Ok(crate::tls::connect(config, &url.host, stream).await)
        })
        .await;
        match handshake {
            Ok(Ok(tls)) => Ok(ClientConn::new(tls)),
            Ok(Err(e)) => Err(failed(format!("TLS handshake failed: {e}"))),
            Err(_) => Err(failed(format!(
                "TLS handshake not finished within {:?}",
                self.config.connect_timeout
            ))),
        }
    }

    /// Sends one request to `replica` and reads the response head, reusing a pooled connection
    /// when possible. Any HTTP answer counts as the replica being alive except a gateway
    /// failure (502, 503, 504), which counts against its circuit like a refused connection:
    /// a replica behind a broken load balancer answers quickly and would otherwise keep its
    /// share of traffic forever.
    ///
    /// Only [`Traffic::Client`] exchanges are latency samples for the balancer; the proxy's
    /// own count for the circuit alone (see [`Traffic`]).
    async fn exchange(
        &self,
        replica: usize,
        traffic: Traffic,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<(ClientConn<UpstreamStream>, ResponseHead), UpstreamError> {
        let started = Instant::now();
        self.stats[replica].begin();
        // Dropped with this future (the caller's task cancelled) before the answer came, the
        // exchange would otherwise stay in flight for good and the replica look loaded.
        let mut pending = Pending(Some(&self.stats[replica]));
        let result = self.exchange_on(replica, method, headers, body).await;
        pending.0 = None;
        let (failure, pause) = match &result {
            Err(e) => (Some(e.to_string()), None),
            Ok((_, head)) => match replica_failure(head) {
                Some(pause) => (Some(self.gateway_failure(head)), pause),
                None => (None, None),
            },
        };
        let timed_out = matches!(result, Err(UpstreamError::Timeout { .. }));
        self.record(replica, traffic, started, failure, pause, timed_out);
        result
    }

    /// The message of a gateway failure known from its head alone (the body, when it is read,
    /// refines it: see `status_error`).
    fn gateway_failure(&self, head: &ResponseHead) -> String {
        let retry_after = head
            .header("retry-after")
            .map(|v| format!(" (Retry-After: {v})"))
            .unwrap_or_default();
        format!(
            "upstream {} answered HTTP {}{retry_after}",
            self.name(),
            head.status
        )
    }

    async fn exchange_on(
        &self,
        replica: usize,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<(ClientConn<UpstreamStream>, ResponseHead), UpstreamError> {
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + self.headers.len());
        all.extend_from_slice(headers);
        for (k, v) in &self.headers {
            all.push((k.as_str(), v.as_str()));
        }
        if let Some(mut conn) = self.checkout(replica) {
            match self.send_on(replica, &mut conn, method, &all, body).await {
                Ok(head) => return Ok((conn, head)),
                // A stale pooled connection: the peer closed it while it sat idle.
                Err(e) if e.nothing_received => log::debug!(
                    "upstream {}: stale pooled connection: {}",
                    self.name(),
                    e.error
                ),
                Err(e) => return Err(self.exchange_error(e.error)),
            }
        }
        let mut conn = self.connect(replica).await?;
        let head = self
            .send_on(replica, &mut conn, method, &all, body)
            .await
            .map_err(|e| self.exchange_error(e.error))?;
        Ok((conn, head))
    }

    async fn send_on(
        &self,
        replica: usize,
        conn: &mut ClientConn<UpstreamStream>,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<ResponseHead, SendFailure> {
        let url = &self.replicas[replica].url;
        if let Err(e) = conn
            .send(method, &url.authority, &url.path, headers, body)
            .await
        {
            return Err(SendFailure {
                nothing_received: true,
                error: HttpError::Io(e),
            });
        }
        // The first byte of the answer has no deadline in the HTTP layer: the server's own
        // timeout is the policy for how long it may think.
        let head = glommio::timer::timeout(self.config.timeout, async {
            Ok(conn.read_response_head(&self.limits).await)
        })
        .await
        .unwrap_or(Err(HttpError::Timeout("head")));
        head.map_err(|error| SendFailure {
            // The request was written: if the connection now breaks, the server may have read
            // it, so this is not a stale connection to retry blindly (pooled connections are
            // checked for a peer close before use).
            nothing_received: false,
            error,
        })
    }

    fn exchange_error(&self, e: HttpError) -> UpstreamError {
        let server = self.config.name.clone();
        match e {
            HttpError::Timeout(_) => UpstreamError::Timeout {
                server,
                timeout: self.config.timeout,
            },
            other => UpstreamError::Exchange {
                server,
                detail: other.to_string(),
            },
        }
    }

    fn mcp_headers<'a>(
        accept: &'a str,
        session_id: Option<&'a str>,
        version: Option<&'a str>,
        extra: Option<(&'a str, &'a str)>,
    ) -> Vec<(&'a str, &'a str)> {
        let mut h = vec![("Accept", accept)];
        if let Some(s) = session_id {
            h.push(("Mcp-Session-Id", s));
        }
        if let Some(v) = version {
            h.push(("MCP-Protocol-Version", v));
        }
        if let Some(x) = extra {
            h.push(x);
        }
        h
    }

    /// POSTs one JSON-RPC message to `replica` within `session_id` (none for initialize);
    /// `traffic` says whether it carries a client's request (see [`Traffic`]).
    pub async fn post(
        self: &Rc<Self>,
        replica: usize,
        traffic: Traffic,
        session_id: Option<&str>,
        version: Option<&str>,
        body: &[u8],
    ) -> Result<PostReply, UpstreamError> {
        self.post_with(replica, traffic, session_id, version, &[], body)
            .await
    }

    /// [`post`](Self::post) with more headers (the 2026-07-28 `Mcp-Method` and `Mcp-Name`).
    pub async fn post_with(
        self: &Rc<Self>,
        replica: usize,
        traffic: Traffic,
        session_id: Option<&str>,
        version: Option<&str>,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Result<PostReply, UpstreamError> {
        let mut headers = Self::mcp_headers(
            "application/json, text/event-stream",
            session_id,
            version,
            None,
        );
        headers.extend_from_slice(extra);
        headers.push(("Content-Type", "application/json"));
        // The server's timeout bounds the whole answer, its body or stream included.
        let deadline = AnswerDeadline::start(self.config.timeout);
        let (mut conn, head) = self
            .exchange(replica, traffic, "POST", &headers, Some(body))
            .await?;
        let new_session = head.header("mcp-session-id").map(str::to_owned);
        let status = head.status;
        if status == 202 || status == 204 {
            self.finish_small(replica, conn, &head).await;
            return Ok(PostReply {
                session_id: new_session,
                body: ReplyBody::Accepted,
            });
        }
        if !(200..300).contains(&status) {
            return Err(self
                .status_error(replica, conn, &head, session_id.is_some())
                .await);
        }
        let content_type = head
            .header("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            return Ok(PostReply {
                session_id: new_session,
                body: ReplyBody::Stream(Box::new(MessageStream::sse(
                    SseMessages::new(self.clone(), replica, conn, head, Some(deadline))
                        .resumable(session_id.zip(version)),
                ))),
            });
        }
        // A body shorter than its Content-Length, or trickling, must not hold the client past
        // the deadline; the connection is dropped with it (its framing is lost).
        let body = deadline
            .within(conn.body(&head).read_to_end(MAX_UPSTREAM_MESSAGE))
            .await
            .unwrap_or(Err(HttpError::Timeout("body")))
            .map_err(|e| self.exchange_error(e))?;
        if conn.reusable() {
            self.checkin(replica, conn);
        }
        if body.is_empty() {
            return Ok(PostReply {
                session_id: new_session,
                body: ReplyBody::Accepted,
            });
        }
        Ok(PostReply {
            session_id: new_session,
            body: ReplyBody::Json(body),
        })
    }

    /// An active health check: a `ping` outside any session. Any HTTP answer within `limit`
    /// but a gateway failure (502, 503, 504) counts as alive (stateful servers rightly refuse a
    /// sessionless ping with 400).
    ///
    /// A check is not client traffic: it goes around [`Self::exchange`], so it adds nothing
    /// to the replica's requests, load or latency (nor to the balancer's average); it is
    /// counted on its own (`mcp_proxy_health_probes_total`, the replica's `probes`) and its
    /// outcome still opens or closes the circuit.
    pub async fn probe(self: &Rc<Self>, replica: usize, limit: Duration) -> bool {
        let body = br#"{"jsonrpc":"2.0","id":"mcp-proxy-health","method":"ping"}"#;
        let headers = [
            ("Accept", "application/json, text/event-stream"),
            ("Content-Type", "application/json"),
        ];
        let exchange = async {
            Ok(self
                .exchange_on(replica, "POST", &headers, Some(body))
                .await)
        };
        let mut pause = None;
        let (outcome, error) = match glommio::timer::timeout(limit, exchange).await {
            // A gateway failure is not a sign of life: were it one, every check would close
            // the circuit that the replica's 503s to client requests just opened.
            Ok(Ok((conn, head))) => match replica_failure(&head) {
                Some(asked) => {
                    pause = asked;
                    let message = self.gateway_failure(&head);
                    self.finish_small(replica, conn, &head).await;
                    (ProbeOutcome::Unavailable, Some(message))
                }
                None => {
                    self.finish_small(replica, conn, &head).await;
                    (ProbeOutcome::Ok, None)
                }
            },
            Ok(Err(e)) => {
                let outcome = match e {
                    UpstreamError::Timeout { .. } => ProbeOutcome::Timeout,
                    _ => ProbeOutcome::Unavailable,
                };
                (outcome, Some(e.to_string()))
            }
            Err(_) => (
                ProbeOutcome::Timeout,
                Some(format!(
                    "health check of upstream {} got no answer within {limit:?}",
                    self.name()
                )),
            ),
        };
        if let Some(c) = self.probe_counters.get(replica) {
            c.count(outcome);
        }
        let Some(stats) = self.stats.get(replica) else {
            return false;
        };
        let now = Instant::now();
        note_failure(stats, now, error, pause);
        let threshold = self.config.balance.failover_threshold;
        let ok = outcome == ProbeOutcome::Ok;
        self.transition(replica, stats.probed(ok, threshold, now));
        ok
    }

    /// Opens the GET stream of server-initiated messages; `Ok(None)` when the server offers none (405).
    /// The proxy (re-)opens it on its own, so a failure does not count against the replica's
    /// circuit ([`Traffic::Background`]).
    pub async fn open_stream(
        self: &Rc<Self>,
        replica: usize,
        session_id: &str,
        version: &str,
        last_event_id: Option<&str>,
    ) -> Result<Option<MessageStream>, UpstreamError> {
        let extra = last_event_id.map(|id| ("Last-Event-ID", id));
        let headers =
            Self::mcp_headers("text/event-stream", Some(session_id), Some(version), extra);
        let (conn, head) = self
            .exchange(replica, Traffic::Background, "GET", &headers, None)
            .await?;
        match head.status {
            // The GET stream may rightly stay silent for hours: no idle limit.
            200 => Ok(Some(MessageStream::sse(SseMessages::new(
                self.clone(),
                replica,
                conn,
                head,
                None,
            )))),
            405 => {
                self.finish_small(replica, conn, &head).await;
                Ok(None)
            }
            _ => Err(self.status_error(replica, conn, &head, true).await),
        }
    }

    /// Ends an upstream session (best effort: the upstream may not support DELETE; nobody
    /// waits on it, so a failure does not count against the replica).
    pub async fn delete(self: &Rc<Self>, replica: usize, session_id: &str, version: &str) {
        let headers = Self::mcp_headers(
            "application/json, text/event-stream",
            Some(session_id),
            Some(version),
            None,
        );
        match self
            .exchange(replica, Traffic::Background, "DELETE", &headers, None)
            .await
        {
            Ok((conn, head)) => self.finish_small(replica, conn, &head).await,
            Err(e) => log::debug!("upstream {}: DELETE failed: {e}", self.name()),
        }
    }

    /// Reads a short body and returns the connection to the pool.
    async fn finish_small(
        &self,
        replica: usize,
        mut conn: ClientConn<UpstreamStream>,
        head: &ResponseHead,
    ) {
        let ok = conn.body(head).read_to_end(64 * 1024).await.is_ok();
        if ok && conn.reusable() {
            self.checkin(replica, conn);
        }
    }

    async fn status_error(
        &self,
        replica: usize,
        mut conn: ClientConn<UpstreamStream>,
        head: &ResponseHead,
        had_session: bool,
    ) -> UpstreamError {
        let body = conn
            .body(head)
            .read_to_end(64 * 1024)
            .await
            .unwrap_or_default();
        if conn.reusable() {
            self.checkin(replica, conn);
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let pause = super::retry_after::of(head);
        if is_replica_status(head.status, pause) {
            // `exchange` already counted it against the circuit; the body (a load balancer's
            // "no healthy upstream", say) tells the operator more than the status alone.
            if let Some(stats) = self.stats.get(replica) {
                let message = format!("{}: {}", self.gateway_failure(head), text.trim());
                stats.note_error(Instant::now(), message);
            }
        }
        let server = self.config.name.clone();
        // 404 is the spec's answer for an unknown session; the TypeScript SDK's servers answer
        // 400 instead, so a 400 that mentions the session means the same.
        let lost = had_session
            && (head.status == 404
                || (head.status == 400 && text.to_ascii_lowercase().contains("session")));
        if lost {
            UpstreamError::SessionLost { server }
        } else {
            UpstreamError::Status {
                server,
                status: head.status,
                body: text,
                pause,
            }
        }
    }
}

/// What an answer's head says of the replica: `None` when it is alive (whatever it thinks of
/// the request), `Some(pause)` when it failed, with the pause its `Retry-After` asked for.
fn replica_failure(head: &ResponseHead) -> Option<Option<Duration>> {
    let pause = super::retry_after::of(head);
    is_replica_status(head.status, pause).then_some(pause)
}

/// Keeps what a failed exchange or health check said of `stats`' replica: the message for the
/// operator, and the pause it asked for, before the outcome counts against its circuit.
fn note_failure(
    stats: &ReplicaStats,
    now: Instant,
    failure: Option<String>,
    pause: Option<Duration>,
) {
    if let Some(message) = failure {
        stats.note_error(now, message);
    }
    if let Some(pause) = pause {
        stats.asked_pause(pause, now);
    }
}

/// An exchange in flight on a replica; dropped unsettled, it stops counting as load.
struct Pending<'a>(Option<&'a ReplicaStats>);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(stats) = self.0 {
            stats.abandoned();
        }
    }
}

struct SendFailure {
    nothing_received: bool,
    error: HttpError,
}

/// True when an idle connection's peer has not closed it: a non-blocking peek sees neither
/// end-of-file nor stray bytes. Checked before reuse, so a failure after the request is
/// written can be blamed on the server, not on a stale pool.
fn still_open(stream: &mut UpstreamStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local buffer on a socket this connection owns.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// JSON-RPC messages arriving on an upstream SSE stream, one per `next()`.
pub struct SseMessages {
    client: Rc<UpstreamClient>,
    replica: usize,
    body: Option<OwnedBody<UpstreamStream>>,
    parser: SseParser,
    /// The id of the last event seen, for resuming with `Last-Event-ID`.
    pub last_event_id: Option<String>,
    /// When a request's answer is given up on (none for the GET stream, which may rightly
    /// stay silent for hours).
    deadline: Option<AnswerDeadline>,
    resume: Option<Resume>,
}

/// How to pick up a request's stream the server closed before answering (2025-11-25 lets a
/// server end a stream early after an event id, with a `retry` hint, to shed connections).
struct Resume {
    session_id: String,
    version: String,
    attempts: u32,
    retry: Duration,
}

/// Resumptions of one request's stream before the proxy gives up on the answer.
const MAX_RESUMES: u32 = 3;

impl SseMessages {
    fn new(
        client: Rc<UpstreamClient>,
        replica: usize,
        conn: ClientConn<UpstreamStream>,
        head: ResponseHead,
        deadline: Option<AnswerDeadline>,
    ) -> Self {
        SseMessages {
            client,
            replica,
            body: Some(conn.into_body(&head)),
            parser: SseParser::new(MAX_UPSTREAM_MESSAGE),
            last_event_id: None,
            deadline,
            resume: None,
        }
    }

    /// Lets `next` resume the stream with GET + `Last-Event-ID` if the server ends it early.
    fn resumable(mut self, session: Option<(&str, &str)>) -> Self {
        self.resume = session.map(|(session_id, version)| Resume {
            session_id: session_id.to_owned(),
            version: version.to_owned(),
            attempts: 0,
            retry: Duration::from_secs(1),
        });
        self
    }

    /// The answer has been read: the end of the stream is expected, do not resume it.
    pub fn stop_resuming(&mut self) {
        self.resume = None;
    }

    /// Reopens the stream after its last event; false when that is not possible.
    async fn try_resume(&mut self) -> bool {
        let (Some(resume), Some(last)) = (self.resume.as_mut(), self.last_event_id.as_deref())
        else {
            return false;
        };
        if resume.attempts >= MAX_RESUMES {
            return false;
        }
        resume.attempts += 1;
        glommio::timer::sleep(resume.retry.min(Duration::from_secs(5))).await;
        match self
            .client
            .open_stream(
                self.replica,
                &resume.session_id,
                &resume.version,
                Some(last),
            )
            .await
        {
            Ok(Some(MessageStream {
                source: Source::Sse(mut reopened),
                ..
            })) => {
                self.body = reopened.body.take();
                self.parser = SseParser::new(MAX_UPSTREAM_MESSAGE);
                true
            }
            Ok(_) => false,
            Err(e) => {
                log::debug!(
                    "upstream {}: could not resume a stream: {e}",
                    self.client.name()
                );
                false
            }
        }
    }

    /// The next message's JSON, or `None` when the upstream ended the stream. A request's
    /// stream fails with [`UpstreamError::Timeout`] once its deadline passes, however busy
    /// with keep-alives the server keeps it; a progress notification moves the deadline on.
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        let Some(mut deadline) = self.deadline else {
            return self.next_message().await;
        };
        let next = deadline.next_message(self.next_message()).await;
        self.deadline = Some(deadline);
        match next {
            Ok(got) => got,
            Err(deadline::Expired) => {
                // Whatever was half read is lost with the connection: it cannot be pooled.
                self.body = None;
                self.resume = None;
                Err(UpstreamError::Timeout {
                    server: self.client.config.name.clone(),
                    timeout: deadline.timeout(),
                })
            }
        }
    }

    async fn next_message(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            match self.parser.next_event() {
                Ok(Some(event)) => {
                    if let Some(id) = event.id {
                        self.last_event_id = Some(id);
                    }
                    if let (Some(ms), Some(resume)) = (event.retry, self.resume.as_mut()) {
                        resume.retry = Duration::from_millis(ms);
                    }
                    // Priming events (an id and empty data) and non-message events carry nothing to relay.
                    if event.data.trim().is_empty()
                        || event.event.as_deref().is_some_and(|e| e != "message")
                    {
                        continue;
                    }
                    return Ok(Some(Bytes::from(event.data)));
                }
                Ok(None) => {}
                Err(e) => return Err(self.protocol_error(e.to_string())),
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(None);
            };
            match body.next_chunk().await {
                Ok(Some(bytes)) => self.parser.push(&bytes),
                Ok(None) => {
                    if let Some(conn) = self.body.take().and_then(OwnedBody::into_conn) {
                        self.client.checkin(self.replica, conn);
                    }
                    if self.try_resume().await {
                        continue;
                    }
                    return Ok(None);
                }
                Err(e) => {
                    self.body = None;
                    return Err(self.client.exchange_error(e));
                }
            }
        }
    }

    fn protocol_error(&self, detail: String) -> UpstreamError {
        UpstreamError::Protocol {
            server: self.client.config.name.clone(),
            detail,
        }
    }
}

/// The messages that answer one request: from an upstream's SSE stream, or relayed by the
/// stdio link that owns a child process (locally or from another shard).
pub struct MessageStream {
    source: Source,
    /// The deadline of a relayed answer, with its server's name (an SSE stream keeps its own).
    deadline: Option<(AnswerDeadline, String)>,
}

enum Source {
    Sse(Box<SseMessages>),
    Local(LocalReceiver<Bytes>),
    Remote(Stream<StdioPart>),
}

impl MessageStream {
    fn sse(messages: SseMessages) -> Self {
        MessageStream {
            source: Source::Sse(Box::new(messages)),
            deadline: None,
        }
    }

    /// Messages a stdio link on this shard relays.
    pub fn local(rx: LocalReceiver<Bytes>) -> Self {
        MessageStream {
            source: Source::Local(rx),
            deadline: None,
        }
    }

    /// Messages relayed from the shard that owns a stdio link.
    pub fn remote(rx: Stream<StdioPart>) -> Self {
        MessageStream {
            source: Source::Remote(rx),
            deadline: None,
        }
    }

    /// The same messages, given up on with [`UpstreamError::Timeout`] once `deadline` passes.
    pub fn within(mut self, deadline: AnswerDeadline, server: &str) -> Self {
        self.deadline = Some((deadline, server.to_owned()));
        self
    }

    /// The next message's JSON, or `None` at the end of the answer.
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        let MessageStream { source, deadline } = self;
        let next = async {
            match source {
                Source::Sse(s) => s.next().await,
                Source::Local(rx) => Ok(rx.recv().await),
                Source::Remote(rx) => match rx.next().await {
                    Some(StdioPart::Message(b)) => Ok(Some(b)),
                    _ => Ok(None),
                },
            }
        };
        let Some((deadline, server)) = deadline.as_mut() else {
            return next.await;
        };
        match deadline.next_message(next).await {
            Ok(got) => got,
            Err(deadline::Expired) => Err(UpstreamError::Timeout {
                server: server.clone(),
                timeout: deadline.timeout(),
            }),
        }
    }

    /// The id of the last SSE event seen, for resuming with `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&str> {
        match &self.source {
            Source::Sse(s) => s.last_event_id.as_deref(),
            _ => None,
        }
    }

    /// The answer has been read: the end of the stream is expected, do not resume it.
    pub fn stop_resuming(&mut self) {
        if let Source::Sse(s) = &mut self.source {
            s.stop_resuming();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(strategy: &str, weight: u32, timeout: &str) -> ServerConfig {
        let text = format!(
            "[[servers]]\nname = \"ev\"\nreplicas = [{{ url = \"http://127.0.0.1:1/mcp\" }}, \
             {{ url = \"http://127.0.0.1:2/mcp\", weight = {weight} }}]\n\
             strategy = \"{strategy}\"\ntimeout = \"{timeout}\"\n"
        );
        let config = crate::config::Config::from_toml_str(&text, "t").expect("config");
        config.servers[0].clone()
    }

    #[test]
    fn strategy_and_weights_change_in_place_and_nothing_else_does() {
        let config = server("round_robin", 1, "10s");
        let replicas = match &config.transport {
            Transport::Http { replicas, .. } => replicas.clone(),
            Transport::Stdio(_) => unreachable!("an HTTP server"),
        };
        let client = UpstreamClient::new(0, config, &replicas);
        client.stats[0].picked();
        assert!(client.retune(&server("weighted", 5, "10s")));
        assert_eq!(client.strategy(), Strategy::Weighted);
        assert_eq!(client.stats[1].weight.get(), 5);
        // The statistics are the same objects: nothing was reset.
        assert_eq!(client.stats[0].snapshot(Instant::now()).picks, 1);
        // Any other difference needs a new client.
        assert!(!client.retune(&server("weighted", 5, "3s")));
        assert_eq!(client.stats[1].weight.get(), 5);
    }

    fn status_error(status: u16) -> UpstreamError {
        UpstreamError::Status {
            server: "ev".into(),
            status,
            body: String::new(),
            pause: None,
        }
    }

    #[test]
    fn only_gateway_statuses_are_replica_failures() {
        for status in [502, 503, 504] {
            assert!(is_gateway_failure(status), "{status}");
            assert!(status_error(status).is_replica_failure(), "{status}");
            // The upstream may have acted on it (a 504 is often a handler still running):
            // only requests that are safe to repeat go elsewhere.
            assert!(!status_error(status).never_sent(), "{status}");
        }
        for status in [200, 202, 400, 401, 403, 404, 429, 500, 501, 505] {
            assert!(!is_gateway_failure(status), "{status}");
            assert!(!status_error(status).is_replica_failure(), "{status}");
        }
        // A 429 that asks for a pause is about the replica; a pause on a 500 changes nothing.
        let pause = Some(Duration::from_secs(3));
        assert!(is_replica_status(429, pause) && !is_replica_status(429, None));
        assert!(!is_replica_status(500, pause) && is_replica_status(503, None));
    }

    /// What a test server answers: status, headers and body.
    type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

    /// A one-replica client of an HTTP server on this executor that answers each request with
    /// what `respond` makes of it, keeping connections alive.
    async fn serving(
        threshold: u32,
        respond: impl Fn(&crate::http::Request) -> Answer + 'static,
    ) -> Rc<UpstreamClient> {
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let respond = Rc::new(respond);
        glommio::spawn_local(async move {
            while let Ok(stream) = listener.accept().await {
                let respond = respond.clone();
                glommio::spawn_local(async move {
                    let mut conn = crate::http::ServerConn::new(stream);
                    let limits = Limits::default();
                    while let Ok(Some(request)) = conn.read_request(&limits).await {
                        let (status, headers, body) = respond(&request);
                        let headers: Vec<(&str, &str)> =
                            headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        if conn
                            .write_response(status, &headers, &body, true)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                })
                .detach();
            }
        })
        .detach();
        client_of(port, threshold)
    }

    /// A one-replica client of a server that answers every request with `status` (and a short
    /// text body).
    async fn answering(status: u16, threshold: u32) -> Rc<UpstreamClient> {
        answering_with(status, Some("7"), threshold).await
    }

    /// [`answering`] with this `Retry-After` (or none).
    async fn answering_with(
        status: u16,
        retry_after: Option<&'static str>,
        threshold: u32,
    ) -> Rc<UpstreamClient> {
        serving(threshold, move |_| {
            let mut headers = vec![("Content-Type", "text/plain".to_owned())];
            if let Some(value) = retry_after {
                headers.push(("Retry-After", value.to_owned()));
            }
            (status, headers, b"no healthy upstream".to_vec())
        })
        .await
    }

    /// Sends client requests until the one-replica `client` is ejected (at most `tries`) and
    /// returns how long for, in ms (0: never ejected).
    async fn ejected_after(client: &Rc<UpstreamClient>, tries: u32) -> u64 {
        for _ in 0..tries {
            let sent = client.post(0, Traffic::Client, Some("s"), Some("v"), b"{}");
            assert!(sent.await.is_err(), "an error status is not an answer");
            let s = client.stats[0].snapshot(Instant::now());
            if s.ejected_for_ms > 0 {
                return s.ejected_for_ms;
            }
        }
        0
    }

    #[test]
    fn retry_after_sets_how_long_a_replica_stays_out() {
        crate::http::run_glommio(|| async {
            // Longer than the circuit's own first ejection (5 s): the replica's pause governs.
            let client = answering_with(503, Some("40"), 3).await;
            let out = ejected_after(&client, 3).await;
            assert!((35_000..=40_000).contains(&out), "{out} ms");
            let last = client.stats[0].snapshot(Instant::now()).last_error;
            assert!(last.unwrap_or_default().contains("Retry-After: 40"));

            // 429 with a pause: the replica is out, the error is the replica's.
            let client = answering_with(429, Some("20"), 3).await;
            let error = client
                .post(0, Traffic::Client, Some("s"), Some("v"), b"{}")
                .await
                .err()
                .expect("a 429 is not an answer");
            assert!(error.is_replica_failure(), "{error}");
            let out = ejected_after(&client, 2).await;
            assert!((15_000..=20_000).contains(&out), "{out} ms");

            // A 429 without one stays the request's error and never moves traffic.
            let client = answering_with(429, None, 3).await;
            assert_eq!(ejected_after(&client, 6).await, 0);
            // So does one whose pause is garbage.
            let client = answering_with(429, Some("soon"), 3).await;
            assert_eq!(ejected_after(&client, 6).await, 0);

            // A 503 is a gateway failure whatever its header says: garbage or a date long
            // past leave the circuit's own 5 s; an absurd pause is capped.
            for value in ["soon", "-30", "Sun, 06 Nov 1994 08:49:37 GMT"] {
                let client = answering_with(503, Some(value), 3).await;
                let out = ejected_after(&client, 3).await;
                assert!((1..=5_000).contains(&out), "{value}: {out} ms");
            }
            for value in ["99999999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"] {
                let client = answering_with(503, Some(value), 3).await;
                let out = ejected_after(&client, 3).await;
                let cap = crate::balance::HOLD_MAX.as_millis() as u64;
                assert!((cap - 5_000..=cap).contains(&out), "{value}: {out} ms");
            }
        });
    }

    #[test]
    fn an_exchange_dropped_before_its_answer_is_no_longer_in_flight() {
        crate::http::run_glommio(|| async {
            // A server that reads requests and never answers them.
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            glommio::spawn_local(async move {
                while let Ok(stream) = listener.accept().await {
                    glommio::spawn_local(async move {
                        let mut conn = crate::http::ServerConn::new(stream);
                        while let Ok(Some(_)) = conn.read_request(&Limits::default()).await {}
                    })
                    .detach();
                }
            })
            .detach();
            let client = client_of(port, 3);
            let call = client.post(0, Traffic::Client, Some("s"), Some("v"), b"{}");
            // The client went away: its task, and this exchange with it, is dropped.
            let cut =
                glommio::timer::timeout(Duration::from_millis(200), async { Ok(call.await) }).await;
            assert!(cut.is_err(), "a server that never answers answered");
            let s = client.stats[0].snapshot(Instant::now());
            assert_eq!(s.inflight, 0, "{s:?}");
            // No verdict either way: it neither failed nor answered.
            assert_eq!((s.exchanges, s.consecutive_failures), (0, 0), "{s:?}");
        });
    }

    /// A one-replica client of `127.0.0.1:{port}` ejecting after `threshold` failures.
    fn client_of(port: u16, threshold: u32) -> Rc<UpstreamClient> {
        let text = format!(
            "[[servers]]\nname = \"ev\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n\
             failover_threshold = {threshold}\n"
        );
        let config = crate::config::Config::from_toml_str(&text, "t").expect("config");
        let config = config.servers[0].clone();
        let replicas = match &config.transport {
            Transport::Http { replicas, .. } => replicas.clone(),
            Transport::Stdio(_) => unreachable!("an HTTP server"),
        };
        UpstreamClient::new(0, config, &replicas)
    }

    /// A one-replica client of a minimal stateful MCP server on this executor: it refuses the
    /// `server/discover` probe (400, as a server of the stateful era does), opens session
    /// `s1` on `initialize`, accepts notifications (202) and answers any other request with an
    /// empty result.
    async fn stateful_server(threshold: u32) -> Rc<UpstreamClient> {
        serving(threshold, |request| {
            let message: serde_json::Value =
                serde_json::from_slice(&request.body).unwrap_or_default();
            let id = message["id"].clone();
            let json = || ("Content-Type", "application/json".to_owned());
            match message["method"].as_str().unwrap_or_default() {
                "server/discover" => (400, vec![json()], Vec::new()),
                "initialize" => {
                    let result = serde_json::json!({
                        "jsonrpc": "2.0", "id": id, "result": {
                            "protocolVersion": "2025-06-18",
                            "capabilities": {},
                            "serverInfo": {"name": "t", "version": "1"},
                        },
                    });
                    let headers = vec![json(), ("Mcp-Session-Id", "s1".to_owned())];
                    (200, headers, result.to_string().into_bytes())
                }
                m if m.starts_with("notifications/") => (202, Vec::new(), Vec::new()),
                _ => {
                    let result = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {}});
                    (200, vec![json()], result.to_string().into_bytes())
                }
            }
        })
        .await
    }

    #[test]
    fn session_set_up_and_discovery_are_not_client_traffic() {
        crate::http::run_glommio(|| async {
            let client = stateful_server(3).await;
            let session = super::super::session::UpstreamSession::new(
                client.clone(),
                Bytes::from_static(
                    br#"{"capabilities":{},"clientInfo":{"name":"t","version":"1"}}"#,
                ),
                None,
            );
            // The proxy's own: discover probe, initialize, initialized, then a list as
            // discovery sends it.
            session
                .request("tools/list", b"{}")
                .await
                .expect("tools/list answered");
            let s = client.stats[0].snapshot(Instant::now());
            assert_eq!(
                s.exchanges, 4,
                "discover, initialize, initialized, tools/list: {s:?}"
            );
            assert_eq!((s.requests, s.failures, s.inflight), (0, 0, 0), "{s:?}");
            assert_eq!(s.ewma_us, None, "set-up is no latency sample: {s:?}");
            assert!(client.replica_latency(0).is_none());
            // Client requests are counted, and only they.
            let call = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#;
            for _ in 0..3 {
                session
                    .send(call, false)
                    .await
                    .expect("tools/call answered");
            }
            let s = client.stats[0].snapshot(Instant::now());
            assert_eq!((s.exchanges, s.requests, s.failures), (7, 3, 0), "{s:?}");
            assert!(
                s.ewma_us.is_some(),
                "client calls are latency samples: {s:?}"
            );
            let histogram = client
                .replica_latency(0)
                .expect("client latencies recorded");
            assert_eq!(histogram.len(), 3);
        });
    }

    #[test]
    fn a_failed_session_set_up_still_counts_against_the_circuit() {
        crate::http::run_glommio(|| async {
            // Gateway failures: the discover probe and initialize both answered 503.
            let client = answering(503, 2).await;
            let session = super::super::session::UpstreamSession::new(
                client.clone(),
                Bytes::from_static(b"{}"),
                None,
            );
            let error = session
                .established()
                .await
                .expect_err("503 opens no session");
            assert!(error.is_replica_failure(), "{error}");
            let s = client.stats[0].snapshot(Instant::now());
            assert!(
                s.ejected_for_ms > 0,
                "not ejected after 2 failed set-ups: {s:?}"
            );
            assert_eq!((s.exchanges, s.failed_exchanges), (2, 2), "{s:?}");
            assert_eq!((s.requests, s.failures, s.ewma_us), (0, 0, None), "{s:?}");
            assert!(client.replica_latency(0).is_none());

            // No answer at all: a port nobody listens on.
            let closed = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = closed.local_addr().expect("addr").port();
            drop(closed);
            let client = client_of(port, 2);
            let session = super::super::session::UpstreamSession::new(
                client.clone(),
                Bytes::from_static(b"{}"),
                None,
            );
            // Each attempt fails at the discover probe (nothing was sent, so nothing more is
            // tried on this one replica): two attempts reach the threshold.
            for _ in 0..2 {
                let error = session.established().await.expect_err("nothing listens");
                assert!(error.never_sent(), "{error}");
            }
            let s = client.stats[0].snapshot(Instant::now());
            assert!(
                s.ejected_for_ms > 0,
                "not ejected after refused set-ups: {s:?}"
            );
            assert_eq!((s.requests, s.ewma_us), (0, None), "{s:?}");
        });
    }

    #[test]
    fn a_replica_answering_503_is_ejected_with_the_status_as_its_last_error() {
        crate::http::run_glommio(|| async {
            let client = answering(503, 3).await;
            for n in 1..=3 {
                let error = match client
                    .post(0, Traffic::Client, Some("s"), Some("v"), b"{}")
                    .await
                {
                    Err(e) => e,
                    Ok(_) => panic!("a 503 is not an answer"),
                };
                assert!(matches!(error, UpstreamError::Status { status: 503, .. }));
                let s = client.stats[0].snapshot(Instant::now());
                if n < 3 {
                    assert_eq!((s.consecutive_failures, s.ejected_for_ms), (n, 0));
                } else {
                    assert!(s.ejected_for_ms > 0, "not ejected after 3 503s: {s:?}");
                }
                let last = s.last_error.unwrap_or_default();
                assert!(
                    last.contains("HTTP 503") && last.contains("Retry-After: 7"),
                    "{last}"
                );
                assert!(last.contains("no healthy upstream"), "{last}");
            }
            assert!(!client.stats[0].available(Instant::now()));
            // A health check answered 503 is a miss, not a sign of life that would close the
            // circuit the requests just opened.
            assert!(!client.probe(0, Duration::from_secs(5)).await);
            let s = client.stats[0].snapshot(Instant::now());
            assert!(s.ejected_for_ms > 0 && s.failed_probes == 1, "{s:?}");
        });
    }

    #[test]
    fn a_replica_answering_500_stays_in() {
        crate::http::run_glommio(|| async {
            let client = answering(500, 3).await;
            for _ in 0..10 {
                let error = match client
                    .post(0, Traffic::Client, Some("s"), Some("v"), b"{}")
                    .await
                {
                    Err(e) => e,
                    Ok(_) => panic!("a 500 is not a success"),
                };
                assert!(!error.is_replica_failure());
            }
            assert!(client.probe(0, Duration::from_secs(5)).await);
            let s = client.stats[0].snapshot(Instant::now());
            assert_eq!((s.consecutive_failures, s.ejected_for_ms), (0, 0), "{s:?}");
            assert!(client.stats[0].available(Instant::now()));
        });
    }
}
