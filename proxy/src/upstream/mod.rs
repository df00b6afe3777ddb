//! The proxy as an MCP client of its upstream servers.
//!
//! - [`client`]: the exchanges of Streamable HTTP with one server (POST, GET stream, DELETE,
//!   health check).
//! - [`credentials`]: the proxy's own `Authorization` for a server (client credentials),
//!   handed in off the shards; a client's token is never sent upstream.
//! - [`pool`]: one shard's keep-alive connections to each replica of a server.
//! - [`message_stream`]: the messages that answer one request (SSE, resumed; or relayed).
//! - [`error`]: why an exchange failed, and whether repeating it elsewhere is safe.
//! - [`cancel`]: `notifications/cancelled` for a request the proxy stopped waiting for.
//! - [`deadline`]: how long an answer may take: the server's `timeout`, moved on by progress.
//! - [`session`]: one upstream MCP session over HTTP: initialize, re-initialize when the server
//!   forgot it, and the GET stream that carries the server's own messages.
//! - [`handle`]: a downstream session's way to one upstream, HTTP or stdio alike.
//! - [`subscriptions`]: the resource subscriptions an upstream session renews when re-opened.
//! - [`retry_after`]: the pause a replica's 503 or 429 asks for, handed to the balancer.
//! - [`stdio`]: servers run as child processes, one shared MCP session per child.
//! - [`health`]: active health checks of every replica, per shard.
//! - [`table`]: every server of the live registry as this shard reaches it, by index.

pub mod cancel;
pub mod client;
pub mod credentials;
pub mod deadline;
pub mod error;
pub mod handle;
pub mod health;
pub mod message_stream;
pub mod pool;
pub mod retry_after;
pub mod session;
pub mod stdio;
pub mod subscriptions;
pub mod table;

pub use client::{MessageStream, PostReply, ReplyBody, UpstreamClient, UpstreamError};
pub use handle::{Upstream, UpstreamHandle, STDIO_SHARD};
pub use session::{UpstreamSession, UpstreamSink};
pub use table::Upstreams;
