//! Input rounds: a bridged call, followed until its answer, and the server-to-client
//! requests it raises on the way, which become `input_required` rounds the client's retry
//! continues with `inputResponses`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use futures_lite::future::{poll_fn, poll_once};
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::{restore, BridgeSessions, ShardBridge, MAX_ROUNDS, ROUND_PREFIX, ROUND_TTL};
use crate::auth::Identity;
use crate::mcp::routing::forward::Delivery;
use crate::mcp::routing::Answer;
use crate::mcp::session::{Next, Session};
use crate::protocol::jsonrpc::{self, code, Id};
use crate::protocol::{stateless, stateless_answer};
use crate::shard::Shard;

/// A server-to-client exchange waiting for the client's `inputResponses`.
pub(super) struct Round {
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

impl BridgeSessions {
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
}

/// A first call (no `requestState`): served through the client's bridge session and
/// followed until its answer or its first input round.
pub(super) async fn first_call(
    shard: &Rc<Shard>,
    id: Id,
    method: &str,
    msg: &mut Value<'_>,
    delivery: Delivery,
    client: Option<&Identity>,
) -> Answer {
    let (caps, info) = stateless::client_meta(msg);
    let name = stateless::named_field(method)
        .and_then(|f| msg.get("params").and_then(|p| p.get_str(f)))
        .map(str::to_owned);
    let log_level = stateless::requested_log_level(msg);
    stateless::strip_envelope(msg);
    let session = shard.bridge().session(shard, &caps, &info, client);
    if log_level.is_some() {
        shard.bridge().open_logging(shard, &session).await;
    }
    let inner = shard.bridge().fresh_id();
    jsonrpc::set_member(msg, "id", inner.to_value());
    let owned = std::mem::replace(msg, Value::null());
    // The answer comes back through the bridge session, which always takes a stream.
    let inner_delivery = Delivery {
        accepts_sse: true,
        ..delivery
    };
    // Log messages the session gets outside any call while this one is a plain request.
    let early =
        log_level.map(|_| LogCall::open(shard, &session.id, LogTarget::Held(RefCell::default())));
    let answer =
        crate::mcp::routing::request(shard, &session, inner, method, owned, inner_delivery).await;
    let logs = early.map(|c| c.held(log_level)).unwrap_or_default();
    match answer {
        Answer::Json(body) if !logs.is_empty() && delivery.accepts_sse => {
            // The answer goes as SSE, after the log messages that came while it was computed.
            let out = session.events.open();
            for log in logs {
                session.events.push(out, log);
            }
            if let Answer::Json(b) | Answer::Refused(b) | Answer::Unknown(b) =
                restore(method, &id, body)
            {
                session.events.push(out, b);
            }
            session.events.finish(out);
            Answer::Stream(session, out)
        }
        Answer::Json(body) => restore(method, &id, body),
        // Refused by the proxy itself: that stays a refusal whatever its code.
        Answer::Refused(body) => match restore(method, &id, body) {
            Answer::Json(body) | Answer::Refused(body) => Answer::Refused(body),
            other => other,
        },
        Answer::Unknown(body) => match restore(method, &id, body) {
            Answer::Json(body) | Answer::Refused(body) | Answer::Unknown(body) => {
                Answer::Unknown(body)
            }
            other => other,
        },
        Answer::Stream(_, stream) => {
            for log in logs {
                session.events.push(stream, log);
            }
            let call = Bridged {
                session,
                stream,
                id,
                method: method.to_owned(),
                name,
                log_level,
            };
            call.follow(shard, 0, delivery.accepts_sse.then_some(Relay::Open))
                .await
        }
        Answer::Accepted | Answer::Silent => Answer::Json(jsonrpc::error_body(
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
    /// The log level the request opted in to (`_meta` logLevel), as a rank.
    log_level: Option<u8>,
}

impl Bridged {
    /// Reads the call's stream from `after` until its answer, or until the upstream asks the
    /// client something: then the call becomes a round. Progress and log notifications go to
    /// the client on an SSE answer when it takes one (opened at the first), else are dropped;
    /// log messages only at or above the level the request opted in to, none without it.
    fn follow(
        self,
        shard: &Rc<Shard>,
        mut after: u64,
        relay: Option<Relay>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + '_>> {
        Box::pin(async move {
            let session = self.session.clone();
            let stream = self.stream;
            let _logs = self
                .log_level
                .map(|_| LogCall::open(shard, &session.id, LogTarget::Stream(stream)));
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
                        return Answer::Json(jsonrpc::error_body(
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
                        if let Some(request) = stateless_answer::input_request_of(&parsed) {
                            let key = match &proxy_id {
                                Id::Str(s) => s.clone(),
                                Id::Num(n) => n.to_string(),
                            };
                            asked.push((key, proxy_id, Bytes::from(request)));
                        }
                    }
                    (Some("notifications/message"), None)
                        if !stateless::log_wanted(&parsed, self.log_level) => {}
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
                                if let Answer::Json(b) | Answer::Refused(b) | Answer::Unknown(b) =
                                    answer
                                {
                                    session.events.push(out, b);
                                }
                                session.events.finish(out);
                            })
                            .detach();
                            return Answer::Stream(handed, out);
                        }
                        _ => {}
                    },
                    (None, _) => {
                        drop(parsed);
                        return restore(&self.method, &self.id, message);
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
                return Answer::Json(jsonrpc::error_body(
                    Some(&id),
                    code::INTERNAL_ERROR,
                    "the server asked for input but the proxy could not keep the round (no randomness)",
                ));
            }
            Answer::Json(stateless_answer::input_required(&id, &requests, &token))
        })
    }
}

/// Where the log messages a bridge session receives outside any call go for one open call.
pub(crate) enum LogTarget {
    /// The session stream relaying the call (read by `Bridged::follow`, which filters).
    Stream(u64),
    /// Held while the call is still a plain request, for its answer to carry.
    Held(RefCell<Vec<Bytes>>),
}

/// An open bridged call that opted in to log messages, registered for the log messages its
/// bridge session receives outside any call (`BridgeSessions::log_to_calls`) while it lives.
struct LogCall {
    shard: Rc<Shard>,
    target: Rc<LogTarget>,
}

impl LogCall {
    fn open(shard: &Rc<Shard>, bridge: &str, target: LogTarget) -> LogCall {
        let target = Rc::new(target);
        shard
            .bridge()
            .log_calls
            .borrow_mut()
            .push((bridge.to_owned(), target.clone()));
        LogCall {
            shard: shard.clone(),
            target,
        }
    }

    /// The messages held so far at or above `level`.
    fn held(&self, level: Option<u8>) -> Vec<Bytes> {
        let LogTarget::Held(held) = &*self.target else {
            return Vec::new();
        };
        held.borrow_mut()
            .drain(..)
            .filter(|m| {
                let mut buf = m.to_vec();
                jsonrpc::parse(&mut buf).is_ok_and(|n| stateless::log_wanted(&n, level))
            })
            .collect()
    }
}

impl Drop for LogCall {
    fn drop(&mut self) {
        let bridge = self.shard.bridge();
        let mut calls = bridge.log_calls.borrow_mut();
        let at = calls.iter().position(|(_, t)| Rc::ptr_eq(t, &self.target));
        if let Some(at) = at {
            calls.swap_remove(at);
        }
    }
}

/// A retry carrying `inputResponses` for a round: answers go to the upstream that asked, and
/// the call goes on.
pub(super) async fn continuation(
    shard: &Rc<Shard>,
    id: Id,
    method: &str,
    msg: &Value<'_>,
    token: &str,
    sse: bool,
    client: Option<&Identity>,
) -> Answer {
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
        return Answer::Json(jsonrpc::error_body(
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
        return Answer::Json(jsonrpc::error_body(
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
        return Answer::Json(stateless_answer::input_required(&id, &requests, &token));
    }
    // The retry is a request of its own: its logLevel decides what it is sent.
    let log_level = stateless::requested_log_level(msg);
    if log_level.is_some() {
        shard.bridge().open_logging(shard, &round.session).await;
    }
    let call = Bridged {
        session: round.session,
        stream: round.stream,
        id,
        method: round.method,
        name: round.name,
        log_level,
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
