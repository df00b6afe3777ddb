//! What a run measured: a latency histogram of successful requests, error counts by kind, and
//! the two ways of showing them (a table for people, JSON for scripts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::Failure;

/// Longest latency the histogram tracks; longer ones are clamped to it.
const MAX_TRACKED_NS: u64 = 120 * 1_000_000_000;

/// Measurements of one thread (or, after [`Stats::merge`], of the whole run).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of successful requests, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Failed requests by kind.
    pub errors: BTreeMap<Failure, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty measurements.
    pub fn new() -> Self {
        // 3 significant digits: 0.1% resolution at any magnitude, about 200 KB per histogram.
        let latency = Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3)
            .expect("constant histogram bounds are valid");
        Self {
            latency,
            errors: BTreeMap::new(),
        }
    }

    /// Records one finished request.
    pub fn record(&mut self, latency: Duration, outcome: Result<(), Failure>) {
        match outcome {
            Ok(()) => {
                let ns = (latency.as_nanos() as u64).clamp(1, MAX_TRACKED_NS);
                self.latency.saturating_record(ns);
            }
            Err(f) => *self.errors.entry(f).or_default() += 1,
        }
    }

    /// Adds another thread's measurements.
    pub fn merge(&mut self, other: &Stats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
    }
}

/// The settings a run used, repeated in its report.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Target URL.
    pub url: String,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Offered rate in requests per second (open loop only).
    pub rate: Option<f64>,
    /// Executor threads.
    pub threads: usize,
    /// TCP connections.
    pub connections: usize,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// MCP sessions.
    pub sessions: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// Warm-up seconds (not measured).
    pub warmup_s: f64,
    /// The mix as given.
    pub mix: String,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// The final report of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was run.
    pub settings: Settings,
    /// Requests that finished within the measured window (successes and errors).
    pub requests: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failed requests by kind (`http_500`, `rpc_-32603`, `timeout`, `connection`, ...).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Requests per second over the measured window.
    pub throughput_rps: f64,
    /// Latency of successful requests, microseconds.
    pub latency_us: Percentiles,
}

impl Report {
    /// Builds the report from merged measurements.
    pub fn new(settings: Settings, stats: &Stats) -> Report {
        let h = &stats.latency;
        let ok = h.len();
        let errors: u64 = stats.errors.values().sum();
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |q: f64| {
            if ok == 0 {
                0.0
            } else {
                us(h.value_at_quantile(q))
            }
        };
        let latency_us = Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            max: if ok == 0 { 0.0 } else { us(h.max()) },
            mean: if ok == 0 { 0.0 } else { h.mean() / 1000.0 },
        };
        let requests = ok + errors;
        let throughput_rps = if settings.duration_s > 0.0 {
            requests as f64 / settings.duration_s
        } else {
            0.0
        };
        Report {
            errors_by_kind: stats.errors.iter().map(|(k, v)| (k.key(), *v)).collect(),
            settings,
            requests,
            ok,
            errors,
            throughput_rps,
            latency_us,
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of numbers and strings cannot fail.
        simd_json::serde::to_string(self).unwrap_or_default()
    }

    /// The report as a table for a terminal.
    pub fn to_table(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let rate = s.rate.map_or_else(
            || "closed loop".to_owned(),
            |r| format!("open loop at {r} req/s"),
        );
        let _ = writeln!(out, "target       {}", s.url);
        let _ = writeln!(
            out,
            "load         {rate}, {} thread(s), {} connection(s), concurrency {}, {} session(s)",
            s.threads, s.connections, s.concurrency, s.sessions
        );
        let _ = writeln!(
            out,
            "window       {:.1}s measured after {:.1}s warm-up; mix {}",
            s.duration_s, s.warmup_s, s.mix
        );
        let _ = writeln!(
            out,
            "requests     {} ({} ok, {} errors)",
            self.requests, self.ok, self.errors
        );
        let _ = writeln!(out, "throughput   {:.1} req/s", self.throughput_rps);
        for (k, v) in &self.errors_by_kind {
            let _ = writeln!(out, "  error      {k:<14} {v}");
        }
        let l = &self.latency_us;
        let _ = writeln!(
            out,
            "latency (us) p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_and_percentiles() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for i in 1..=100u64 {
            a.record(Duration::from_micros(i), Ok(()));
        }
        b.record(Duration::from_micros(5), Err(Failure::Rpc(-32603)));
        b.record(Duration::from_micros(5), Err(Failure::Timeout));
        a.merge(&b);
        let settings = Settings {
            url: "http://x/mcp".into(),
            mode: "closed",
            rate: None,
            threads: 1,
            connections: 1,
            concurrency: 1,
            sessions: 1,
            duration_s: 2.0,
            warmup_s: 0.0,
            mix: "ping".into(),
        };
        let r = Report::new(settings, &a);
        assert_eq!((r.requests, r.ok, r.errors), (102, 100, 2));
        assert_eq!(r.throughput_rps, 51.0);
        assert!(
            (r.latency_us.p50 - 50.0).abs() < 0.1,
            "{}",
            r.latency_us.p50
        );
        assert!((r.latency_us.max - 100.0).abs() < 0.1);
        assert_eq!(r.errors_by_kind.get("rpc_-32603"), Some(&1));
        let json = r.to_json();
        assert!(json.contains("\"throughput_rps\":51.0"), "{json}");
        assert!(json.contains("\"timeout\":1"), "{json}");
        assert!(r.to_table().contains("rpc_-32603"));
    }
}
