//! mcp-loadgen: drive an MCP server or gateway with load, and play a fast, fault-injecting
//! MCP server for it to sit in front of.
//!
//! # Layout
//! - [`client`]: one Streamable HTTP connection speaking MCP: initialize, post, read JSON or SSE.
//! - [`era`]: stateful sessions or 2026-07-28 requests, and the envelope the latter carry.
//! - [`mix`]: the request mix (`tools/call:echo:{..}=8,ping=1`) and the bodies it sends.
//! - [`preflight`]: checks the tools a mix calls against the server's `tools/list`.
//! - [`run`]: the load driver: threads, connections, closed and open loop, warm-up, progress.
//! - [`report`]: latency histograms and error counts, the table and the JSON report.
//! - [`timeline`]: the run cut into slices, with the host's steal time per slice.
//! - [`sessions`]: opens many idle sessions (to measure what one costs a server).
//! - [`upstream`]: the MCP server with injected latency, errors, stalls and crashes.
//! - [`duration`]: `10s` / `250ms` style durations on the command line.
//!
//! # How to use
//! The binary (`mcp-loadgen run|upstream|sessions`) is a thin layer over [`run::run`],
//! [`upstream::start`] and [`sessions::open`]. Every network task runs on glommio executors,
//! like the proxy, so no second async runtime is involved.

#![warn(missing_docs)]

pub mod client;
pub mod duration;
pub mod era;
pub mod mix;
pub mod preflight;
pub mod report;
pub mod run;
pub mod sessions;
pub mod timeline;
pub mod upstream;
