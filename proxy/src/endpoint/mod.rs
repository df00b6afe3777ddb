//! The endpoints clients reach: the `/mcp` HTTP endpoint and the proxy as a stdio server.
//!
//! - [`http`]: `/mcp` semantics: status codes, Accept/Origin/version checks, SSE replies, and
//!   handing a request for another shard's session to its owner.
//! - [`forward`]: a request for a session another shard owns, sent there and its reply
//!   streamed back.
//! - [`stdio`]: the proxy itself as a stdio MCP server (`mcp-proxy --stdio`).
//! - [`drain`]: whether the shard is stopping, so connections close as soon as they are idle.
//! - [`limits`]: connection and stream counts, and the listener's HTTP limits.

pub mod drain;
pub mod forward;
pub mod http;
pub mod limits;
pub mod stdio;
