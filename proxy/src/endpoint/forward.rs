//! A request for a session another shard owns: sent there whole, its reply streamed back.
//!
//! The owner handles the request exactly as a local one ([`super::http::handle_owned`]) and
//! sends the reply back in parts as it is produced (head, data chunks, and why a stream ended
//! when that is not the default), so an SSE reply flows while the owner writes it. The
//! requester drops the stream when its client goes away, which cancels the owner's work.

use std::rc::Rc;

use bytes::Bytes;

use super::http::{EventSource, McpRequest, Reply};
use crate::mcp::session::Closed;
use crate::protocol::jsonrpc::code;
use crate::shard::mesh::{Mesh, Sender, Stream};
use crate::shard::Shard;

/// A piece of a forwarded reply.
pub enum ReplyPart {
    /// Status and headers; `streaming` when data parts are SSE chunks to flush one by one.
    Head {
        /// HTTP status.
        status: u16,
        /// Headers to send.
        headers: Vec<(&'static str, String)>,
        /// Whether the body is a stream.
        streaming: bool,
    },
    /// Body bytes.
    Data(Bytes),
    /// Why a streamed reply's source ran out, sent last when it is not `Finished`: the
    /// requesting shard counts the stream's end under the owner's reason.
    Ended(Closed),
}

/// The reply parts of a request forwarded to its owner shard.
pub struct RemoteEvents {
    parts: Stream<ReplyPart>,
    pub(super) ended: bool,
    /// Why the owner's stream ended, when it said.
    pub(super) closed: Option<Closed>,
}

impl RemoteEvents {
    /// The next chunk of the body; `None` at the end.
    pub async fn next(&mut self) -> Option<Bytes> {
        while !self.ended {
            match self.parts.next().await {
                Some(ReplyPart::Data(b)) => return Some(b),
                Some(ReplyPart::Ended(why)) => self.closed = Some(why),
                _ => self.ended = true,
            }
        }
        None
    }
}

/// Serves `request` on `owner` and relays its reply.
pub async fn to_owner(shard: &Rc<Shard>, owner: usize, request: McpRequest) -> Reply {
    let work = move |owner: Rc<Shard>, parts: Sender<ReplyPart>| async move {
        let reply = super::http::handle_owned(&owner, request).await;
        send_reply(&parts, reply).await;
    };
    let Some(parts) = Mesh::stream(shard, owner, work).await else {
        return Reply::error(
            503,
            code::INTERNAL_ERROR,
            "the shard owning this session is not running",
        );
    };
    // Dropping `remote` before the end tells the owner to stop, whatever path returns early.
    let mut remote = RemoteEvents {
        parts,
        ended: false,
        closed: None,
    };
    let Some(ReplyPart::Head {
        status,
        headers,
        streaming,
    }) = remote.parts.next().await
    else {
        remote.ended = true;
        return Reply::error(
            503,
            code::INTERNAL_ERROR,
            "the shard owning this session did not answer",
        );
    };
    if streaming {
        return Reply::Events {
            headers,
            source: EventSource::Remote(Box::new(remote)),
        };
    }
    let mut body = Vec::new();
    while let Some(chunk) = remote.next().await {
        body.extend_from_slice(&chunk);
    }
    Reply::Full {
        status,
        headers,
        body: Bytes::from(body),
    }
}

/// Sends the owner's reply in parts, stopping when the requesting shard is gone.
async fn send_reply(parts: &Sender<ReplyPart>, reply: Reply) {
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let head = ReplyPart::Head {
                status,
                headers,
                streaming: false,
            };
            let _ = parts.send(head).await && parts.send(ReplyPart::Data(body)).await;
        }
        Reply::Events {
            headers,
            mut source,
        } => {
            let head = ReplyPart::Head {
                status: 200,
                headers,
                streaming: true,
            };
            if !parts.send(head).await {
                return;
            }
            while let Some(chunk) = source.next().await {
                if !parts.send(ReplyPart::Data(chunk)).await {
                    return;
                }
            }
            // One more part only for the rare ends; a finished answer is the default.
            if let Some(why) = source.closed().filter(|w| *w != Closed::Finished) {
                parts.send(ReplyPart::Ended(why)).await;
            }
        }
    }
}
