//! The messages that answer one request: an upstream's SSE stream (resumed with
//! `Last-Event-ID` when the server ends it early), or what a stdio link relays.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::local_channel::LocalReceiver;

use super::client::{UpstreamClient, MAX_UPSTREAM_MESSAGE};
use super::deadline::{self, AnswerDeadline};
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
                        self.client.pool.checkin(self.replica, conn);
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
