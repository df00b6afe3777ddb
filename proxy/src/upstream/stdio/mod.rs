//! Upstream servers run as child processes over stdio.
//!
//! - [`child`]: spawning and ending a server's child process (own process group, killed with
//!   the proxy, stderr into the proxy's log).
//! - [`connection`]: the one MCP session with a child, shared by every downstream session:
//!   multiplexing with id and progress-token rewriting, routing what the child sends back to
//!   the session that caused it, restarts with backoff and a crash-loop limit.
//! - [`program`]: finding a server's program before it is started.
//! - [`lines`]: newline-delimited framing (also read by the proxy's own stdio endpoint).
//! - [`stderr_log`]: a child's stderr into the proxy's log, bounded per line and rate-limited.

pub mod child;
pub mod connection;
pub mod lines;
pub mod program;
pub mod stderr_log;
