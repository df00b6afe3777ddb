//! The messages that answer one request: an upstream's SSE stream (resumed with
//! `Last-Event-ID` when the server ends it early: after its `retry` hint, or when the caller
//! says, see [`StreamItem::Paused`]), or what a stdio link relays.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::local_channel::LocalReceiver;

use super::client::{UpstreamClient, MAX_UPSTREAM_MESSAGE};
use super::deadline::{self, AnswerDeadline, MaybeMessage};
use super::error::UpstreamError;
use crate::http::{ClientConn, OwnedBody, ResponseHead, SseParser};
use crate::shard::mesh::Stream;
use crate::tls::UpstreamStream;
use crate::upstream::handle::StdioPart;

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
    /// The request's exchanged token, if it carried one.
    authorization: Option<String>,
    attempts: u32,
    retry: Duration,
}

/// Resumptions of one request's stream before the proxy gives up on the answer.
const MAX_RESUMES: u32 = 3;

/// The longest the proxy waits, on its own, before resuming a stream the server ended early
/// (a server's `retry` hint may be far longer than a request's answer can wait).
pub const MAX_OWN_WAIT: Duration = Duration::from_secs(5);

/// What reading a request's stream gave.
pub enum StreamItem {
    /// A message's JSON.
    Message(Bytes),
    /// The stream ended.
    End,
    /// The server ended the stream early after an event id, asking for a reconnect after
    /// this long (its `retry` hint, 1 s without one); [`MessageStream::resume`] picks it up.
    Paused(Duration),
}

impl MaybeMessage for StreamItem {
    fn message(&self) -> Option<&[u8]> {
        match self {
            StreamItem::Message(m) => Some(m),
            _ => None,
        }
    }
}

impl SseMessages {
    pub(super) fn new(
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
    pub(super) fn resumable(
        mut self,
        session: Option<(&str, &str)>,
        authorization: Option<&str>,
    ) -> Self {
        self.resume = session.map(|(session_id, version)| Resume {
            session_id: session_id.to_owned(),
            version: version.to_owned(),
            authorization: authorization.map(str::to_owned),
            attempts: 0,
            retry: Duration::from_secs(1),
        });
        self
    }

    /// The answer has been read: the end of the stream is expected, do not resume it.
    pub fn stop_resuming(&mut self) {
        self.resume = None;
    }

    /// Reopens the stream after its last event now; false when that is not possible.
    pub async fn resume(&mut self) -> bool {
        let (Some(resume), Some(last)) = (self.resume.as_mut(), self.last_event_id.as_deref())
        else {
            return false;
        };
        if resume.attempts >= MAX_RESUMES {
            return false;
        }
        resume.attempts += 1;
        match self
            .client
            .open_stream(
                self.replica,
                &resume.session_id,
                &resume.version,
                Some(last),
                resume.authorization.as_deref(),
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

    /// The next message's JSON, or `None` when the upstream ended the stream; a stream the
    /// server ends early is resumed after its `retry` hint (at most 5 s). A request's
    /// stream fails with [`UpstreamError::Timeout`] once its deadline passes, however busy
    /// with keep-alives the server keeps it; a progress notification moves the deadline on.
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            match self.next_item().await? {
                StreamItem::Message(m) => return Ok(Some(m)),
                StreamItem::End => return Ok(None),
                StreamItem::Paused(retry) => {
                    glommio::timer::sleep(retry.min(MAX_OWN_WAIT)).await;
                    if !self.resume().await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Like [`next`](Self::next), but a stream the server ends early and that can be resumed
    /// is [`StreamItem::Paused`], for the caller to [`resume`](Self::resume) when it sees fit.
    pub async fn next_item(&mut self) -> Result<StreamItem, UpstreamError> {
        let Some(mut deadline) = self.deadline else {
            return self.read_item().await;
        };
        let next = deadline.next_message(self.read_item()).await;
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

    async fn read_item(&mut self) -> Result<StreamItem, UpstreamError> {
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
                    return Ok(StreamItem::Message(Bytes::from(event.data)));
                }
                Ok(None) => {}
                Err(e) => return Err(self.protocol_error(e.to_string())),
            }
            let Some(body) = self.body.as_mut() else {
                return Ok(StreamItem::End);
            };
            match body.next_chunk().await {
                Ok(Some(bytes)) => self.parser.push(&bytes),
                Ok(None) => {
                    if let Some(conn) = self.body.take().and_then(OwnedBody::into_conn) {
                        self.client.pool.checkin(self.replica, conn);
                    }
                    return Ok(match (&self.resume, &self.last_event_id) {
                        (Some(r), Some(_)) if r.attempts < MAX_RESUMES => {
                            StreamItem::Paused(r.retry)
                        }
                        _ => StreamItem::End,
                    });
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
    pub(super) fn sse(messages: SseMessages) -> Self {
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

    /// The next message, the end, or (an SSE stream the server ended early) a pause, for
    /// the caller to [`resume`](Self::resume) when it sees fit.
    pub async fn next_item(&mut self) -> Result<StreamItem, UpstreamError> {
        if let (Source::Sse(s), None) = (&mut self.source, &self.deadline) {
            return s.next_item().await;
        }
        Ok(match self.next().await? {
            Some(m) => StreamItem::Message(m),
            None => StreamItem::End,
        })
    }

    /// Reopens a paused SSE stream after its last event; false when that is not possible.
    pub async fn resume(&mut self) -> bool {
        match &mut self.source {
            Source::Sse(s) => s.resume().await,
            _ => false,
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
