//! stdio on both sides.
//!
//! - [`child`]: spawning and ending a server's child process (own process group, killed with
//!   the proxy, stderr into the proxy's log).
//! - [`link`]: the one MCP session with a child, shared by every downstream session:
//!   multiplexing with id and progress-token rewriting, routing what the child sends back to
//!   the session that caused it, restarts with backoff and a crash-loop limit.
//! - [`downstream`]: the proxy itself as a stdio MCP server (`mcp-proxy --stdio`).
//! - [`lines`]: newline-delimited framing shared by both sides.
//! - [`stderr_log`]: a child's stderr into the proxy's log, bounded per line and rate-limited.

pub mod child;
pub mod downstream;
pub mod lines;
pub mod link;
pub mod program;
pub mod stderr_log;
