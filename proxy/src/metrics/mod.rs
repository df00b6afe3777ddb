//! Observability: Prometheus metrics, per-shard latency histograms and structured logs.
//!
//! # How to use
//! [`install`] the global recorder once at start-up, then [`init_shard`] on every shard's
//! thread. Call sites elsewhere are one line each: [`Forwarded`] around a forwarded request,
//! [`Connection`] and [`Counted`] around a client connection, [`request_done`] after an HTTP
//! exchange, [`sessions`] and [`upstream_up`] when those change. Before `init_shard` (unit tests)
//! every call is a no-op.
//!
//! # Layout
//! - this file: metric names, the per-shard handles and the call-site functions;
//! - [`labels`]: bounded label values (MCP methods, outcomes, why event streams end);
//! - [`latency`]: per-shard hdrhistograms, published every second and merged on demand;
//! - [`counting_stream`]: a stream wrapper counting the bytes a client connection moves;
//! - [`exposition`]: the `/metrics` text: live servers' series, build and process metrics;
//! - [`request_counts`]: request and failure counts read back from the series;
//! - [`logs`]: the text/JSON/logfmt log formats, with configured secrets redacted;
//! - [`log_filter`]: the running log filter, changed without a restart (admin API, reload).
//!
//! # Cost on the hot path
//! The `metrics` facade's recorder is global (an `Arc` of atomics). Every handle a request
//! touches is resolved once per shard (the shard label is fixed per thread) and cached here
//! in a thread-local, so recording is an atomic add or a lock-free histogram push; no label
//! is formatted and no registry lookup happens per request. The hdrhistograms are plain
//! thread-local data, touched by their own shard only.

pub mod counting_stream;
pub mod exposition;
pub mod labels;
pub mod latency;
pub mod local;
pub mod log_filter;
pub mod logs;
pub mod names;
pub mod request_counts;
pub mod tools;

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::Config;
pub use counting_stream::Counted;
pub use labels::{Closed, Method, Outcome, ProbeOutcome, StreamEnd};

/// Histogram buckets (seconds) for the request and upstream latencies: 0.5 ms to 60 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Buckets (seconds) for the proxy's own time, which is tens of microseconds when all is well:
/// 10 us to 100 ms.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.000075, 0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.001, 0.0025,
    0.005, 0.01, 0.025, 0.1,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct InstallError(String);

/// Installs the global Prometheus recorder (once; later calls return the same handle) and
/// sizes the latency board for `shards` shards and `config`'s servers.
pub fn install(shards: usize, config: &Config) -> Result<&'static PrometheusHandle, InstallError> {
    latency::init_board(shards, config.servers.len());
    SESSION_COUNTS.get_or_init(|| (0..shards).map(|_| Default::default()).collect());
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    // A full-name matcher is checked before a suffix one.
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(names::OVERHEAD.into()), OVERHEAD_BUCKETS)
        .map_err(|e| InstallError(e.to_string()))?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| InstallError(e.to_string()))?
        .install_recorder()
        .map_err(|e| InstallError(e.to_string()))?;
    describe();
    Ok(HANDLE.get_or_init(|| handle))
}

/// The installed recorder's handle, for rendering `/metrics`.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

/// The `/metrics` text: every series of the servers and replicas in `live` (none of those
/// removed or replaced), `mcp_proxy_build_info` and the `process_*` metrics.
pub fn render(live: &exposition::LiveSeries) -> String {
    let recorded = HANDLE.get().map(|h| h.render()).unwrap_or_default();
    exposition::render(&recorded, live)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    local::describe();
    describe_counter!(
        names::REQUESTS_TOTAL,
        "Requests forwarded to upstream servers, by server, MCP method and outcome"
    );
    describe_histogram!(
        names::REQUEST_DURATION,
        Unit::Seconds,
        "End-to-end latency of POSTed MCP messages, from request read to response written"
    );
    describe_histogram!(
        names::UPSTREAM_DURATION,
        Unit::Seconds,
        "Upstream latency of client requests, from sending a request to receiving its response (health checks excluded)"
    );
    describe_histogram!(
        names::OVERHEAD,
        Unit::Seconds,
        "The proxy's own time on a forwarded request, from reading it to its answer being ready to write, less the wait for the upstream"
    );
    describe_counter!(
        names::HEALTH_PROBES,
        "Active health checks of replicas, by server, replica and outcome"
    );
    describe_gauge!(
        names::INFLIGHT,
        "Forwarded requests waiting on an upstream, by shard"
    );
    describe_gauge!(names::SESSIONS, "Downstream MCP sessions, by owner shard");
    describe_gauge!(
        names::BRIDGE_SESSIONS,
        "2026-07-28 bridge sessions (one per client key), by owner shard"
    );
    describe_gauge!(names::CONNECTIONS, "Open client connections, by shard");
    describe_counter!(
        names::CONNECTIONS_TOTAL,
        "Client connections accepted, by shard"
    );
    describe_gauge!(
        names::UPSTREAM_UP,
        "1 when discovery last reached the server, 0 when it did not"
    );
    describe_counter!(
        names::BYTES_RECEIVED,
        Unit::Bytes,
        "Bytes read from clients, by shard"
    );
    describe_counter!(
        names::AUTH_DENIED,
        "Requests and calls refused by [auth], by client and reason"
    );
    describe_counter!(
        names::OAUTH_KEY_FETCHES,
        "Fetches of a trusted OAuth issuer's metadata and keys, by issuer and outcome (ok, failed)"
    );
    describe_counter!(
        names::OAUTH_UPSTREAM_TOKENS,
        "Client credentials grants for an upstream server's token, by server and outcome (ok, failed)"
    );
    describe_gauge!(
        names::EVENT_STREAMS,
        "Open SSE event streams (GET streams, streamed answers, listen streams), by the shard writing them"
    );
    describe_counter!(
        names::EVENT_STREAMS_ENDED,
        "SSE event streams ended, by reason: completed, client_closed, token_expired, credential_revoked, replaced, session_ended, shutdown"
    );
    describe_fleet();
    describe_counter!(
        names::BYTES_SENT,
        Unit::Bytes,
        "Bytes written to clients, by shard"
    );
}

/// HELP text of the replica, balancer and stdio child metrics.
fn describe_fleet() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        names::BALANCER_PICKS,
        "Replicas chosen for new work (session bindings, stateless requests), by server and replica"
    );
    describe_gauge!(
        names::BALANCER_PANIC,
        "1 while the balancer of a server is in panic (too few replicas available, so it also tries those that are out), 0 otherwise"
    );
    describe_counter!(
        names::BALANCER_PANIC_PICKS,
        "Work the panic rule sent to a replica that was out (a pick, a session opened or kept there), by server"
    );
    describe_counter!(
        names::RETRIES,
        "Requests sent again on another replica after a failure, by server"
    );
    describe_counter!(
        names::FAILOVERS,
        "Upstream sessions moved off a failed or unhealthy replica, by server"
    );
    describe_gauge!(
        names::REPLICA_HEALTHY,
        "Active health of a replica as shard 0 sees it: 1 healthy, 0 not"
    );
    describe_gauge!(
        names::CIRCUIT_OPEN,
        "Circuit of a replica on the shard that changed it last: 1 open (ejected), 0 closed"
    );
    describe_counter!(
        names::CHILD_RESTARTS,
        "Restarts of a stdio server's child process after it exited, by server"
    );
    describe_gauge!(
        names::CHILD_FAILED,
        "1 when a stdio server was given up after a crash loop, 0 while its child runs"
    );
}

/// One shard's resolved handles.
struct ShardMetrics {
    /// The shard's index.
    shard: usize,
    /// Server names, by server index (label values).
    servers: Vec<String>,
    /// `requests_total` handles by server, method and outcome, resolved on first use so
    /// combinations never seen export no series.
    requests: Vec<Option<Counter>>,
    /// `upstream_duration_seconds` by server.
    /// Upstream latency of stdio servers (one child each); HTTP replicas record their own.
    upstream: Vec<Option<Histogram>>,
    /// `overhead_seconds` by server, resolved on first use.
    overhead: Vec<Option<Histogram>>,
    /// `upstream_up` by server (used on shard 0, where discovery runs).
    up: Vec<Gauge>,
    /// `request_duration_seconds`.
    request_duration: Histogram,
    /// `inflight_requests{shard}`.
    inflight: Gauge,
    /// `sessions{shard}`.
    sessions: Gauge,
    /// `bridge_sessions{shard}`.
    bridge_sessions: Gauge,
    /// `connections{shard}`.
    connections: Gauge,
    /// `connections_total{shard}`.
    connections_total: Counter,
    /// `bytes_received_total{shard}`.
    bytes_in: Counter,
    /// `bytes_sent_total{shard}`.
    bytes_out: Counter,
    /// `event_streams{shard}`.
    streams: Gauge,
    /// `event_streams_ended_total{reason}`, by [`StreamEnd`] discriminant.
    streams_ended: [Counter; StreamEnd::ALL.len()],
}

thread_local! {
    static SHARD: RefCell<Option<ShardMetrics>> = const { RefCell::new(None) };
}

fn with<R>(f: impl FnOnce(&mut ShardMetrics) -> R) -> Option<R> {
    SHARD.with(|s| s.borrow_mut().as_mut().map(f))
}

/// Resolves this shard's handles and starts publishing its latency histograms. Called once
/// on each shard's thread, inside its executor.
pub fn init_shard(shard: usize, config: &Config) {
    let label = shard.to_string();
    let servers: Vec<String> = config.servers.iter().map(|s| s.name.clone()).collect();
    let upstream = config.servers.iter().map(stdio_histogram).collect();
    let up = servers
        .iter()
        .map(|s| metrics::gauge!(names::UPSTREAM_UP, "server" => s.clone()))
        .collect();
    let metrics = ShardMetrics {
        shard,
        requests: vec![None; servers.len() * Method::COUNT * Outcome::COUNT],
        overhead: vec![None; servers.len()],
        servers,
        upstream,
        up,
        request_duration: metrics::histogram!(names::REQUEST_DURATION),
        inflight: metrics::gauge!(names::INFLIGHT, "shard" => label.clone()),
        sessions: metrics::gauge!(names::SESSIONS, "shard" => label.clone()),
        bridge_sessions: metrics::gauge!(names::BRIDGE_SESSIONS, "shard" => label.clone()),
        connections: metrics::gauge!(names::CONNECTIONS, "shard" => label.clone()),
        connections_total: metrics::counter!(names::CONNECTIONS_TOTAL, "shard" => label.clone()),
        bytes_in: metrics::counter!(names::BYTES_RECEIVED, "shard" => label.clone()),
        bytes_out: metrics::counter!(names::BYTES_SENT, "shard" => label.clone()),
        streams: metrics::gauge!(names::EVENT_STREAMS, "shard" => label),
        streams_ended: StreamEnd::ALL
            .map(|r| metrics::counter!(names::EVENT_STREAMS_ENDED, "reason" => r.label())),
    };
    // Zero-valued gauges from the start, so dashboards show every shard.
    metrics.inflight.set(0.0);
    metrics.sessions.set(0.0);
    metrics.bridge_sessions.set(0.0);
    metrics.connections.set(0.0);
    metrics.streams.set(0.0);
    // Every reason exists at zero, so a rate over it is defined before the first end.
    metrics.streams_ended.iter().for_each(|c| c.increment(0));
    SHARD.with(|s| *s.borrow_mut() = Some(metrics));
    latency::init_local(shard, config.servers.len());
    glommio::spawn_local(latency::publish_forever()).detach();
}

/// A forwarded request being timed: created when it starts, finished with its outcome.
/// Dropped unfinished (its task was cancelled), it counts as [`Outcome::Cancelled`].
pub struct Forwarded {
    server: usize,
    method: Method,
    /// When the client's request was read (before routing).
    received: Instant,
    started: Instant,
    upstream_started: Option<Instant>,
    /// Time spent waiting on upstream exchanges so far.
    upstream_wait: Duration,
    /// Whether the proxy's own time is recorded: not when the request also waited on the
    /// client (a server asked it for input), which is neither the proxy's time nor the
    /// upstream's.
    own_time: bool,
    done: bool,
    /// The tool called, for `tools/call` (counted per tool for the fleet views).
    tool: Option<Box<str>>,
}

impl Forwarded {
    /// Starts timing a request of `method` (the JSON-RPC method name) to `server`, read from
    /// the client at `received`.
    pub fn start(server: usize, method: &str, received: Instant) -> Forwarded {
        with(|m| m.inflight.increment(1.0));
        Forwarded {
            server,
            method: Method::of(method),
            received,
            started: Instant::now(),
            upstream_started: None,
            upstream_wait: Duration::ZERO,
            own_time: true,
            done: false,
            tool: None,
        }
    }

    /// The request waits on the client too (a server asked it for input): its time is not
    /// the proxy's own.
    pub fn waits_on_client(&mut self) {
        self.own_time = false;
    }

    /// Names the tool a `tools/call` calls (its name on the server).
    pub fn tool(&mut self, name: &str) {
        self.tool = Some(name.into());
    }

    /// The request is about to be sent upstream.
    pub fn sending(&mut self) {
        self.upstream_started = Some(Instant::now());
    }

    /// The upstream's response (or failure) arrived: records the upstream latency.
    pub fn answered(&mut self) {
        if let Some(sent) = self.upstream_started.take() {
            let took = sent.elapsed();
            self.upstream_wait += took;
            let server = self.server;
            with(|m| {
                if let Some(Some(h)) = m.upstream.get(server) {
                    h.record(took.as_secs_f64());
                }
            });
            latency::record_upstream(server, took);
        }
    }

    /// Records the outcome; the request's whole time goes to the per-server histogram.
    pub fn finish(mut self, outcome: Outcome) {
        self.complete(outcome);
    }

    fn complete(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        self.answered();
        let (server, method) = (self.server, self.method);
        with(|m| {
            m.inflight.decrement(1.0);
            let Some(name) = m.servers.get(server) else {
                return;
            };
            let slot =
                (server * Method::COUNT + method as usize) * Outcome::COUNT + outcome as usize;
            m.requests[slot]
                .get_or_insert_with(|| {
                    metrics::counter!(names::REQUESTS_TOTAL,
                        "server" => name.clone(),
                        "method" => method.label(),
                        "outcome" => outcome.label())
                })
                .increment(1);
        });
        let now = Instant::now();
        let took = now - self.started;
        latency::record_request(server, took);
        if self.own_time && outcome != Outcome::Cancelled {
            let own = (now - self.received).saturating_sub(self.upstream_wait);
            latency::record_overhead(server, own);
            with(|m| {
                let Some(name) = m.servers.get(server) else {
                    return;
                };
                if let Some(slot) = m.overhead.get_mut(server) {
                    slot.get_or_insert_with(
                        || metrics::histogram!(names::OVERHEAD, "server" => name.clone()),
                    )
                    .record(own.as_secs_f64());
                }
            });
        }
        if let Some(tool) = self.tool.take() {
            tools::record(server, tool, outcome, took);
        }
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        self.complete(Outcome::Cancelled);
    }
}

/// An open client connection; counts it open now and closed when dropped.
pub struct Connection(());

impl Connection {
    /// Counts a connection accepted on this shard.
    pub fn open() -> Connection {
        with(|m| {
            m.connections.increment(1.0);
            m.connections_total.increment(1);
        });
        Connection(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        with(|m| m.connections.decrement(1.0));
    }
}

/// An event stream being written to a client; counts it open now, and ended (with its
/// reason) by [`EventStream::end`]. One gauge change at each end, nothing per event.
pub struct EventStream {
    ended: bool,
}

impl EventStream {
    /// Counts a stream this shard starts writing.
    pub fn open() -> EventStream {
        with(|m| m.streams.increment(1.0));
        EventStream { ended: false }
    }

    /// The stream stopped for `why`.
    pub fn end(mut self, why: StreamEnd) {
        self.ended = true;
        with(|m| {
            m.streams.decrement(1.0);
            m.streams_ended[why as usize].increment(1);
        });
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // Dropped without an end (its connection's task was dropped): no longer open, but
        // nothing tells why, so no reason is counted.
        if !self.ended {
            with(|m| m.streams.decrement(1.0));
        }
    }
}

/// A POSTed message was answered: `started` is when its request was read. Records the
/// end-to-end latency (GET streams live as long as the client wants and are not timed).
pub fn request_done(started: Instant) {
    let took = started.elapsed();
    with(|m| m.request_duration.record(took.as_secs_f64()));
    latency::record_end_to_end(took);
}

/// This shard now keeps `count` 2026-07-28 bridge sessions.
pub fn bridge_sessions(count: usize) {
    with(|m| m.bridge_sessions.set(count as f64));
}

/// This shard now owns `count` sessions.
pub fn sessions(count: usize) {
    with(|m| {
        m.sessions.set(count as f64);
        // The admin API (on shard 0) reports every shard's count without asking the shards.
        if let Some(slot) = SESSION_COUNTS.get().and_then(|c| c.get(m.shard)) {
            slot.store(count, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

/// Sessions per shard, as last reported by each shard.
static SESSION_COUNTS: OnceLock<Vec<std::sync::atomic::AtomicUsize>> = OnceLock::new();

/// Each shard's session count, by shard index.
pub fn session_counts() -> Vec<usize> {
    SESSION_COUNTS.get().map_or_else(Vec::new, |c| {
        c.iter()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    })
}

/// Starts this shard's metrics for server `index` (added to the live registry after start).
/// Indices only grow, so the per-server vectors are extended up to `index`.
pub fn add_server(index: usize, server: &crate::config::ServerConfig) {
    with(|m| {
        while m.servers.len() <= index {
            m.servers.push(server.name.clone());
            m.requests
                .extend(std::iter::repeat_n(None, Method::COUNT * Outcome::COUNT));
            m.upstream.push(stdio_histogram(server));
            m.overhead.push(None);
            m.up.push(metrics::gauge!(names::UPSTREAM_UP, "server" => server.name.clone()));
        }
    });
    latency::grow_local(index + 1);
}

/// Discovery reached `server` (`up`) or failed to.
pub fn upstream_up(server: usize, up: bool) {
    with(|m| {
        if let Some(g) = m.up.get(server) {
            g.set(if up { 1.0 } else { 0.0 });
        }
    });
}

/// The byte counters of this shard, for [`Counted`].
fn byte_counters() -> Option<(Counter, Counter)> {
    with(|m| (m.bytes_in.clone(), m.bytes_out.clone()))
}

/// This shard's index, when metrics are initialized here.
pub fn shard() -> Option<usize> {
    with(|m| m.shard)
}

/// How often the recorder's upkeep (draining histogram samples) must run at least.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The upstream latency histogram of a stdio server (`replica="stdio"`); `None` for HTTP
/// servers, whose replicas record per replica ([`replica_latency`]).
fn stdio_histogram(s: &crate::config::ServerConfig) -> Option<Histogram> {
    s.http_url().is_none().then(|| {
        metrics::histogram!(names::UPSTREAM_DURATION,
            "server" => s.name.clone(), "replica" => "stdio")
    })
}

/// The upstream latency histogram of one HTTP replica, resolved once by its client.
pub fn replica_latency(server: &str, replica: &str) -> Histogram {
    metrics::histogram!(names::UPSTREAM_DURATION,
        "server" => server.to_owned(), "replica" => replica.to_owned())
}

/// Fleet events: rare next to requests (a pick per session binding, a retry or failover per
/// failure, a health or circuit change per transition), so labels are built on the spot.
pub mod fleet {
    use super::names;

    /// Makes a server's replica series exist from the start (at zero), so dashboards and alert
    /// rules see them before anything has happened.
    pub fn register_replicas(server: &str, replicas: &[String]) {
        metrics::counter!(names::RETRIES, "server" => server.to_owned()).increment(0);
        metrics::counter!(names::FAILOVERS, "server" => server.to_owned()).increment(0);
        metrics::counter!(names::BALANCER_PANIC_PICKS, "server" => server.to_owned()).increment(0);
        metrics::gauge!(names::BALANCER_PANIC, "server" => server.to_owned()).set(0.0);
        for replica in replicas {
            let labels = [("server", server.to_owned()), ("replica", replica.clone())];
            metrics::counter!(names::BALANCER_PICKS, &labels).increment(0);
            metrics::gauge!(names::CIRCUIT_OPEN, &labels).set(0.0);
        }
    }

    /// The counter of times `replica` of `server` was chosen for new work (a handle kept by
    /// the replica's client, so counting a pick costs no label lookup).
    pub fn picks(server: &str, replica: &str) -> metrics::Counter {
        metrics::counter!(names::BALANCER_PICKS, "server" => server.to_owned(), "replica" => replica.to_owned())
    }

    /// The counter of work the panic rule let through to a replica of `server` that was out
    /// (a handle kept by its client).
    pub fn panic_picks(server: &str) -> metrics::Counter {
        metrics::counter!(names::BALANCER_PANIC_PICKS, "server" => server.to_owned())
    }

    /// The balancer entered (`on`) or left panic for `server`.
    pub fn panic(server: &str, on: bool) {
        metrics::gauge!(names::BALANCER_PANIC, "server" => server.to_owned()).set(if on {
            1.0
        } else {
            0.0
        });
    }

    /// A request is sent again on another replica.
    pub fn retried(server: &str) {
        metrics::counter!(names::RETRIES, "server" => server.to_owned()).increment(1);
    }

    /// An upstream session moved to another replica.
    pub fn failed_over(server: &str) {
        metrics::counter!(names::FAILOVERS, "server" => server.to_owned()).increment(1);
    }

    /// The `mcp_proxy_health_probes_total` handles of one replica, one per outcome, resolved
    /// once by its client (they exist at zero from the start, for alert rules).
    pub struct ProbeCounters([metrics::Counter; 3]);

    impl ProbeCounters {
        /// Resolves the counters of `replica` of `server`.
        pub fn new(server: &str, replica: &str) -> ProbeCounters {
            ProbeCounters(super::ProbeOutcome::ALL.map(|o| {
                let c = metrics::counter!(names::HEALTH_PROBES,
                    "server" => server.to_owned(), "replica" => replica.to_owned(),
                    "outcome" => o.label());
                c.increment(0);
                c
            }))
        }

        /// Counts one check that ended with `outcome`.
        pub fn count(&self, outcome: super::ProbeOutcome) {
            self.0[outcome as usize].increment(1);
        }
    }

    /// Active health of a replica changed (or is first known).
    pub fn healthy(server: &str, replica: &str, up: bool) {
        metrics::gauge!(names::REPLICA_HEALTHY, "server" => server.to_owned(), "replica" => replica.to_owned())
            .set(if up { 1.0 } else { 0.0 });
    }

    /// A replica's circuit opened (ejected) or closed.
    pub fn circuit(server: &str, replica: &str, open: bool) {
        metrics::gauge!(names::CIRCUIT_OPEN, "server" => server.to_owned(), "replica" => replica.to_owned())
            .set(if open { 1.0 } else { 0.0 });
    }

    /// A stdio child was started: `restart` when it replaces one that exited.
    pub fn child_started(server: &str, restart: bool) {
        let restarts = metrics::counter!(names::CHILD_RESTARTS, "server" => server.to_owned());
        restarts.increment(u64::from(restart));
        metrics::gauge!(names::CHILD_FAILED, "server" => server.to_owned()).set(0.0);
    }

    /// A stdio server was given up after a crash loop.
    pub fn child_failed(server: &str) {
        metrics::gauge!(names::CHILD_FAILED, "server" => server.to_owned()).set(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_time(server: usize) -> latency::Quantiles {
        latency::local_snapshot()
            .and_then(|l| l.overhead.get(server).map(latency::Quantiles::of))
            .unwrap_or_default()
    }

    #[test]
    fn own_time_leaves_out_the_upstream_and_the_client() {
        latency::init_local(0, 1);
        let read_long_ago = Instant::now()
            .checked_sub(Duration::from_millis(50))
            .unwrap_or_else(Instant::now);

        // Read 50 ms ago, answered at once: those 50 ms were the proxy's.
        let mut plain = Forwarded::start(0, "tools/call", read_long_ago);
        plain.sending();
        plain.answered();
        plain.finish(Outcome::Ok);
        let q = own_time(0);
        assert_eq!(q.count, 1);
        assert!(q.max >= 50_000, "{q:?}");

        // Sent upstream as soon as it was read, answered now: the wait is the upstream's.
        let mut waited = Forwarded::start(0, "tools/call", Instant::now());
        waited.upstream_started = Some(read_long_ago);
        waited.answered();
        waited.finish(Outcome::Ok);
        let q = own_time(0);
        assert_eq!(q.count, 2);
        assert!(
            q.p50 < 50_000,
            "the upstream's 50 ms counted as the proxy's: {q:?}"
        );

        // Waiting on the client for input, or cancelled: not the proxy's time, not recorded.
        let mut asked = Forwarded::start(0, "tools/call", read_long_ago);
        asked.waits_on_client();
        asked.finish(Outcome::Ok);
        drop(Forwarded::start(0, "tools/call", read_long_ago));
        assert_eq!(own_time(0).count, 2);
    }
}
