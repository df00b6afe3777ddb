//! What the MCP layer answers a client's message with, in both eras: one type, which the
//! `/mcp` endpoint turns into an HTTP reply and the stdio endpoint into lines, each in one
//! function (`endpoint::http::reply`, `endpoint::stdio::write_answer`).

use std::rc::Rc;

use bytes::Bytes;

use crate::mcp::session::Session;
use crate::metrics::Outcome;

/// How the endpoint should answer a client's message.
pub enum Answer {
    /// One JSON-RPC message: the answer (HTTP 200).
    Json(Bytes),
    /// A JSON-RPC error refusing the message itself (HTTP 400): not a valid JSON-RPC message,
    /// a header that contradicts the body, an unsupported protocol version.
    Refused(Bytes),
    /// A -32601 error for a method the client's protocol era does not have (HTTP 404).
    Unknown(Bytes),
    /// A notification or response was taken; there is nothing to say (HTTP 202).
    Accepted,
    /// The answer comes on this stream of this session (SSE), with any messages before it.
    Stream(Rc<Session>, u64),
    /// The exchange ends without a JSON-RPC message: the request was cancelled (an empty
    /// event stream over HTTP, nothing on stdio).
    Silent,
}

impl Answer {
    /// `Ok` or `Error` as a local answer's metric counts it: by the JSON-RPC message, and
    /// `Ok` for an answer that is no single message (a stream, a cancelled exchange).
    pub fn outcome(&self) -> Outcome {
        match self {
            Answer::Json(body) | Answer::Refused(body) | Answer::Unknown(body) => {
                Outcome::of_response(body)
            }
            Answer::Accepted | Answer::Stream(..) | Answer::Silent => Outcome::Ok,
        }
    }
}
