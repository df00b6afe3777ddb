//! Every exported metric name, so the dashboards, the rules and the tests can be checked.

/// Forwarded requests by `server`, `method` and `outcome` (counter).
pub const REQUESTS_TOTAL: &str = "mcp_proxy_requests_total";
/// Requests the proxy answered itself, by `method` and `outcome` (counter).
pub const LOCAL_ANSWERS: &str = "mcp_proxy_local_answers_total";
/// End-to-end latency of POSTed requests, read to written (histogram, seconds).
pub const REQUEST_DURATION: &str = "mcp_proxy_request_duration_seconds";
/// Upstream latency by `server` and `replica`: request sent to response received.
pub const UPSTREAM_DURATION: &str = "mcp_proxy_upstream_duration_seconds";
/// The proxy's own time on a forwarded request, by `server`: read to answer ready, less
/// the wait for the upstream (histogram, seconds).
pub const OVERHEAD: &str = "mcp_proxy_overhead_seconds";
/// Forwarded requests waiting on an upstream, by `shard` (gauge).
pub const INFLIGHT: &str = "mcp_proxy_inflight_requests";
/// Downstream sessions by owner `shard` (gauge).
pub const SESSIONS: &str = "mcp_proxy_sessions";
/// 2026-07-28 bridge sessions (one per client key) by owner `shard` (gauge).
pub const BRIDGE_SESSIONS: &str = "mcp_proxy_bridge_sessions";
/// Open client connections by `shard` (gauge).
pub const CONNECTIONS: &str = "mcp_proxy_connections";
/// Client connections accepted by `shard` (counter).
pub const CONNECTIONS_TOTAL: &str = "mcp_proxy_connections_total";
/// 1 when discovery last reached `server`, 0 when it did not (gauge).
pub const UPSTREAM_UP: &str = "mcp_proxy_upstream_up";
/// Bytes read from clients, by `shard` (counter).
pub const BYTES_RECEIVED: &str = "mcp_proxy_bytes_received_total";
/// Bytes written to clients, by `shard` (counter).
pub const BYTES_SENT: &str = "mcp_proxy_bytes_sent_total";
/// Replicas chosen for new work (session bindings, stateless requests), by replica.
pub const BALANCER_PICKS: &str = "mcp_proxy_balancer_picks_total";
/// 1 while shard 0's balancer is in panic for `server` (too few replicas available, so
/// it tries those that are out), 0 otherwise (gauge).
pub const BALANCER_PANIC: &str = "mcp_proxy_balancer_panic";
/// Work the panic rule sent to a replica that was out (a pick, a session opened or kept
/// there), by `server` (counter).
pub const BALANCER_PANIC_PICKS: &str = "mcp_proxy_balancer_panic_picks_total";
/// Requests sent again on another replica after a failure.
pub const RETRIES: &str = "mcp_proxy_retries_total";
/// Upstream sessions moved off a failed or unhealthy replica.
pub const FAILOVERS: &str = "mcp_proxy_failovers_total";
/// Health checks of a replica by `server`, `replica` and `outcome` (counter); apart from
/// the requests and upstream latency, which count client traffic only.
pub const HEALTH_PROBES: &str = "mcp_proxy_health_probes_total";
/// Active health of a replica as shard 0 sees it: 1 healthy, 0 not.
pub const REPLICA_HEALTHY: &str = "mcp_proxy_replica_healthy";
/// Circuit of a replica on the shard that changed it last: 1 open (ejected), 0 closed.
pub const CIRCUIT_OPEN: &str = "mcp_proxy_circuit_open";
/// Restarts of a stdio server's child after it exited.
pub const CHILD_RESTARTS: &str = "mcp_proxy_child_restarts_total";
/// A stdio server given up after a crash loop: 1 failed, 0 running.
pub const CHILD_FAILED: &str = "mcp_proxy_child_failed";
/// Requests and calls refused by `[auth]`, by `client` and `reason` (counter).
pub const AUTH_DENIED: &str = "mcp_proxy_auth_denied_total";
/// Fetches of a trusted OAuth issuer's metadata and keys, by `issuer` and `outcome`
/// (`ok`, `failed`) (counter).
pub const OAUTH_KEY_FETCHES: &str = "mcp_proxy_oauth_key_fetches_total";
/// Client credentials grants for an upstream server's token, by `server` and `outcome`
/// (`ok`, `failed`) (counter).
pub const OAUTH_UPSTREAM_TOKENS: &str = "mcp_proxy_oauth_upstream_tokens_total";
/// Event streams being written to clients, by accepting `shard` (gauge).
pub const EVENT_STREAMS: &str = "mcp_proxy_event_streams";
/// Event streams that ended, by `reason` (counter).
pub const EVENT_STREAMS_ENDED: &str = "mcp_proxy_event_streams_ended_total";
/// Every name above.
pub const ALL: &[&str] = &[
    AUTH_DENIED,
    OAUTH_KEY_FETCHES,
    OAUTH_UPSTREAM_TOKENS,
    EVENT_STREAMS,
    EVENT_STREAMS_ENDED,
    BALANCER_PICKS,
    BALANCER_PANIC,
    BALANCER_PANIC_PICKS,
    RETRIES,
    FAILOVERS,
    HEALTH_PROBES,
    REPLICA_HEALTHY,
    CIRCUIT_OPEN,
    CHILD_RESTARTS,
    CHILD_FAILED,
    REQUESTS_TOTAL,
    LOCAL_ANSWERS,
    REQUEST_DURATION,
    UPSTREAM_DURATION,
    OVERHEAD,
    INFLIGHT,
    SESSIONS,
    BRIDGE_SESSIONS,
    CONNECTIONS,
    CONNECTIONS_TOTAL,
    UPSTREAM_UP,
    BYTES_RECEIVED,
    BYTES_SENT,
];
