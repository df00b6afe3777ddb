//! The proxy as an MCP client of its upstream servers.
//!
//! - [`client`]: one shard's keep-alive pool per server and the HTTP exchanges of Streamable HTTP.
//! - [`session`]: one upstream MCP session: initialize, re-initialize when the server forgot it,
//!   and the GET stream that carries the server's own messages.

pub mod client;
pub mod session;

pub use client::{MessageStream, PostReply, ReplyBody, UpstreamClient, UpstreamError};
pub use session::{UpstreamSession, UpstreamSink};
