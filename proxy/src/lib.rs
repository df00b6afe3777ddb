//! mcp-proxy: a thread-per-core gateway that serves many upstream MCP servers as one.
//!
//! # Layout
//! - [`balance`]: choosing a replica: per-shard latency, load and failure statistics.
//! - [`health`]: active health checks of every replica, per shard.
//! - [`config`]: the TOML configuration, its defaults and its validation.
//! - [`runtime`]: starts one glommio executor per core and wires the shards together.
//! - [`listener`]: binds the listeners; refuses a fixed port in use unless told to take it over.
//! - [`shard`]: what one core owns (sessions, pools, catalog) and cross-shard forwarding.
//! - [`http`]: HTTP/1.1 framing for both sides (server and client) and Server-Sent Events.
//! - [`protocol`]: JSON-RPC and MCP wire facts: message peeking, errors, versions, names, cursors.
//! - [`transport`]: Streamable HTTP semantics, downstream (the `/mcp` endpoint) and upstream (a client).
//! - [`session`]: downstream sessions, their event streams and the id maps that relay a conversation.
//! - [`registry`]: configured upstream servers and the catalog discovered from them.
//! - [`routing`]: what each MCP method does: answer locally, aggregate, or forward to one server.
//! - [`orchestration`]: the proxy's own tools and resources: workflows, tool search, fleet views.
//! - [`metrics`]: Prometheus metrics, per-shard latency histograms, structured logs.
//! - [`admin`]: the admin HTTP listener (`/metrics`, `/stats`, `/healthz`).
//!
//! Protocol code never touches a socket; the HTTP layer never looks inside JSON-RPC.

pub mod admin;
pub mod admin_token;
pub mod auth;
pub mod balance;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod limits;
pub mod listener;
pub mod memlock;
pub mod metrics;
pub mod orchestration;
pub mod protocol;
pub mod registry;
pub mod routing;
pub mod runtime;
pub mod session;
pub mod shard;
pub mod tls;
pub mod transport;
