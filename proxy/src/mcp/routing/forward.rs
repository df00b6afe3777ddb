//! One request to its server, and the conversation that flows back.
//!
//! The upstream's answer decides the shape of ours: a JSON answer, or an SSE stream whose
//! first message is the response, goes back as JSON; a stream that carries progress,
//! log messages or server-to-client requests first is relayed as SSE while it lasts.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::poll_fn;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::relay::{self, Relayed};
use super::Answer;
use crate::mcp::session::{Session, STANDALONE};
use crate::metrics::{Forwarded, Outcome};
use crate::protocol::jsonrpc::{self, code, Id};
use crate::protocol::version::primes_streams;
use crate::protocol::{splice, stateless_answer};
use crate::registry::Catalog;
use crate::upstream::cancel::CancelOnDrop;
use crate::upstream::message_stream::{StreamItem, MAX_OWN_WAIT};
use crate::upstream::table::ShardUpstreams;
use crate::upstream::{MessageStream, ReplyBody, UpstreamError};

/// Clears a client request from the in-flight table however its relay ends.
pub(in crate::mcp) struct InFlight {
    session: Rc<Session>,
    client_id: Id,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.session.end_request(&self.client_id);
    }
}

/// A client request waiting for its upstream answer. Dropped while waiting (the client went
/// away: its connection closed, or the shard that accepted it sent `Abandon`), it tells the
/// server to stop, unless the client cancelled the request itself or its session ended.
struct Awaiting {
    cancel: CancelOnDrop,
    session: Rc<Session>,
    client_id: Id,
}

impl Awaiting {
    /// The wait ended with `error`: a server that did not answer in time is told to stop
    /// (one that failed otherwise has no request left to stop).
    fn failed(&mut self, error: &UpstreamError) {
        match error {
            UpstreamError::Timeout { timeout, .. } => self.timed_out(*timeout),
            _ => self.cancel.disarm(),
        }
    }

    /// No answer came within `timeout` (moved on by progress, if any).
    fn timed_out(&mut self, timeout: std::time::Duration) {
        if self.session.abandoned(&self.client_id) {
            self.cancel.disarm();
        } else {
            self.cancel.fire(&format!(
                "the proxy stopped waiting: no answer within {timeout:?}"
            ));
        }
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        if self.session.abandoned(&self.client_id) {
            self.cancel.disarm();
        }
    }
}

/// How the client takes its answer, and when its request was read.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    /// Whether the client takes `text/event-stream` answers.
    pub accepts_sse: bool,
    /// When the client's request was read: the proxy's own time on it counts from here.
    pub received: Instant,
}

impl Delivery {
    /// A request the proxy makes itself (a workflow step), read now.
    pub fn own(accepts_sse: bool) -> Delivery {
        Delivery {
            accepts_sse,
            received: Instant::now(),
        }
    }
}

/// Sends `msg` (names already mapped) to `server` and relays the answer.
pub async fn request(
    session: &Rc<Session>,
    server: usize,
    client_id: Id,
    mut msg: Value<'_>,
    delivery: Delivery,
) -> Answer {
    let Some(upstream) = session.upstream(server) else {
        return no_such_upstream(&client_id);
    };
    let method = msg.get_str("method").unwrap_or_default();
    let mut timing = Forwarded::start(server, method, delivery.received);
    if method == "tools/call" {
        if let Some(tool) = msg.get("params").and_then(|p| p.get_str("name")) {
            timing.tool(tool);
        }
    }
    let retry_safe = retry_safe(session, server, &msg);
    let subscription = Subscription::of(method, msg.get("params").and_then(|p| p.get_str("uri")));
    let upstream_id = upstream.next_id();
    jsonrpc::set_member(&mut msg, "id", upstream_id.to_value());
    let body = jsonrpc::to_bytes(&msg);
    drop(msg);
    let outgoing = Outgoing {
        upstream,
        upstream_id,
        body,
        retry_safe,
        subscription,
    };
    send(
        session,
        server,
        client_id,
        outgoing,
        timing,
        delivery.accepts_sse,
    )
    .await
}

/// Sends a request read without a tree (see `splice::Request`) to `server`: its id and the name
/// at `name_span` are rewritten in its bytes, the name to `original`, the server's own.
pub async fn request_spliced(
    session: &Rc<Session>,
    server: usize,
    msg: &[u8],
    peeked: splice::Request<'_>,
    name_span: std::ops::Range<usize>,
    original: &str,
    delivery: Delivery,
) -> Answer {
    let Some(upstream) = session.upstream(server) else {
        return no_such_upstream(&peeked.id);
    };
    let mut timing = Forwarded::start(server, peeked.method, delivery.received);
    if peeked.method == "tools/call" {
        timing.tool(original);
    }
    let retry_safe = method_retry_safe(session, server, peeked.method, Some(original));
    let subscription = Subscription::of(peeked.method, Some(original));
    let upstream_id = upstream.next_id();
    let body = Bytes::from(peeked.rewrite(msg, &upstream_id, name_span, original));
    let outgoing = Outgoing {
        upstream,
        upstream_id,
        body,
        retry_safe,
        subscription,
    };
    send(
        session,
        server,
        peeked.id,
        outgoing,
        timing,
        delivery.accepts_sse,
    )
    .await
}

fn no_such_upstream(client_id: &Id) -> Answer {
    Answer::Json(jsonrpc::error_body(
        Some(client_id),
        code::INTERNAL_ERROR,
        "no such upstream server",
    ))
}

/// A request ready for its server: rewritten to the proxy's id.
struct Outgoing {
    upstream: crate::upstream::UpstreamHandle,
    upstream_id: Id,
    body: Bytes,
    retry_safe: bool,
    subscription: Option<Subscription>,
}

/// The resource subscription a `resources/subscribe` or `resources/unsubscribe` changes in its
/// upstream session, which keeps what it holds to renew it if the server forgets the session.
#[derive(Debug, PartialEq, Eq)]
enum Subscription {
    /// Kept once the server accepts it.
    Subscribe(String),
    /// Dropped before it is sent: the client no longer wants it, whatever the server answers.
    Unsubscribe(String),
}

impl Subscription {
    /// What request `method` changes, given the server's own URI it names.
    fn of(method: &str, uri: Option<&str>) -> Option<Subscription> {
        // Matched before the URI is copied: every tools/call passes through here.
        match method {
            "resources/subscribe" => Some(Subscription::Subscribe(uri?.to_owned())),
            "resources/unsubscribe" => Some(Subscription::Unsubscribe(uri?.to_owned())),
            _ => None,
        }
    }

    /// The server answered `answer`: an accepted subscription is recorded.
    fn settle(&self, upstream: &crate::upstream::UpstreamHandle, answer: &[u8]) {
        if let Subscription::Subscribe(uri) = self {
            if Outcome::of_response(answer) == Outcome::Ok {
                upstream.subscribed(uri);
            }
        }
    }
}

/// Sends `outgoing` and relays the conversation that flows back.
async fn send(
    session: &Rc<Session>,
    server: usize,
    client_id: Id,
    outgoing: Outgoing,
    mut timing: Forwarded,
    accepts_sse: bool,
) -> Answer {
    let Outgoing {
        upstream,
        upstream_id,
        body,
        retry_safe,
        subscription,
    } = outgoing;
    if let Some(Subscription::Unsubscribe(uri)) = &subscription {
        upstream.unsubscribed(uri);
    }
    session.begin_request(client_id.clone(), server, upstream_id.clone());
    let guard = InFlight {
        session: session.clone(),
        client_id: client_id.clone(),
    };
    // Declared after `guard`, so dropped first: whether the client cancelled the request
    // itself is still on record when a drop decides to cancel it upstream.
    let mut awaiting = Awaiting {
        cancel: CancelOnDrop::new(
            upstream.clone(),
            upstream_id.clone(),
            "the client went away",
        ),
        session: session.clone(),
        client_id: client_id.clone(),
    };
    timing.sending();
    // The replica that answers; an input_required call's retries go back to it.
    let pin = std::cell::Cell::new(None);
    let reply = match upstream.send_pinned(&body, retry_safe, &pin).await {
        Ok(r) => r,
        Err(e) => {
            awaiting.failed(&e);
            timing.finish(Outcome::Unavailable);
            return Answer::Json(upstream_error(&client_id, &e));
        }
    };
    // A stateful client of a 2026-07-28 upstream sees only what its own era defines (the
    // upstream's era is known once a session to it is open, i.e. now).
    let legacy = upstream.is_stateless() && !session.is_bridge();
    // The answer, from a JSON reply or from the stream once what precedes it is relayed.
    let answer = match reply.body {
        ReplyBody::Json(b) => {
            awaiting.cancel.disarm();
            timing.answered();
            match json_answer(session, server, (&upstream_id, &client_id), &b) {
                Some(answer) => answer,
                None => {
                    return Answer::Json(jsonrpc::error_body(
                        Some(&client_id),
                        code::UPSTREAM_PROTOCOL,
                        &format!(
                            "server {} answered with something that is not the response",
                            upstream.name()
                        ),
                    ))
                }
            }
        }
        ReplyBody::Accepted => {
            awaiting.cancel.disarm();
            timing.finish(Outcome::Protocol);
            return Answer::Json(jsonrpc::error_body(
                Some(&client_id),
                code::UPSTREAM_PROTOCOL,
                &format!(
                    "server {} accepted a request without answering it",
                    upstream.name()
                ),
            ));
        }
        ReplyBody::Stream(mut stream) => loop {
            // A client that can resume (2025-11-25 streams, over HTTP: `accepts_sse`) sees a
            // stream the server ends early end as well, and reconnects itself.
            let pausing = accepts_sse && !session.is_bridge() && primes_streams(&session.version);
            // A bridge session's call is relayed into its own stream from the start, not from
            // its first message: a request the server sends for it on the GET stream instead
            // (`session::calls`) must reach the call's round while the call's stream is
            // still silent.
            let mut paused = None;
            let first = if session.is_bridge() && accepts_sse {
                Step::Message(Bytes::new())
            } else {
                let ids = (&upstream_id, &client_id);
                match relayed(session, server, &mut stream, ids, pausing).await {
                    Relay::Step(step) => step,
                    // The client's stream opens, to end at once after a `retry` hint.
                    Relay::Paused(retry) => {
                        paused = Some(retry);
                        Step::Message(Bytes::new())
                    }
                }
            };
            match first {
                Step::Final(answer) => {
                    awaiting.cancel.disarm();
                    drain(stream);
                    break answer;
                }
                Step::Message(m) if accepts_sse => {
                    let out = session.events.open();
                    // Empty for a bridge call opened before its first message, and for a
                    // stream the server ended before its first message.
                    if !m.is_empty() {
                        session.events.push(out, m);
                    }
                    if session.is_bridge() {
                        session.follow_call(&client_id, out);
                    }
                    let handed = Rc::clone(session);
                    let session = session.clone();
                    glommio::spawn_local(async move {
                        let ids = (upstream_id, client_id);
                        let answered = |answer: Bytes| {
                            if let Some(s) = &subscription {
                                s.settle(&upstream, &answer);
                            }
                            if legacy {
                                stateless_answer::undress(answer)
                            } else {
                                answer
                            }
                        };
                        let out = (out, paused, pausing);
                        let outcome =
                            pump(&session, server, stream, ids, out, &mut awaiting, answered).await;
                        timing.finish(outcome);
                        drop(awaiting);
                        drop(guard);
                    })
                    .detach();
                    return Answer::Stream(handed, out);
                }
                // A client that takes only JSON gets interim messages on its GET stream.
                Step::Message(m) => session.events.push(STANDALONE, m),
                Step::Failed(_) | Step::Expired(..) if session.abandoned(&client_id) => {
                    return Answer::Silent
                }
                Step::Failed(answer) => {
                    awaiting.cancel.disarm();
                    timing.finish(Outcome::Unavailable);
                    return Answer::Json(answer);
                }
                Step::Expired(answer, timeout) => {
                    awaiting.timed_out(timeout);
                    timing.finish(Outcome::Unavailable);
                    return Answer::Json(answer);
                }
            }
        },
    };
    // 2026-07-28 upstreams may answer input_required; a stateful client is asked instead
    // (a bridged 2026-07-28 client gets the result as it is and retries itself).
    if upstream.is_stateless()
        && !session.is_bridge()
        && crate::mcp::bridge::stateless_upstream::requires_input(&answer)
    {
        let call = crate::mcp::bridge::stateless_upstream::Call {
            session: session.clone(),
            server,
            upstream,
            client_id,
            original: body,
            pin,
        };
        return call.resolve(answer, accepts_sse, timing, guard).await;
    }
    if let Some(s) = &subscription {
        s.settle(&upstream, &answer);
    }
    timing.finish(Outcome::of_response(&answer));
    Answer::Json(if legacy {
        stateless_answer::undress(answer)
    } else {
        answer
    })
}

/// The response in a JSON reply, its interim messages (a body of JSON lines) relayed to the
/// session's GET stream as a JSON-only client gets them; `None` when it holds no response.
fn json_answer(
    session: &Rc<Session>,
    server: usize,
    ids: (&Id, &Id),
    body: &[u8],
) -> Option<Bytes> {
    if let Relayed::Final(answer) = relay::from_upstream(session, server, Some(ids), body) {
        return Some(answer);
    }
    for line in jsonrpc::json_lines(body) {
        match relay::from_upstream(session, server, Some(ids), line) {
            Relayed::Final(answer) => return Some(answer),
            Relayed::Message(m) => session.events.push(STANDALONE, m),
            Relayed::Nothing => {}
        }
    }
    None
}

pub(in crate::mcp) enum Step {
    Final(Bytes),
    Message(Bytes),
    /// The stream broke or ended without the answer: the client's error.
    Failed(Bytes),
    /// The answer's deadline passed (the server's timeout): the client's error; the server
    /// may still be working.
    Expired(Bytes, std::time::Duration),
}

pub(in crate::mcp) async fn next_relayed(
    session: &Rc<Session>,
    server: usize,
    stream: &mut MessageStream,
    up: &Id,
    client: &Id,
) -> Step {
    match relayed(session, server, stream, (up, client), false).await {
        Relay::Step(step) => step,
        Relay::Paused(_) => Step::Failed(ended_without_answer(session, server, client)),
    }
}

/// The next step of a relayed stream, or (`pausing`) the server's early end of it, for the
/// caller to resume when the client reconnects.
enum Relay {
    Step(Step),
    Paused(Duration),
}

async fn relayed(
    session: &Rc<Session>,
    server: usize,
    stream: &mut MessageStream,
    (up, client): (&Id, &Id),
    pausing: bool,
) -> Relay {
    loop {
        let item = if pausing {
            stream.next_item().await
        } else {
            stream
                .next()
                .await
                .map(|m| m.map_or(StreamItem::End, StreamItem::Message))
        };
        let step = match item {
            Ok(StreamItem::Message(raw)) => {
                match relay::from_upstream(session, server, Some((up, client)), &raw) {
                    Relayed::Final(answer) => Step::Final(answer),
                    Relayed::Message(m) => Step::Message(m),
                    Relayed::Nothing => continue,
                }
            }
            Ok(StreamItem::Paused(retry)) => return Relay::Paused(retry),
            Ok(StreamItem::End) => Step::Failed(ended_without_answer(session, server, client)),
            Err(e @ UpstreamError::Timeout { timeout, .. }) => {
                Step::Expired(upstream_error(client, &e), timeout)
            }
            Err(e) => Step::Failed(upstream_error(client, &e)),
        };
        return Relay::Step(step);
    }
}

fn ended_without_answer(session: &Rc<Session>, server: usize, client: &Id) -> Bytes {
    let name = session
        .shard()
        .and_then(|s| s.upstreams().get(server).map(|u| u.name().to_owned()));
    jsonrpc::error_body(
        Some(client),
        code::UPSTREAM_PROTOCOL,
        &format!(
            "server {} ended its stream without answering",
            name.unwrap_or_default()
        ),
    )
}

/// A request's stream the server ended early (SEP-1699 polling) is passed on as such: the
/// client's stream `out` ends after a `retry` hint, and the server's stream is resumed when
/// the client reconnects (a server may keep the answer only for a client that reconnects
/// soon), or on the proxy's own once the hint has passed (at most
/// [`MAX_OWN_WAIT`]), for a client that reconnects later still.
async fn resume_when_reconnected(
    session: &Rc<Session>,
    out: u64,
    stream: &mut MessageStream,
    retry: Duration,
) -> bool {
    let millis = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
    session.events.pause(out, millis);
    let reconnected = poll_fn(|cx| session.events.poll_unpaused(out, cx));
    futures_lite::future::or(reconnected, glommio::timer::sleep(retry.min(MAX_OWN_WAIT))).await;
    session.events.unpause(out);
    stream.resume().await
}

/// Relays the rest of an upstream stream into session stream `out`, ending with the answer,
/// as `answered` makes it (it sees it first). `ids` are the request's upstream and client ids.
async fn pump(
    session: &Rc<Session>,
    server: usize,
    mut stream: Box<MessageStream>,
    ids: (Id, Id),
    (out, mut paused, pausing): (u64, Option<Duration>, bool),
    awaiting: &mut Awaiting,
    answered: impl FnOnce(Bytes) -> Bytes,
) -> Outcome {
    let (up, client) = ids;
    loop {
        let step = match paused.take() {
            Some(retry) if !resume_when_reconnected(session, out, &mut stream, retry).await => {
                Step::Failed(ended_without_answer(session, server, &client))
            }
            _ => match relayed(session, server, &mut stream, (&up, &client), pausing).await {
                Relay::Step(step) => step,
                Relay::Paused(retry) => {
                    paused = Some(retry);
                    continue;
                }
            },
        };
        match &step {
            Step::Expired(_, timeout) => awaiting.timed_out(*timeout),
            Step::Message(_) => {}
            Step::Final(_) | Step::Failed(_) => awaiting.cancel.disarm(),
        }
        match step {
            Step::Message(m) => session.events.push(out, m),
            Step::Final(answer) => {
                let outcome = Outcome::of_response(&answer);
                session.events.push(out, answered(answer));
                session.events.finish(out);
                drain(stream);
                return outcome;
            }
            Step::Failed(answer) | Step::Expired(answer, _) => {
                let abandoned = session.abandoned(&client);
                if !abandoned {
                    session.events.push(out, answer);
                }
                session.events.finish(out);
                return if abandoned {
                    Outcome::Cancelled
                } else {
                    Outcome::Unavailable
                };
            }
        }
    }
}

/// Reads an answered stream to its end so its connection goes back to the pool.
///
/// Servers close a request's stream right after the response; reading that close costs
/// nothing, while dropping the stream would cost a new connection for the next request.
pub(in crate::mcp) fn drain(mut stream: Box<MessageStream>) {
    stream.stop_resuming();
    glommio::spawn_local(async move { while let Ok(Some(_)) = stream.next().await {} }).detach();
}

/// Whether sending `msg` again after a replica failed mid-request does no harm: reads are
/// safe; a tool call only when the tool is annotated read-only or idempotent.
fn retry_safe(session: &Rc<Session>, server: usize, msg: &Value<'_>) -> bool {
    let name = msg.get("params").and_then(|p| p.get_str("name"));
    method_retry_safe(
        session,
        server,
        msg.get_str("method").unwrap_or_default(),
        name,
    )
}

/// [`retry_safe`] for a method and the tool name a `tools/call` carries.
fn method_retry_safe(
    session: &Rc<Session>,
    server: usize,
    method: &str,
    tool: Option<&str>,
) -> bool {
    match method {
        "tools/call" => match (tool, session.shard()) {
            (Some(name), Some(shard)) => shard.catalog().tool_retry_safe(server, name),
            _ => false,
        },
        "prompts/get"
        | "resources/read"
        | "resources/subscribe"
        | "resources/unsubscribe"
        | "completion/complete" => true,
        _ => false,
    }
}

/// The client's error for an upstream failure; it always names the server.
pub fn upstream_error(client_id: &Id, e: &UpstreamError) -> Bytes {
    if let UpstreamError::Refused { error, .. } = e {
        // The server's own answer to the request: its code and data reach the client, under
        // the client's id (the HTTP status is the client's era's, decided by the endpoint).
        let mut body = Vec::with_capacity(error.len() + 48);
        body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        client_id.write_json(&mut body);
        body.extend_from_slice(br#","error":"#);
        body.extend_from_slice(error.as_bytes());
        body.push(b'}');
        return Bytes::from(body);
    }
    let message = match e {
        UpstreamError::Connect { server, .. } => format!("server {server} is unavailable: {e}"),
        other => other.to_string(),
    };
    jsonrpc::error_body(Some(client_id), code::UPSTREAM_UNAVAILABLE, &message)
}

/// A notification from the client: cancellations go to the server doing the work.
pub async fn client_notification(session: &Rc<Session>, method: &str, mut msg: Value<'_>) {
    match method {
        "notifications/cancelled" => {
            let client_id = msg
                .get("params")
                .and_then(|p| p.get("requestId"))
                .and_then(Id::from_value);
            let Some(client_id) = client_id else {
                return;
            };
            // A workflow run is the proxy's own work: stopping it cancels its steps' upstream
            // calls (each step tells its server when its call is dropped).
            if crate::orchestration::cancel(&**session, &client_id) {
                return;
            }
            let Some((server, upstream_id)) = session.inflight(&client_id) else {
                return;
            };
            session.cancel_request(&client_id);
            if let Some(params) = msg.get_mut("params") {
                jsonrpc::set_member(params, "requestId", upstream_id.to_value());
            }
            send_to(session, server, jsonrpc::to_bytes(&msg)).await;
        }
        "notifications/roots/list_changed" => {
            let body = jsonrpc::to_bytes(&msg);
            for upstream in session.open_upstreams() {
                if upstream.is_open() {
                    let _ = upstream.post(&body).await;
                }
            }
        }
        _ => {}
    }
}

/// The client's answer to a server-to-client request goes back to the server that asked.
pub async fn client_response(session: &Rc<Session>, proxy_id: &Id, mut msg: Value<'_>) {
    let Some(pending) = session.take_pending(proxy_id) else {
        if session.answer_waiter(proxy_id, jsonrpc::to_bytes(&msg)) {
            return;
        }
        log::debug!(
            "session {}: answer to unknown request {proxy_id} dropped",
            session.id
        );
        return;
    };
    jsonrpc::set_member(&mut msg, "id", pending.upstream_id.to_value());
    send_to(session, pending.server, jsonrpc::to_bytes(&msg)).await;
}

async fn send_to(session: &Rc<Session>, server: usize, body: Bytes) {
    let Some(upstream) = session.upstream(server) else {
        return;
    };
    if let Err(e) = upstream.post(&body).await {
        log::warn!(
            server = upstream.name(), session = session.id.as_str();
            "session {}: could not pass a message to {}: {e}",
            session.id,
            upstream.name()
        );
    }
}

/// `logging/setLevel` goes to every reachable server that logs.
pub async fn set_level(
    session: &Rc<Session>,
    catalog: &Catalog,
    id: &Id,
    msg: &Value<'_>,
) -> Answer {
    let params = msg
        .get("params")
        .map(|p| p.encode())
        .unwrap_or_else(|| "{}".into());
    let servers = (0..catalog.status.len())
        .filter(|s| catalog.declares(*s, "logging", None))
        .filter(|s| session.auth.shows_server(catalog, *s));
    for server in servers {
        let Some(upstream) = session.upstream(server) else {
            continue;
        };
        if let Err(e) = upstream
            .request("logging/setLevel", params.as_bytes())
            .await
        {
            log::warn!(server = upstream.name(), session = session.id.as_str();
                "logging/setLevel on {}: {e}", upstream.name());
        }
    }
    Answer::Json(jsonrpc::result_body(id, b"{}"))
}

#[cfg(test)]
mod tests {
    use super::Subscription;

    #[test]
    fn only_subscribe_and_unsubscribe_change_what_a_session_holds() {
        assert_eq!(
            Subscription::of("resources/subscribe", Some("demo://a")),
            Some(Subscription::Subscribe("demo://a".into()))
        );
        assert_eq!(
            Subscription::of("resources/unsubscribe", Some("demo://a")),
            Some(Subscription::Unsubscribe("demo://a".into()))
        );
        assert_eq!(Subscription::of("resources/read", Some("demo://a")), None);
        assert_eq!(Subscription::of("resources/subscribe", None), None);
    }
}
