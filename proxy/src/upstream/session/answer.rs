//! Reading a POST's answer until the response to one request.

use bytes::Bytes;
use simd_json::prelude::*;

use crate::protocol::jsonrpc::{self, Id};
use crate::upstream::client::{PostReply, ReplyBody};
use crate::upstream::error::UpstreamError;

/// The id of a response message, or `None` when the message is not a response.
pub fn response_id(message: &[u8]) -> Option<Id> {
    let mut buf = message.to_vec();
    let v = jsonrpc::parse(&mut buf).ok()?;
    if v.contains_key("method") {
        return None;
    }
    v.get("id").and_then(Id::from_value)
}

/// Reads a POST's answer until the response to `id`; anything else goes to `other`.
pub async fn await_answer(
    server: &str,
    reply: PostReply,
    id: &Id,
    other: impl Fn(Bytes),
) -> Result<Bytes, UpstreamError> {
    match reply.body {
        ReplyBody::Json(b) => Ok(b),
        ReplyBody::Accepted => Err(UpstreamError::Protocol {
            server: server.to_owned(),
            detail: "a request was answered with 202 Accepted".into(),
        }),
        ReplyBody::Stream(mut stream) => {
            while let Some(message) = stream.next().await? {
                if response_id(&message).as_ref() == Some(id) {
                    return Ok(message);
                }
                other(message);
            }
            Err(UpstreamError::Protocol {
                server: server.to_owned(),
                detail: "the answer ended before the response".into(),
            })
        }
    }
}
