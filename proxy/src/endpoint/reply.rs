//! What the `/mcp` endpoint writes: the HTTP reply ([`Reply`]), the one mapping from the MCP
//! layer's [`Answer`] to it ([`reply`]), and the event sources an SSE reply reads (a stream of
//! a session on this shard, or the parts relayed from the session's owner shard).

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::future::poll_fn;

use super::forward::RemoteEvents;
use crate::http::sse;
use crate::mcp::routing::Answer;
use crate::mcp::session::{Next, Session};
use crate::metrics::Closed;
use crate::protocol::jsonrpc;
use crate::protocol::version;

/// A comment sent on idle SSE streams so dead clients are noticed and middleboxes keep the line.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(25);

/// An answer to write.
pub enum Reply {
    /// A complete response.
    Full {
        /// HTTP status.
        status: u16,
        /// Headers besides Content-Length.
        headers: Vec<(&'static str, String)>,
        /// The body.
        body: Bytes,
    },
    /// An SSE stream.
    Events {
        /// Headers besides the SSE ones.
        headers: Vec<(&'static str, String)>,
        /// Where the events come from.
        source: EventSource,
    },
}

impl Reply {
    pub(super) fn json(status: u16, body: Bytes) -> Reply {
        Reply::Full {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body,
        }
    }

    /// An HTTP error with a JSON-RPC error body explaining it.
    pub fn error(status: u16, rpc_code: i32, message: &str) -> Reply {
        Reply::json(status, jsonrpc::error_body(None, rpc_code, message))
    }
}

/// Encoded SSE events, from a local session or from the owner shard.
pub enum EventSource {
    /// Following a stream of a session on this shard.
    Follow(Follower),
    /// Relayed from the owner shard.
    Remote(Box<RemoteEvents>),
    /// Relayed from the fleet member serving the session.
    Member(Box<super::member_forward::MemberEvents>),
}

impl EventSource {
    /// The next encoded event (or keep-alive comment); `None` at the end.
    pub async fn next(&mut self) -> Option<Bytes> {
        match self {
            EventSource::Follow(f) => f.next().await,
            EventSource::Remote(r) => r.next().await,
            EventSource::Member(m) => m.next().await,
        }
    }

    /// Why the source ran out, as the session's owner told; `None` while it has not.
    pub fn closed(&self) -> Option<Closed> {
        match self {
            EventSource::Follow(f) => f.closed,
            // The owner tells only reasons other than `Finished` (see `ReplyPart::Ended`).
            EventSource::Remote(r) => r.ended.then_some(r.closed.unwrap_or(Closed::Finished)),
            EventSource::Member(m) => m.closed(),
        }
    }
}

/// Reads one of a session's streams from a position.
pub struct Follower {
    /// Counts this stream against the session's limit while it is open.
    _slot: Option<crate::endpoint::limits::StreamSlot>,
    session: Rc<Session>,
    stream: u64,
    after: u64,
    epoch: u64,
    /// Whether the priming event is still to be sent; encoded when sent, so a `Reply` (an
    /// `Err` of many functions) stays small.
    prime: bool,
    /// Why the stream ended, once it has.
    closed: Option<Closed>,
}

impl Follower {
    /// Follows `stream` from after `after`, displacing any other reader of it.
    pub fn new(session: Rc<Session>, stream: u64, after: u64) -> Follower {
        let epoch = session.events.claim(stream);
        // 2025-11-25: open with an id and empty data, so a client can resume before any message.
        let prime = version::primes_streams(&session.version);
        Follower {
            _slot: None,
            session,
            stream,
            after,
            epoch,
            prime,
            closed: None,
        }
    }

    /// Keeps `slot` until the stream ends.
    pub(super) fn holding(mut self, slot: crate::endpoint::limits::StreamSlot) -> Follower {
        self._slot = Some(slot);
        self
    }

    async fn next(&mut self) -> Option<Bytes> {
        if self.closed.is_some() {
            return None;
        }
        if std::mem::take(&mut self.prime) {
            let id = format!("{}-{}", self.stream, self.after);
            return Some(sse::encode_event(Some(&id), b""));
        }
        let wait = poll_fn(|cx| {
            self.session
                .events
                .poll_next(self.stream, self.after, self.epoch, cx)
        });
        let next = match glommio::timer::timeout(KEEPALIVE_EVERY, async { Ok(wait.await) }).await {
            Ok(next) => next,
            Err(_) => return Some(Bytes::from_static(b": keep-alive\n\n")),
        };
        match next {
            Next::Event(seq, message) => {
                self.after = seq;
                self.session.touch();
                Some(sse::encode_event(
                    Some(&format!("{}-{seq}", self.stream)),
                    &message,
                ))
            }
            Next::End(why) => {
                self.closed = Some(why);
                // The server behind ended the stream early: so does this one, telling the
                // client when to reconnect (with the last event id it saw) as the server did.
                self.session
                    .events
                    .paused_retry(self.stream)
                    .map(sse::encode_retry)
            }
        }
    }
}

/// The HTTP reply to an MCP answer: the one place answers become statuses. A message is 200,
/// a refused message 400, a method the client's era lacks 404, a taken notification or
/// response 202; a stream is SSE (counted against the session's stream limit when `slot` is
/// given), and a cancelled exchange an empty event stream (no message, no event id to
/// resume from).
pub fn reply(answer: Answer, slot: Option<crate::endpoint::limits::StreamSlot>) -> Reply {
    match answer {
        Answer::Json(body) => Reply::json(200, body),
        Answer::Refused(body) => Reply::json(400, body),
        Answer::Unknown(body) => Reply::json(404, body),
        Answer::Accepted => Reply::Full {
            status: 202,
            headers: Vec::new(),
            body: Bytes::new(),
        },
        Answer::Silent => Reply::Full {
            status: 200,
            headers: vec![("Content-Type", "text/event-stream".into())],
            body: Bytes::new(),
        },
        Answer::Stream(session, stream) => {
            let follower = Follower::new(session, stream, 0);
            Reply::Events {
                // Proxies in front (nginx) pass each event on as it comes.
                headers: vec![("X-Accel-Buffering", "no".into())],
                source: EventSource::Follow(match slot {
                    Some(slot) => follower.holding(slot),
                    None => follower,
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(answer: Answer) -> (u16, Option<String>, Bytes) {
        match reply(answer, None) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let ctype = headers
                    .into_iter()
                    .find(|(k, _)| *k == "Content-Type")
                    .map(|(_, v)| v);
                (status, ctype, body)
            }
            Reply::Events { .. } => panic!("a complete answer became a stream"),
        }
    }

    #[test]
    fn each_answer_has_its_status() {
        let message = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        let json = Some("application/json".to_owned());
        assert_eq!(
            written(Answer::Json(message.clone())),
            (200, json.clone(), message.clone())
        );
        assert_eq!(
            written(Answer::Refused(message.clone())),
            (400, json.clone(), message.clone())
        );
        assert_eq!(
            written(Answer::Unknown(message.clone())),
            (404, json, message)
        );
        assert_eq!(written(Answer::Accepted), (202, None, Bytes::new()));
        assert_eq!(
            written(Answer::Silent),
            (200, Some("text/event-stream".to_owned()), Bytes::new()),
            "a cancelled exchange is an empty event stream"
        );
    }
}
