//! Streamable HTTP on both sides of the proxy.
//!
//! - [`downstream`]: the `/mcp` endpoint clients talk to: status codes, sessions, SSE replies.
//! - [`upstream`]: the proxy as a client of upstream servers: pooled connections and MCP sessions.
//! - [`drain`]: whether the shard is stopping, so connections close as soon as they are idle.

pub mod downstream;
pub mod drain;
pub mod stdio;
pub mod upstream;
