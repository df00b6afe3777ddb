//! The fleet as the proxy's own tools and resources see it: every shard's figures, gathered
//! over the mesh and added up.
//!
//! Balancer statistics, health and circuits are per shard (`balance::ReplicaStats` in each
//! shard's `UpstreamClient`), as are tool counts (`metrics::tools`) and workflow runs. A view
//! asks every other shard for its [`ShardFigures`] ([`figures`], run there) and for its replica
//! figures ([`replicas::gather`]), each made on that shard's own thread and carried over the
//! mesh as the value itself, and adds them to its own; nothing is shared or locked. A server's latency comes
//! from the board of `metrics::latency` that `/stats` reads.
//!
//! - [`replicas`]: replica statistics of every shard and the one rule adding them up (also
//!   what the admin API's replica routes show).
//! - [`balance_change`]: changing a server's strategy or weights live ([`set_balance`]).
//!
//! Every question to another shard goes over the mesh's typed call (`shard::Mesh::ask`).

pub mod balance_change;
pub mod replicas;

pub use balance_change::{set_balance, spec_of, BalanceChange, ChangeError};
pub use replicas::{ReplicaFigures, ServerFigures};

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::Json;
use crate::config::{Strategy, Transport};
use crate::metrics::latency::{self, Quantiles};
use crate::metrics::tools::{self as tool_counts, ToolCounts};
use crate::orchestration::ShardOrchestration;
use crate::registry::servers::ServerState;
use crate::registry::ServerStatus;
use crate::shard::Shard;

/// How long a view waits for another shard's answer before showing what it has.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Most runs the merged listing shows (the newest, across shards).
pub const RUNS_LISTED: usize = 128;

/// A question one shard asks another.
#[derive(Debug)]
pub enum Ask {
    /// One of your runs, with its report.
    Run(String),
    /// Shard 0: change a server's balancing through the live registry.
    SetBalance(BalanceChange),
}

/// A one-way notice between shards.
#[derive(Debug)]
pub enum Tell {
    /// The saved workflows (when there is no state directory, each shard keeps a copy).
    Workflows(BTreeMap<String, Json>),
}

/// What one shard knows.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShardFigures {
    /// The shard.
    pub shard: usize,
    /// Its sessions.
    pub sessions: usize,
    /// Requests it is handling.
    pub requests_in_flight: usize,
    /// Calls per tool.
    pub tools: Vec<ToolCounts>,
    /// Its kept runs, newest first (as `orchestration://workflows/` lists them).
    pub runs: Vec<Value>,
}

/// Name of a strategy as configured.
pub fn strategy_label(s: Strategy) -> &'static str {
    match s {
        Strategy::LeastLatency => "least_latency",
        Strategy::RoundRobin => "round_robin",
        Strategy::Weighted => "weighted",
        Strategy::Random => "random",
    }
}

/// A strategy by its configured name.
pub fn strategy_named(name: &str) -> Option<Strategy> {
    [
        Strategy::LeastLatency,
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::Random,
    ]
    .into_iter()
    .find(|s| strategy_label(*s) == name)
}

/// This shard's figures.
pub fn figures(shard: &Shard) -> ShardFigures {
    ShardFigures {
        shard: shard.id,
        sessions: shard.session_count(),
        requests_in_flight: shard.requests_in_flight(),
        tools: tool_counts::snapshot(),
        runs: shard
            .orchestration()
            .runs()
            .iter()
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect(),
    }
}

/// Answers another shard's question (on this shard's thread).
pub async fn answer(shard: &Rc<Shard>, ask: Ask) -> Value {
    match ask {
        Ask::Run(id) => local_run(shard, &id).unwrap_or(Value::Null),
        Ask::SetBalance(change) => match balance_change::apply_balance(shard, &change).await {
            Ok(v) => v,
            Err(e) => json!({"error": e}),
        },
    }
}

/// Takes a notice from another shard.
pub fn told(shard: &Shard, tell: Tell) {
    match tell {
        Tell::Workflows(all) => shard.orchestration().store.replace_memory(all),
    }
}

/// Asks `peer` and waits at most [`ASK_TIMEOUT`].
async fn ask(shard: &Rc<Shard>, peer: usize, ask: Ask) -> Option<Value> {
    // The mesh carries the value itself: no text in between.
    let work = move |owner: Rc<Shard>| async move { answer(&owner, ask).await };
    crate::shard::Mesh::ask(shard, peer, ASK_TIMEOUT, work).await
}

/// Every shard's figures, this one's first; a shard that does not answer in time is left out.
pub async fn gather(shard: &Rc<Shard>) -> Vec<ShardFigures> {
    let mut all = vec![figures(shard)];
    for peer in (0..shard.nr_shards).filter(|p| *p != shard.id) {
        let work = |owner: Rc<Shard>| async move { figures(&owner) };
        if let Some(f) = crate::shard::Mesh::ask(shard, peer, ASK_TIMEOUT, work).await {
            all.push(f);
        }
    }
    all
}

/// One kept run of this shard, with its report.
fn local_run(shard: &Shard, run_id: &str) -> Option<Value> {
    let run = shard.orchestration().run(run_id)?;
    let mut v = serde_json::to_value(&run).ok()?;
    if let Some(report) = &run.report {
        v["report"] = serde_json::to_value(report).ok()?;
    }
    Some(v)
}

/// Run `run_id` from whichever shard keeps it (its id names the shard: `{shard}-{n}`).
pub async fn find_run(shard: &Rc<Shard>, run_id: &str) -> Option<Value> {
    let owner: usize = run_id.split_once('-')?.0.parse().ok()?;
    if owner == shard.id {
        return local_run(shard, run_id);
    }
    if owner >= shard.nr_shards {
        return None;
    }
    ask(shard, owner, Ask::Run(run_id.to_owned()))
        .await
        .filter(|v| !v.is_null())
}

/// Every shard's runs, newest first, at most [`RUNS_LISTED`].
pub fn merged_runs(all: &[ShardFigures]) -> Vec<Value> {
    let mut runs: Vec<Value> = all.iter().flat_map(|f| f.runs.iter().cloned()).collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r["started_at_ms"].as_u64().unwrap_or(0)));
    runs.truncate(RUNS_LISTED);
    runs
}

/// Latency quantiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyMs {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl LatencyMs {
    fn of(q: Quantiles) -> LatencyMs {
        let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
        LatencyMs {
            count: q.count,
            p50_ms: ms(q.p50),
            p90_ms: ms(q.p90),
            p99_ms: ms(q.p99),
            max_ms: ms(q.max),
        }
    }
}

/// One replica, added up over shards.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicaView {
    /// Index among the server's replicas.
    pub replica: usize,
    /// URL.
    pub url: String,
    /// `healthy`, `unhealthy` (health checks fail), `ejected` (circuit open after failed
    /// requests), `failing` (recent requests failed), or `draining`.
    pub state: &'static str,
    /// True for `unhealthy`, `ejected` and `failing`.
    pub failing: bool,
    /// Shards whose health checks say it is up, of those that answered.
    pub healthy_on_shards: usize,
    /// Shards that answered.
    pub shards: usize,
    /// Weight under `weighted`.
    pub weight: u32,
    /// Draining.
    pub drain: bool,
    /// Times the balancer chose it.
    pub picks: u64,
    /// HTTP exchanges with it that ended (forwarded requests, session set-up; health checks
    /// are counted in `probes`).
    pub exchanges: u64,
    /// Exchanges that failed (no answer, broken, timed out).
    pub failed_exchanges: u64,
    /// Health checks of it that ended.
    pub probes: u64,
    /// Health checks that failed.
    pub failed_probes: u64,
    /// Forwarded requests it answered (the count of its latency histograms): what load
    /// shares are computed from.
    pub answered: u64,
    /// Requests in flight on it.
    pub inflight: u64,
    /// Most failed requests in a row on any shard.
    pub consecutive_failures: u32,
    /// Longest remaining ejection on any shard, ms (0: circuit closed everywhere).
    pub ejected_for_ms: u64,
    /// Latency average (EWMA), ms, over the shards that measured it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ewma_ms: Option<f64>,
    /// The newest failure's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// How long ago it happened, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_ago_ms: Option<u64>,
    /// Upstream latency (request to response head) from the histograms.
    pub latency: LatencyMs,
}

/// One server, added up over shards.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerView {
    /// Name.
    pub server: String,
    /// Registry index.
    #[serde(skip)]
    pub index: usize,
    /// `http` or `stdio`.
    pub transport: &'static str,
    /// Discovery: `up`, `down`, `pending`; `draining` when drained through the admin API.
    pub state: &'static str,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Balancing strategy in force.
    pub strategy: String,
    /// Balanced per request rather than per session.
    pub stateless: bool,
    /// Replicas (HTTP); stdio children are counted in `children`.
    pub replicas: Vec<ReplicaView>,
    /// stdio children.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<usize>,
    /// Forwarded requests (all methods), from the request counters.
    pub requests: u64,
    /// Failed forwarded requests (JSON-RPC errors, unreachable, protocol errors).
    pub errors: u64,
    /// The proxy's whole handling of forwarded requests.
    pub latency: LatencyMs,
}

/// The fleet, added up: servers, tools (busiest first) and the shards that answered.
pub struct Fleet {
    /// Every live server.
    pub servers: Vec<ServerView>,
    /// Calls per tool, busiest first.
    pub tools: Vec<ToolCounts>,
    /// Every shard's figures, as gathered.
    pub shards: Vec<ShardFigures>,
}

/// Adds up every shard's figures with the histograms and counters.
pub async fn fleet(shard: &Rc<Shard>) -> Fleet {
    let shards = gather(shard).await;
    let figures = replicas::gather(shard, None).await;
    let (merged, _) = latency::merged();
    let counts = crate::metrics::request_counts::per_server();
    let catalog = shard.catalog();
    let registry = shard.registry();
    let mut servers = Vec::new();
    for (i, entry) in registry.live() {
        let config = &entry.config;
        let (transport, children) = match &config.transport {
            Transport::Http { .. } => ("http", None),
            Transport::Stdio(c) => ("stdio", Some(c.replicas)),
        };
        let (state, detail) = match (entry.state, catalog.status.get(i)) {
            (ServerState::Draining, _) => ("draining", None),
            (_, Some(ServerStatus::Up(_))) => ("up", None),
            (_, Some(ServerStatus::Down(why))) => ("down", Some(why.clone())),
            _ => ("pending", None),
        };
        let per_shard = figures.server(i);
        let strategy = per_shard.first().map_or_else(
            || strategy_label(config.balance.strategy).to_owned(),
            |s| s.strategy.clone(),
        );
        let count = per_shard
            .iter()
            .map(|s| s.replicas.len())
            .max()
            .unwrap_or(0);
        let replicas = (0..count)
            .map(|r| {
                let seen: Vec<&ReplicaFigures> =
                    per_shard.iter().filter_map(|s| s.replicas.get(r)).collect();
                replica_view(r, &seen)
            })
            .collect();
        let (requests, errors) = counts.get(&config.name).copied().unwrap_or_default();
        servers.push(ServerView {
            server: config.name.clone(),
            index: i,
            transport,
            state,
            detail,
            strategy,
            stateless: config.balance.stateless,
            replicas,
            children,
            requests,
            errors,
            latency: LatencyMs::of(merged.request.get(i).map(Quantiles::of).unwrap_or_default()),
        });
    }
    let tools = tool_counts::merge(shards.iter().flat_map(|f| f.tools.iter().cloned()));
    Fleet {
        servers,
        tools,
        shards,
    }
}

fn replica_view(replica: usize, seen: &[&ReplicaFigures]) -> ReplicaView {
    let t = replicas::merge(seen);
    let mut v = ReplicaView {
        replica,
        url: seen.first().map(|f| f.url.clone()).unwrap_or_default(),
        shards: t.shards,
        healthy_on_shards: t.healthy_shards,
        weight: t.weight,
        drain: t.drain,
        picks: t.picks,
        exchanges: t.exchanges,
        failed_exchanges: t.failed_exchanges,
        probes: t.probes,
        failed_probes: t.failed_probes,
        answered: t.latency.count,
        inflight: t.inflight,
        consecutive_failures: t.consecutive_failures,
        ejected_for_ms: t.ejected_for_ms,
        ewma_ms: t.ewma_us.map(|us| (us / 10.0).round() / 100.0),
        last_error_ago_ms: t.last_error.as_ref().map(|(ago, _)| *ago),
        last_error: t.last_error.map(|(_, msg)| msg),
        latency: LatencyMs::of(t.latency),
        ..ReplicaView::default()
    };
    v.state = if v.healthy_on_shards < v.shards {
        "unhealthy"
    } else if v.ejected_for_ms > 0 {
        "ejected"
    } else if v.consecutive_failures > 0 {
        "failing"
    } else if v.drain {
        "draining"
    } else {
        "healthy"
    };
    v.failing = matches!(v.state, "unhealthy" | "ejected" | "failing");
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::ReplicaSnapshot;

    #[test]
    fn replicas_add_up_and_the_worst_state_shows() {
        let f = |healthy: bool, failures: u32, picks: u64, ewma: Option<f64>| ReplicaFigures {
            url: "http://r/mcp".into(),
            stats: ReplicaSnapshot {
                weight: 1,
                healthy,
                consecutive_failures: failures,
                picks,
                exchanges: picks,
                ewma_us: ewma,
                ..ReplicaSnapshot::default()
            },
            latency: Vec::new(),
        };
        let (a, b) = (f(true, 0, 3, Some(1000.0)), f(true, 0, 1, None));
        let v = replica_view(0, &[&a, &b]);
        assert_eq!((v.state, v.picks, v.ewma_ms), ("healthy", 4, Some(1.0)));
        let c = f(false, 2, 0, None);
        let v = replica_view(0, &[&a, &c]);
        assert_eq!(
            (v.state, v.failing, v.healthy_on_shards),
            ("unhealthy", true, 1)
        );
        let d = f(true, 2, 0, None);
        assert_eq!(replica_view(0, &[&d]).state, "failing");
    }

    #[test]
    fn strategies_by_name() {
        for s in ["least_latency", "round_robin", "weighted", "random"] {
            assert_eq!(strategy_named(s).map(strategy_label), Some(s));
        }
        assert_eq!(strategy_named("fastest"), None);
    }
}
