//! mcp-proxy: a thread-per-core gateway that serves many upstream MCP servers as one.
//!
//! # Layout
//!
//! Folders are the layers a request passes through, top to bottom; a module imports only from
//! layers below its own (`proxy/tests/layers.rs` checks this against the table in
//! `docs/architecture.md`).
//!
//! - [`runtime`]: the process: executors, pinning, listeners, start-up checks, wiring.
//! - [`admin`]: the admin HTTP listener: `/metrics`, `/stats`, `/healthz`, the admin API.
//! - [`endpoint`]: where clients come in: the `/mcp` HTTP endpoint and the stdio endpoint.
//! - [`mcp`]: sessions, what each MCP method does, and the bridge between protocol eras.
//! - [`orchestration`]: the proxy's own tools and resources: workflows, tool search, fleet views.
//! - [`discovery`]: listing every upstream server and publishing the catalog.
//! - [`auth`]: client identity, per-client policy, rate buckets and quotas.
//! - [`upstream`]: the proxy as a client of its servers: HTTP pools, stdio children, MCP
//!   sessions, health checks.
//! - [`balance`]: choosing a replica: statistics, the circuit, the retry budget, strategies.
//! - [`shard`]: the per-core context and the mesh between cores.
//! - [`cluster`]: a fleet of proxies on etcd: the shared registry, membership, the leader.
//! - [`registry`]: the live set of servers and the catalog discovered from them.
//! - [`metrics`]: Prometheus metrics, per-shard latency histograms, structured logs.
//! - [`tls`]: rustls configurations, reloadable.
//! - [`config`]: the TOML configuration, its defaults and its validation.
//! - [`protocol`]: JSON-RPC and MCP wire facts: parsing, errors, versions, names, cursors.
//! - [`http`]: HTTP/1.1 framing for both sides (server and client) and Server-Sent Events.
//!
//! Protocol code never touches a socket; the HTTP layer never looks inside JSON-RPC.

pub mod runtime;

pub mod admin;

pub mod endpoint;

pub mod mcp;

pub mod orchestration;

pub mod discovery;

pub mod auth;

pub mod upstream;

pub mod balance;

pub mod shard;

pub mod cluster;

pub mod registry;

pub mod metrics;

pub mod tls;

pub mod config;

pub mod protocol;

pub mod http;

#[doc(hidden)]
pub mod fuzzing;
