//! HTTP exchanges with one upstream server: POSTs, the GET stream, DELETE and the health
//! check, over this shard's keep-alive [`Pool`].
//!
//! A reused connection that fails before any byte of the answer arrives is retried once on a
//! fresh one: the server closed it while idle, so it never saw the request. Which replica an
//! exchange goes to, and what its outcome says of the replica, is the [`Balancer`]'s.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use crate::tls::UpstreamStream;

use crate::balance::{Balancer, ReplicaSpec, Traffic};
use crate::config::{ReplicaConfig, ServerConfig, Transport};
use crate::metrics::ProbeOutcome;

use super::deadline::AnswerDeadline;
use super::error::is_replica_status;
pub use super::error::UpstreamError;
use super::message_stream::SseMessages;
// The stream is what a POST may answer with: its users find it beside the reply.
pub use super::message_stream::MessageStream;
use super::pool::Pool;
use crate::http::{ClientConn, HttpError, Limits, ResponseHead};
use crate::protocol::stateless::ParamHeader;

/// Upper bound on a JSON answer or one SSE event from an upstream.
pub(super) const MAX_UPSTREAM_MESSAGE: usize = 16 * 1024 * 1024;

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

/// One upstream server as seen from one shard: its replicas, their connection pools and this
/// shard's view of how each is doing.
pub struct UpstreamClient {
    /// Index of the server in the registry.
    pub index: usize,
    /// Its configuration.
    pub config: ServerConfig,
    /// This shard's keep-alive connections to each replica.
    pub(super) pool: Pool,
    /// Which replica serves what, and this shard's statistics of each.
    pub balancer: Balancer,
    /// Upstream latency histogram of each replica (time to the response head).
    latency: Vec<metrics::Histogram>,
    /// The same latencies kept on this shard for exact per-replica quantiles (allocated on
    /// the first sample): the one source the admin API and the fleet views read, kept as
    /// long as the replica's other statistics.
    replica_latency: Vec<RefCell<Option<hdrhistogram::Histogram<u64>>>>,
    /// `mcp_proxy_health_probes_total` of each replica, by outcome.
    probe_counters: Vec<crate::metrics::fleet::ProbeCounters>,
    headers: Vec<(String, String)>,
    limits: Limits,
    /// The server's protocol era as this shard found it: `None` until first probed,
    /// `Some(true)` for 2026-07-28 (stateless), `Some(false)` for the stateful era.
    pub stateless: std::cell::Cell<Option<bool>>,
    /// Whether the server's `initialize` opens a session (`Mcp-Session-Id`), as this shard
    /// found it: `None` until a stateful client's session first asked.
    pub offers_sessions: std::cell::Cell<Option<bool>>,
    /// The `x-mcp-header` annotations of the server's tools, by upstream tool name, from the
    /// catalog this shard serves (only tools that have some).
    pub tool_params: RefCell<std::collections::HashMap<String, Vec<ParamHeader>>>,
}

impl UpstreamClient {
    /// A client with an empty pool.
    pub fn new(index: usize, config: ServerConfig, replicas: &[ReplicaConfig]) -> Rc<Self> {
        let headers = config.headers().to_vec();
        let urls: Vec<String> = replicas.iter().map(|r| r.url.to_string()).collect();
        crate::metrics::fleet::register_replicas(&config.name, &urls);
        let latency = urls
            .iter()
            .map(|u| crate::metrics::replica_latency(&config.name, u))
            .collect();
        let replica_latency = replicas.iter().map(|_| RefCell::new(None)).collect();
        let specs = replicas
            .iter()
            .zip(&urls)
            .map(|(r, url)| ReplicaSpec {
                url: url.clone(),
                weight: r.weight,
                drain: r.drain,
            })
            .collect();
        let balancer = Balancer::new(
            &config.name,
            specs,
            config.balance.strategy,
            config.balance.failover_threshold,
        );
        let probe_counters = urls
            .iter()
            .map(|u| crate::metrics::fleet::ProbeCounters::new(&config.name, u))
            .collect();
        let limits = Limits {
            max_body_bytes: MAX_UPSTREAM_MESSAGE,
            head_timeout: config.timeout,
            body_timeout: config.timeout,
            ..Limits::default()
        };
        Rc::new(UpstreamClient {
            index,
            pool: Pool::new(&config, replicas),
            config,
            balancer,
            latency,
            replica_latency,
            probe_counters,
            headers,
            limits,
            stateless: std::cell::Cell::new(None),
            offers_sessions: std::cell::Cell::new(None),
            tool_params: RefCell::default(),
        })
    }

    /// The server's name, for errors and logs.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Number of replicas.
    pub fn replica_count(&self) -> usize {
        self.pool.len()
    }

    /// A replica's URL, for logs and errors.
    pub fn replica_url(&self, replica: usize) -> String {
        self.pool
            .url(replica)
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Records one client request sent to `replica`: counted, and when it was answered
    /// (`error` is `None`), its upstream latency (time to the response head) recorded.
    pub fn record_request(&self, replica: usize, took: Duration, error: Option<&UpstreamError>) {
        if let Some(stats) = self.balancer.stats.get(replica) {
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
        self.balancer.retune(next.balance.strategy, weights(next));
        true
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
        // Dropped with this future (the caller's task cancelled) before the answer came, the
        // exchange stops counting as load and says nothing of the replica.
        let in_flight = self.balancer.begin(replica);
        let result = self.exchange_on(replica, method, headers, body).await;
        let (failure, pause) = match &result {
            Err(e) => (Some(e.to_string()), None),
            Ok((_, head)) => match replica_failure(head) {
                Some(pause) => (Some(self.gateway_failure(head)), pause),
                None => (None, None),
            },
        };
        let timed_out = matches!(result, Err(UpstreamError::Timeout { .. }));
        in_flight.settle(traffic, failure, pause, timed_out);
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
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + self.headers.len() + 1);
        all.extend_from_slice(headers);
        for (k, v) in &self.headers {
            all.push((k.as_str(), v.as_str()));
        }
        // The proxy's own token for this server ([[auth.oauth.upstreams]]), never a client's;
        // a request made for a client of a token exchange server carries that client's
        // exchanged token instead (among `headers`).
        let credential = super::credentials::authorization(self.name());
        let carried = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let Some(value) = credential.as_deref().filter(|_| !carried) {
            all.push(("Authorization", value));
        }
        if let Some(mut conn) = self.pool.checkout(replica) {
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
        let mut conn = self.pool.connect(replica).await?;
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
        let Some(url) = self.pool.url(replica) else {
            return Err(SendFailure {
                nothing_received: true,
                error: HttpError::Io(std::io::Error::other("no such replica")),
            });
        };
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

    pub(super) fn exchange_error(&self, e: HttpError) -> UpstreamError {
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
                        .resumable(session_id.zip(version), authorization_of(extra)),
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
            self.pool.checkin(replica, conn);
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
        self.balancer.probed(replica, error, pause)
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
        authorization: Option<&str>,
    ) -> Result<Option<MessageStream>, UpstreamError> {
        let extra = last_event_id.map(|id| ("Last-Event-ID", id));
        let mut headers =
            Self::mcp_headers("text/event-stream", Some(session_id), Some(version), extra);
        headers.extend(authorization.map(|a| ("Authorization", a)));
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
    pub async fn delete(
        self: &Rc<Self>,
        replica: usize,
        session_id: &str,
        version: &str,
        authorization: Option<&str>,
    ) {
        let mut headers = Self::mcp_headers(
            "application/json, text/event-stream",
            Some(session_id),
            Some(version),
            None,
        );
        headers.extend(authorization.map(|a| ("Authorization", a)));
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
            self.pool.checkin(replica, conn);
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
            self.pool.checkin(replica, conn);
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let pause = super::retry_after::of(head);
        if is_replica_status(head.status, pause) {
            // `exchange` already counted it against the circuit; the body (a load balancer's
            // "no healthy upstream", say) tells the operator more than the status alone.
            let message = format!("{}: {}", self.gateway_failure(head), text.trim());
            self.balancer.note_error(replica, message);
        }
        let server = self.config.name.clone();
        let text = match (head.status, head.header("www-authenticate")) {
            // The upstream wants credentials of its own: say which server and what it asked.
            (401 | 403, Some(challenge)) => format!(
                "server \"{server}\" refused the proxy's credentials ({challenge}); give the proxy a token for it with [[auth.oauth.upstreams]] (client credentials) or its headers. {}",
                text.trim()
            ),
            _ => text,
        };
        // 404 is the spec's answer for an unknown session; the TypeScript SDK's servers answer
        // 400 instead, so a 400 that mentions the session means the same.
        let lost = had_session
            && (head.status == 404
                || (head.status == 400 && text.to_ascii_lowercase().contains("session")));
        if lost {
            return UpstreamError::SessionLost { server };
        }
        match refusal(head.status, pause, &body) {
            Some((code, error)) => UpstreamError::Refused {
                server,
                status: head.status,
                code,
                error,
            },
            None => UpstreamError::Status {
                server,
                status: head.status,
                body: text,
                pause,
            },
        }
    }
}

/// The code and `error` JSON of a JSON-RPC error response carried by an HTTP 4xx that is about
/// the request (not 408 or 429, which are about timing); `None` for anything else.
fn refusal(status: u16, pause: Option<std::time::Duration>, body: &[u8]) -> Option<(i64, String)> {
    use simd_json::prelude::*;
    if !(400..500).contains(&status)
        || matches!(status, 408 | 429)
        || is_replica_status(status, pause)
    {
        return None;
    }
    let mut buf = body.to_vec();
    let msg = crate::protocol::jsonrpc::parse(&mut buf).ok()?;
    let error = msg.get("error").filter(|e| e.is_object())?;
    let code = error.get_i64("code")?;
    Some((code, error.encode()))
}

/// What an answer's head says of the replica: `None` when it is alive (whatever it thinks of
/// the request), `Some(pause)` when it failed, with the pause its `Retry-After` asked for.
fn replica_failure(head: &ResponseHead) -> Option<Option<Duration>> {
    let pause = super::retry_after::of(head);
    is_replica_status(head.status, pause).then_some(pause)
}

struct SendFailure {
    nothing_received: bool,
    error: HttpError,
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;

/// The `Authorization` among `headers`, if any.
fn authorization_of<'a>(headers: &[(&str, &'a str)]) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| *v)
}
