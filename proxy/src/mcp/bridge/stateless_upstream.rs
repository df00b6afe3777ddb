//! A 2026-07-28 upstream's `input_required` answered for a stateful-era client.
//!
//! The stateless era replaced server-to-client requests with multi-round-trip results: the
//! server answers `InputRequiredResult` (`inputRequests`, `requestState`) and the client
//! retries with `inputResponses`. A stateful client knows only server-to-client requests, so
//! the proxy asks each input request as one, on the call's SSE stream (or the session's GET
//! stream when the client takes only JSON), collects the answers, and retries the original
//! request upstream itself, until the upstream gives a final result. The client sees one call
//! with sampling or elicitation in the middle, exactly as from a stateful server.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use crate::mcp::routing::forward::{self, InFlight, Step};
use crate::mcp::routing::relay;
use crate::mcp::routing::Answer;
use crate::mcp::session::{Session, STANDALONE};
use crate::metrics::{Forwarded, Outcome};
use crate::protocol::jsonrpc::{self, code, Id};
use crate::protocol::{stateless, stateless_answer};
use crate::upstream::{ReplyBody, UpstreamHandle};

/// Rounds before the proxy gives up on a server that keeps asking (the SDKs' default cap).
const MAX_ROUNDS: usize = 10;
/// How long the proxy waits for the client to answer one round.
const ANSWER_WAIT: Duration = Duration::from_secs(600);

/// True when a relayed final answer is an `InputRequiredResult`.
pub fn requires_input(answer: &[u8]) -> bool {
    let mut buf = answer.to_vec();
    jsonrpc::parse(&mut buf).is_ok_and(|m| stateless::is_input_required(&m))
}

/// One client call to a stateless upstream being resolved round by round.
pub struct Call {
    /// The client's session.
    pub session: Rc<Session>,
    /// The upstream server.
    pub server: usize,
    /// The session's way to it.
    pub upstream: UpstreamHandle,
    /// The client's request id.
    pub client_id: Id,
    /// The request as first sent upstream (names mapped).
    pub original: Bytes,
    /// The replica that asked; retries go there while it is usable.
    pub pin: std::cell::Cell<Option<usize>>,
}

impl Call {
    /// Answers `first` (an input_required answer) by asking the client and retrying.
    pub(in crate::mcp) async fn resolve(
        self,
        first: Bytes,
        accepts_sse: bool,
        mut timing: Forwarded,
        guard: InFlight,
    ) -> Answer {
        timing.waits_on_client();
        if !accepts_sse {
            let answer = self.rounds(first, STANDALONE).await;
            timing.finish(Outcome::of_response(&answer));
            drop(guard);
            return Answer::Json(answer);
        }
        let out = self.session.events.open();
        let session = self.session.clone();
        let handed = self.session.clone();
        glommio::spawn_local(async move {
            let answer = self.rounds(first, out).await;
            timing.finish(Outcome::of_response(&answer));
            if !session.abandoned(&self.client_id) {
                session.events.push(out, answer);
            }
            session.events.finish(out);
            drop(guard);
        })
        .detach();
        Answer::Stream(handed, out)
    }

    async fn rounds(&self, mut answer: Bytes, out: u64) -> Bytes {
        for _ in 0..MAX_ROUNDS {
            let mut buf = answer.to_vec();
            let Ok(msg) = jsonrpc::parse(&mut buf) else {
                return answer;
            };
            if !stateless::is_input_required(&msg) {
                drop(msg);
                return stateless_answer::undress(answer);
            }
            let result = msg.get("result");
            let state = result
                .and_then(|r| r.get_str("requestState"))
                .map(str::to_owned);
            let responses = match result.and_then(|r| r.get("inputRequests")) {
                Some(requests) => match self.ask(requests, out).await {
                    Ok(r) => Some(r),
                    Err(error) => return error,
                },
                None => None,
            };
            drop(msg);
            answer = match self
                .retry(responses.as_deref(), state.as_deref(), out)
                .await
            {
                Ok(a) => a,
                Err(error) => return error,
            };
        }
        jsonrpc::error_body(
            Some(&self.client_id),
            code::UPSTREAM_PROTOCOL,
            &format!(
                "server {} asked for input more than {MAX_ROUNDS} times; giving up",
                self.upstream.name()
            ),
        )
    }

    /// Asks every input request as a server-to-client request and collects the results as
    /// an `inputResponses` object (JSON text).
    async fn ask(&self, requests: &Value<'_>, out: u64) -> Result<String, Bytes> {
        let Some(requests) = requests.as_object() else {
            return Err(self.error("inputRequests is not an object"));
        };
        let (tx, rx) = glommio::channels::local_channel::new_unbounded();
        let tx = Rc::new(tx);
        let mut keys: Vec<(Id, String)> = Vec::with_capacity(requests.len());
        for (key, request) in requests.iter() {
            let proxy_id = self.session.register_waiter(tx.clone());
            let mut message = Vec::with_capacity(128);
            message.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
            proxy_id.write_json(&mut message);
            message.extend_from_slice(br#","method":"#);
            jsonrpc::write_json_string(&mut message, request.get_str("method").unwrap_or(""));
            if let Some(params) = request.get("params") {
                message.extend_from_slice(br#","params":"#);
                message.extend_from_slice(params.encode().as_bytes());
            }
            message.push(b'}');
            self.session.events.push(out, Bytes::from(message));
            keys.push((proxy_id, key.to_string()));
        }
        let ids: Vec<Id> = keys.iter().map(|(id, _)| id.clone()).collect();
        let mut collected = String::from("{");
        for n in 0..keys.len() {
            let got = glommio::timer::timeout(ANSWER_WAIT, async { Ok(rx.recv().await) }).await;
            let Ok(Some((proxy_id, reply))) = got else {
                self.session.forget_waiters(&ids);
                return Err(self.error("the client did not answer the server's input request"));
            };
            let mut buf = reply.to_vec();
            let Ok(reply) = jsonrpc::parse(&mut buf) else {
                continue;
            };
            if let Some(error) = reply.get("error") {
                self.session.forget_waiters(&ids);
                let message = error.get_str("message").unwrap_or("refused");
                return Err(self.error(&format!(
                    "the client refused the server's input request: {message}"
                )));
            }
            let Some(key) = keys.iter().find(|(id, _)| *id == proxy_id).map(|(_, k)| k) else {
                continue;
            };
            if n > 0 {
                collected.push(',');
            }
            let mut k = Vec::new();
            jsonrpc::write_json_string(&mut k, key);
            collected.push_str(&String::from_utf8_lossy(&k));
            collected.push(':');
            collected.push_str(
                &reply
                    .get("result")
                    .map_or_else(|| "{}".into(), |r| r.encode()),
            );
        }
        collected.push('}');
        Ok(collected)
    }

    /// Sends the original request again with the client's answers and the server's state.
    async fn retry(
        &self,
        responses: Option<&str>,
        state: Option<&str>,
        out: u64,
    ) -> Result<Bytes, Bytes> {
        let mut buf = self.original.to_vec();
        let mut responses_buf = responses.unwrap_or("{}").as_bytes().to_vec();
        let mut msg = jsonrpc::parse(&mut buf).map_err(|e| self.error(&e.to_string()))?;
        let upstream_id = self.upstream.next_id();
        jsonrpc::set_member(&mut msg, "id", upstream_id.to_value());
        if let Some(params) = msg.get_mut("params") {
            if responses.is_some() {
                let parsed = simd_json::to_borrowed_value(&mut responses_buf)
                    .map_err(|e| self.error(&e.to_string()))?;
                jsonrpc::set_member(params, "inputResponses", parsed);
            }
            if let Some(state) = state {
                jsonrpc::set_member(params, "requestState", Value::from(state.to_owned()));
            }
        }
        let body = jsonrpc::to_bytes(&msg);
        drop(msg);
        let reply = self
            .upstream
            .send_pinned(&body, false, &self.pin)
            .await
            .map_err(|e| forward::upstream_error(&self.client_id, &e))?;
        let exchange = Some((&upstream_id, &self.client_id));
        match reply.body {
            ReplyBody::Json(b) => {
                match relay::from_upstream(&self.session, self.server, exchange, &b) {
                    relay::Relayed::Final(answer) => Ok(answer),
                    _ => Err(self.error("the server's answer is not the response")),
                }
            }
            ReplyBody::Accepted => {
                Err(self.error("the server accepted the retry without answering"))
            }
            ReplyBody::Stream(mut stream) => loop {
                let step = forward::next_relayed(
                    &self.session,
                    self.server,
                    &mut stream,
                    &upstream_id,
                    &self.client_id,
                )
                .await;
                match step {
                    Step::Message(m) => self.session.events.push(out, m),
                    Step::Final(answer) => {
                        forward::drain(stream);
                        return Ok(answer);
                    }
                    Step::Failed(answer) | Step::Expired(answer, _) => return Err(answer),
                }
            },
        }
    }

    fn error(&self, why: &str) -> Bytes {
        jsonrpc::error_body(
            Some(&self.client_id),
            code::UPSTREAM_PROTOCOL,
            &format!("server {}: {why}", self.upstream.name()),
        )
    }
}
