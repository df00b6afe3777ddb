//! The endpoints clients reach: the `/mcp` HTTP endpoint and the proxy as a stdio server.
//!
//! - [`accept`]: a connection the listener accepted: the connection limit, the TLS handshake.
//! - [`gate`]: the door of `/mcp`: credentials and rate checked, and auth's refusals answered.
//! - [`http`]: `/mcp` semantics: status codes, Accept/Origin/version checks, SSE replies, and
//!   handing a request for another shard's session to its owner.
//! - [`forward`]: a request for a session another shard owns, sent there and its reply
//!   streamed back.
//! - [`reply`]: the HTTP reply, mapped from the MCP layer's answer in one function, and the
//!   event sources of SSE replies.
//! - [`stdio`]: the proxy itself as a stdio MCP server (`mcp-proxy --stdio`).
//! - [`limits`]: connection and stream counts, and the listener's HTTP limits.

pub mod accept;
pub mod forward;
pub mod gate;
pub mod http;
pub mod limits;
pub mod member_forward;
pub mod reply;
pub mod stdio;
