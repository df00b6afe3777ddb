//! The client session a proxy tool runs for, as orchestration needs it, and what a tool
//! answers.
//!
//! Orchestration sits below the MCP layer: it never sees a session or routing. The MCP layer
//! hands each call a [`Caller`] (its session implements it) and turns the [`ToolReply`] into
//! its own answer, forwarding a [`ToolReply::Forward`] as it forwards a client's own request.

use std::rc::Rc;

use bytes::Bytes;

use crate::auth::Policy;
use crate::protocol::jsonrpc::Id;
use crate::registry::Catalog;
use crate::shard::Shard;
use crate::upstream::UpstreamHandle;

/// The session a proxy tool runs for: whom it acts as, where its upstream calls go, where its
/// progress is sent.
pub trait Caller {
    /// The session's id.
    fn session_id(&self) -> &str;

    /// The shard the session lives on, while it does.
    fn shard(&self) -> Option<Rc<Shard>>;

    /// The client's policy, when `[auth]` gives it one (checks made through it count no
    /// refusal: what is filtered out is hidden, not refused).
    fn policy(&self) -> Option<Policy>;

    /// Whether the client may call `exposed` of catalog server `server` (a refusal is
    /// counted).
    fn permits_tool(&self, catalog: &Catalog, server: usize, exposed: &str) -> bool;

    /// The session's upstream session with `server`, opened when first needed.
    fn upstream(&self, server: usize) -> Option<UpstreamHandle>;

    /// True when the client cancelled `request` or the session ended.
    fn abandoned(&self, request: &Id) -> bool;

    /// Opens a new stream of the session for an SSE answer and returns its id.
    fn open_stream(&self) -> u64;

    /// Sends `message` on stream `stream`, or on the session's standalone stream (its GET
    /// stream) when `None`.
    fn send(&self, stream: Option<u64>, message: Bytes);

    /// Ends stream `stream` after what was sent on it.
    fn finish_stream(&self, stream: u64);
}

/// What a proxy tool answers.
#[derive(Debug)]
pub enum ToolReply {
    /// One JSON-RPC message.
    Json(Bytes),
    /// The answer comes on this stream of the session (SSE).
    Stream(u64),
    /// No answer: the request was cancelled (the spec sends none).
    Silent,
    /// Send `request` (a `tools/call` with the tool's own name and the client's id) to
    /// catalog server `server` as the client's own request, and answer what it answers.
    Forward {
        /// The catalog server.
        server: usize,
        /// The JSON-RPC request.
        request: Bytes,
    },
}
