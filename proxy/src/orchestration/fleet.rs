//! The fleet as the proxy's own tools and resources see it: every shard's figures, gathered
//! over the mesh and added up.
//!
//! Balancer statistics, health and circuits are per shard (`balance::ReplicaStats` in each
//! shard's `UpstreamClient`), as are tool counts (`metrics::tools`) and workflow runs. A view
//! asks every other shard for a [`ShardFigures`] ([`Ask::Figures`], answered as JSON by
//! [`answer`] on the shard's own thread) and adds them to its own; nothing is shared or
//! locked. A replica's latency quantiles come from each shard's client histogram of it, sent
//! as (value, count) pairs with the figures and merged; a server's from the board of
//! `metrics::latency` that `/stats` reads.
//!
//! Changing a server's strategy or weights ([`set_balance`]) is a registry update made on
//! shard 0 (asked over the mesh from other shards): saved in the state directory, broadcast,
//! and taken in place by each shard's client (`UpstreamClient::retune`), so sessions, pools and
//! statistics carry on.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::Json;
use crate::balance::ReplicaSnapshot;
use crate::config::{ServerConfig, Strategy, Transport};
use crate::metrics::latency::{self, Quantiles};
use crate::metrics::tools::{self as tool_counts, ToolCounts};
use crate::orchestration::ShardOrchestration;
use crate::registry::servers::State;
use crate::registry::ServerStatus;
use crate::shard::Shard;
use crate::upstream::table::ShardUpstreams;
use crate::upstream::Upstream;

/// How long a view waits for another shard's answer before showing what it has.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Most runs the merged listing shows (the newest, across shards).
pub const RUNS_LISTED: usize = 128;

/// A question one shard asks another.
#[derive(Debug)]
pub enum Ask {
    /// Your figures: replicas of every server, tool counts, runs.
    Figures,
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

/// A change of one server's balancing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceChange {
    /// The server.
    pub server: String,
    /// The new strategy, if it changes.
    pub strategy: Option<Strategy>,
    /// New weights by replica index.
    pub weights: Vec<(usize, u32)>,
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
    /// Every live server, by index.
    pub servers: Vec<ServerFigures>,
    /// Calls per tool.
    pub tools: Vec<ToolCounts>,
    /// Its kept runs, newest first (as `orchestration://workflows/` lists them).
    pub runs: Vec<Value>,
}

/// One server on one shard.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerFigures {
    /// Registry index.
    pub index: usize,
    /// Name.
    pub name: String,
    /// Strategy in force on this shard.
    pub strategy: String,
    /// HTTP replicas (stdio servers list none: their children are bound round robin).
    pub replicas: Vec<ReplicaFigures>,
}

/// One replica on one shard.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReplicaFigures {
    /// Its URL.
    pub url: String,
    /// Its statistics.
    pub stats: ReplicaSnapshot,
    /// Upstream latency of the client requests it answered (request to response head), as
    /// the (µs, count) pairs of the shard's histogram (`metrics::latency::to_counts`).
    pub latency: Vec<(u64, u64)>,
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
    let now = Instant::now();
    let registry = shard.registry();
    let servers = registry
        .live()
        .filter_map(|(i, e)| {
            let upstream = shard.upstreams().get(i)?;
            let (strategy, replicas) = match &*upstream {
                Upstream::Http(c) => (
                    strategy_label(c.strategy()),
                    (0..c.replica_count())
                        .map(|r| ReplicaFigures {
                            url: c.replica_url(r),
                            stats: c.stats[r].snapshot(now),
                            latency: latency::to_counts(&c.replica_latency(r)),
                        })
                        .collect(),
                ),
                Upstream::Stdio { .. } => ("round_robin", Vec::new()),
            };
            Some(ServerFigures {
                index: i,
                name: e.config.name.clone(),
                strategy: strategy.to_owned(),
                replicas,
            })
        })
        .collect();
    ShardFigures {
        shard: shard.id,
        sessions: shard.session_count(),
        requests_in_flight: shard.requests_in_flight(),
        servers,
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
pub async fn answer(shard: &Rc<Shard>, ask: Ask) -> Bytes {
    let value = match ask {
        Ask::Figures => serde_json::to_value(figures(shard)).unwrap_or(Value::Null),
        Ask::Run(id) => local_run(shard, &id).unwrap_or(Value::Null),
        Ask::SetBalance(change) => match apply_balance(shard, &change) {
            Ok(v) => v,
            Err(e) => json!({"error": e}),
        },
    };
    Bytes::from(value.to_string())
}

/// Takes a notice from another shard.
pub fn told(shard: &Shard, tell: Tell) {
    match tell {
        Tell::Workflows(all) => shard.orchestration().store.replace_memory(all),
    }
}

/// Asks `peer` and waits at most [`ASK_TIMEOUT`].
async fn ask(shard: &Rc<Shard>, peer: usize, ask: Ask) -> Option<Value> {
    let work = move |owner: Rc<Shard>| async move { answer(&owner, ask).await };
    let body = crate::shard::Mesh::ask(shard, peer, ASK_TIMEOUT, work).await?;
    serde_json::from_slice(&body).ok()
}

/// Every shard's figures, this one's first; a shard that does not answer in time is left out.
pub async fn gather(shard: &Rc<Shard>) -> Vec<ShardFigures> {
    let mut all = vec![figures(shard)];
    for peer in (0..shard.nr_shards).filter(|p| *p != shard.id) {
        if let Some(f) = ask(shard, peer, Ask::Figures)
            .await
            .and_then(|v| serde_json::from_value::<ShardFigures>(v).ok())
        {
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
    pub inflight: u32,
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
    let (merged, _) = latency::merged();
    let counts = crate::admin::api::request_counts();
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
            (State::Draining, _) => ("draining", None),
            (_, Some(ServerStatus::Up(_))) => ("up", None),
            (_, Some(ServerStatus::Down(why))) => ("down", Some(why.clone())),
            _ => ("pending", None),
        };
        let per_shard: Vec<&ServerFigures> = shards
            .iter()
            .filter_map(|f| f.servers.iter().find(|s| s.index == i))
            .collect();
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
                let mut hist = None;
                for f in &seen {
                    latency::add_into(&mut hist, &latency::from_counts(&f.latency));
                }
                replica_view(r, &seen, Quantiles::of(&hist))
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

fn replica_view(replica: usize, seen: &[&ReplicaFigures], latency: Quantiles) -> ReplicaView {
    let mut v = ReplicaView {
        replica,
        url: seen.first().map(|f| f.url.clone()).unwrap_or_default(),
        shards: seen.len(),
        latency: LatencyMs::of(latency),
        answered: latency.count,
        ..ReplicaView::default()
    };
    let (mut weighted, mut weight_sum) = (0.0, 0.0);
    let mut newest_error: Option<(u64, String)> = None;
    for f in seen {
        let s = &f.stats;
        v.weight = s.weight;
        v.drain |= s.drain;
        v.healthy_on_shards += usize::from(s.healthy);
        v.picks += s.picks;
        v.exchanges += s.exchanges;
        v.failed_exchanges += s.failed_exchanges;
        v.probes += s.probes;
        v.failed_probes += s.failed_probes;
        v.inflight += s.inflight;
        v.consecutive_failures = v.consecutive_failures.max(s.consecutive_failures);
        v.ejected_for_ms = v.ejected_for_ms.max(s.ejected_for_ms);
        if let Some(e) = s.ewma_us {
            // Shards that sent it more work know its latency better.
            let w = (s.exchanges as f64).max(1.0);
            weighted += e * w;
            weight_sum += w;
        }
        if let (Some(msg), Some(ago)) = (&s.last_error, s.last_error_ago_ms) {
            if newest_error.as_ref().is_none_or(|(a, _)| ago < *a) {
                newest_error = Some((ago, msg.clone()));
            }
        }
    }
    v.ewma_ms = (weight_sum > 0.0).then(|| (weighted / weight_sum / 10.0).round() / 100.0);
    if let Some((ago, msg)) = newest_error {
        v.last_error = Some(msg);
        v.last_error_ago_ms = Some(ago);
    }
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

/// Why a balancing change was refused.
pub type ChangeError = String;

/// Applies a balancing change from any shard: on shard 0 directly, elsewhere by asking it.
pub async fn set_balance(shard: &Rc<Shard>, change: BalanceChange) -> Result<Value, ChangeError> {
    if shard.id == 0 {
        return apply_balance(shard, &change);
    }
    match ask(shard, 0, Ask::SetBalance(change)).await {
        Some(v) => match v.get("error").and_then(Value::as_str) {
            Some(e) => Err(e.to_owned()),
            None => Ok(v),
        },
        None => Err("shard 0 (which owns the registry) did not answer; try again".into()),
    }
}

/// Shard 0: the registry update that makes `change`, saved and broadcast.
fn apply_balance(shard: &Rc<Shard>, change: &BalanceChange) -> Result<Value, ChangeError> {
    if shard.id != 0 {
        return Err("balancing changes are made on shard 0".into());
    }
    let registry = shard.registry();
    let (_, entry) = registry.get(&change.server).map_err(|e| e.to_string())?;
    let mut config = entry.config.clone();
    let Transport::Http { replicas, .. } = &mut config.transport else {
        return Err(format!(
            "{} is a stdio server: its children are bound to sessions round robin; strategy and weights apply to HTTP replicas",
            change.server
        ));
    };
    for (r, w) in &change.weights {
        match replicas.get_mut(*r) {
            Some(rep) => rep.weight = *w,
            None => return Err(format!("{} has no replica {r}", change.server)),
        }
    }
    if let Some(s) = change.strategy {
        config.balance.strategy = s;
    }
    let spec = spec_of(&config);
    crate::admin::servers::update(shard, &change.server, &spec).map_err(|e| e.to_string())?;
    Ok(json!({
        "server": change.server,
        "strategy": strategy_label(config.balance.strategy),
        "weights": replicas_weights(&config),
    }))
}

fn replicas_weights(config: &ServerConfig) -> Value {
    match &config.transport {
        Transport::Http { replicas, .. } => replicas
            .iter()
            .map(|r| json!({"url": r.url.to_string(), "weight": r.weight}))
            .collect(),
        Transport::Stdio(_) => Value::Array(Vec::new()),
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The admin API description of an HTTP server: what `parse_spec` turns back into `config`.
pub fn spec_of(config: &ServerConfig) -> Value {
    let mut spec = json!({
        "name": config.name,
        "prefix": config.prefix,
        "timeout": ms(config.timeout),
        "connect_timeout": ms(config.connect_timeout),
        "tags": config.tags,
        "strategy": strategy_label(config.balance.strategy),
        "stateless": config.balance.stateless,
        "health_check_interval": ms(config.balance.health_check_interval),
        "failover_threshold": config.balance.failover_threshold,
    });
    match &config.transport {
        Transport::Http { replicas, headers } => {
            spec["replicas"] = replicas
                .iter()
                .map(|r| json!({"url": r.url.to_string(), "weight": r.weight, "drain": r.drain}))
                .collect();
            if !headers.is_empty() {
                spec["headers"] = headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
        }
        Transport::Stdio(c) => {
            spec["command"] = c.command.clone().into();
            spec["args"] = c.args.clone().into();
            spec["env"] = c
                .env
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into();
            spec["env_inherit"] = match c.env_inherit {
                crate::config::stdio_env::EnvInherit::Base => "base",
                crate::config::stdio_env::EnvInherit::All => "all",
                crate::config::stdio_env::EnvInherit::None => "none",
            }
            .into();
            if !c.env_allow.is_empty() {
                spec["env_allow"] = c.env_allow.clone().into();
            }
            if let Some(cwd) = &c.cwd {
                spec["cwd"] = cwd.display().to_string().into();
            }
            spec["replicas"] = c.replicas.into();
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_parses_back_into_the_same_server() {
        let text = r#"
[[servers]]
name = "ev"
prefix = "e"
replicas = [{ url = "http://127.0.0.1:1/mcp", weight = 2 }, { url = "http://127.0.0.1:2/mcp", drain = true }]
strategy = "weighted"
timeout = "1500ms"
health_check_interval = "2s"
failover_threshold = 4
tags = ["a"]
headers = { "X-Key" = "v" }
"#;
        let config = crate::config::Config::from_toml_str(text, "t").expect("config");
        let server = &config.servers[0];
        let back = crate::registry::servers::parse_spec(&spec_of(server)).expect("spec parses");
        assert_eq!(&back, server);
        let text = r#"
[[servers]]
name = "child"
command = "npx"
args = ["-y", "x"]
env = { A = "1" }
env_inherit = "none"
env_allow = ["PATH", "npm_config_*"]
"#;
        let config = crate::config::Config::from_toml_str(text, "t").expect("config");
        let server = &config.servers[0];
        let back = crate::registry::servers::parse_spec(&spec_of(server)).expect("spec parses");
        assert_eq!(&back, server);
    }

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
        let v = replica_view(0, &[&a, &b], Quantiles::default());
        assert_eq!((v.state, v.picks, v.ewma_ms), ("healthy", 4, Some(1.0)));
        let c = f(false, 2, 0, None);
        let v = replica_view(0, &[&a, &c], Quantiles::default());
        assert_eq!(
            (v.state, v.failing, v.healthy_on_shards),
            ("unhealthy", true, 1)
        );
        let d = f(true, 2, 0, None);
        assert_eq!(
            replica_view(0, &[&d], Quantiles::default()).state,
            "failing"
        );
    }

    #[test]
    fn strategies_by_name() {
        for s in ["least_latency", "round_robin", "weighted", "random"] {
            assert_eq!(strategy_named(s).map(strategy_label), Some(s));
        }
        assert_eq!(strategy_named("fastest"), None);
    }
}
