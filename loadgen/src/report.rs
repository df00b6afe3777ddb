//! What a run measured: a latency histogram of successful requests, error counts by kind, and
//! the two ways of showing them (a table for people, JSON for scripts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::Failure;
use crate::timeline::Timeline;

/// Longest latency the histogram tracks; longer ones are clamped to it.
pub const MAX_TRACKED_NS: u64 = 120 * 1_000_000_000;

/// Most error kinds a sample is kept for.
pub const MAX_SAMPLES: usize = 16;

/// Measurements of one thread (or, after [`Stats::merge`], of the whole run).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of successful requests, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Failed requests by kind.
    pub errors: BTreeMap<Failure, u64>,
    /// What the first failure of each kind said (at most [`MAX_SAMPLES`] kinds).
    pub samples: BTreeMap<Failure, String>,
    /// The same, slice by slice, when the run keeps a timeline.
    pub timeline: Option<Timeline>,
    /// Open loop: how late the generator woke for slots it was free to send on time, in
    /// nanoseconds (its own timer and scheduling delay, not the server's).
    pub wake_lag: Histogram<u64>,
}

/// 3 significant digits: 0.1% resolution at any magnitude, about 200 KB per histogram.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3).expect("constant histogram bounds are valid")
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty measurements.
    pub fn new() -> Self {
        Self {
            latency: latency_histogram(),
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
            timeline: None,
            wake_lag: latency_histogram(),
        }
    }

    /// Empty measurements that also keep `count` slices of length `slice`.
    pub fn with_timeline(slice: Duration, count: usize) -> Self {
        Self {
            timeline: Some(Timeline::new(slice, count)),
            ..Self::new()
        }
    }

    /// Records one finished request, due `since_start` after the warm-up ended.
    pub fn record(
        &mut self,
        since_start: Duration,
        latency: Duration,
        outcome: Result<(), Failure>,
    ) {
        let slice = self.timeline.as_mut().and_then(|t| t.slot(since_start));
        match outcome {
            Ok(()) => {
                let ns = u64::try_from(latency.as_nanos())
                    .unwrap_or(u64::MAX)
                    .clamp(1, MAX_TRACKED_NS);
                self.latency.saturating_record(ns);
                if let Some(s) = slice {
                    s.latency.saturating_record(ns);
                }
            }
            Err(f) => {
                *self.errors.entry(f).or_default() += 1;
                if let Some(s) = slice {
                    s.errors += 1;
                }
            }
        }
    }

    /// Keeps what a failure of kind `f` said, if it is the first of its kind to say something.
    pub fn record_sample(&mut self, f: Failure, said: Option<String>) {
        let text = said.unwrap_or_else(|| match f {
            Failure::Timeout => "no complete answer within --timeout".into(),
            Failure::Connection => "connect failed, or the connection closed mid-answer".into(),
            _ => String::new(),
        });
        if !text.is_empty() && self.samples.len() < MAX_SAMPLES && !self.samples.contains_key(&f) {
            self.samples.insert(f, text);
        }
    }

    /// Records how late the generator woke for a slot it was free to send on time.
    pub fn record_wake_lag(&mut self, lag: Duration) {
        let ns = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        self.wake_lag.saturating_record(ns.clamp(1, MAX_TRACKED_NS));
    }

    /// Adds another thread's measurements.
    pub fn merge(&mut self, other: &Stats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.wake_lag.add(&other.wake_lag);
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        for (k, v) in &other.samples {
            if self.samples.len() < MAX_SAMPLES {
                self.samples.entry(*k).or_insert_with(|| v.clone());
            }
        }
        match (&mut self.timeline, &other.timeline) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.timeline = Some(theirs.clone()),
            _ => {}
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
    /// MCP sessions (0 in the 2026-07-28 era, which has none).
    pub sessions: usize,
    /// Client identities the requests went out as (2026-07-28; 1 in the stateful era, where
    /// each session is a client).
    pub clients: usize,
    /// The protocol revision asked for: `2025-11-25` (stateful) or `2026-07-28` (stateless).
    pub protocol: &'static str,
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

impl Percentiles {
    /// The percentiles of `h` (nanoseconds), all zero when it is empty.
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One slice of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct SliceReport {
    /// Start of the slice, seconds after the warm-up.
    pub at_s: f64,
    /// Requests due in the slice (successes and errors).
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Median latency of the successful ones, microseconds.
    pub p50_us: f64,
    /// Their 99th percentile, microseconds.
    pub p99_us: f64,
    /// Their largest, microseconds.
    pub max_us: f64,
    /// CPU time the hypervisor took from the machine during the slice, all CPUs summed, in
    /// milliseconds (10 ms resolution); absent where `/proc/stat` cannot be read.
    pub host_steal_ms: Option<f64>,
}

/// Latency over the slices in which the host took no CPU time, neither in the slice nor in
/// the one before (a stall's backlog spills into the next slice).
#[derive(Debug, Clone, Serialize)]
pub struct Unstolen {
    /// Slices counted.
    pub slices: usize,
    /// Slices in the run.
    pub of: usize,
    /// Successful requests in the counted slices.
    pub ok: u64,
    /// Their latency, microseconds (1 % resolution).
    pub latency_us: Percentiles,
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
    /// What the first failure of each kind said, by the same keys (HTTP body, JSON-RPC error
    /// message or tool error text).
    pub error_samples: BTreeMap<String, String>,
    /// Requests per second over the measured window.
    pub throughput_rps: f64,
    /// Latency of successful requests, microseconds.
    pub latency_us: Percentiles,
    /// Open loop: how late the generator itself woke for the slots it was free to send on
    /// time, microseconds. Part of `latency_us`, which counts from the intended time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_lag_us: Option<Percentiles>,
    /// Slice by slice (`--timeline`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<SliceReport>,
    /// Latency where the host took nothing (`--timeline`, where steal can be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unstolen: Option<Unstolen>,
}

impl Report {
    /// Builds the report from merged measurements; `steal` is the host's steal per interval
    /// from [`crate::timeline::sample_steal`] when the run kept a timeline.
    pub fn new(settings: Settings, stats: &Stats, steal: Option<&[u64]>) -> Report {
        let ok = stats.latency.len();
        let errors: u64 = stats.errors.values().sum();
        let requests = ok + errors;
        let throughput_rps = if settings.duration_s > 0.0 {
            requests as f64 / settings.duration_s
        } else {
            0.0
        };
        let (timeline, unstolen) = match &stats.timeline {
            Some(t) => slice_reports(t, steal),
            None => (Vec::new(), None),
        };
        Report {
            errors_by_kind: stats.errors.iter().map(|(k, v)| (k.key(), *v)).collect(),
            error_samples: stats
                .samples
                .iter()
                .map(|(k, v)| (k.key(), v.clone()))
                .collect(),
            settings,
            requests,
            ok,
            errors,
            throughput_rps,
            latency_us: Percentiles::of(&stats.latency),
            wake_lag_us: (!stats.wake_lag.is_empty()).then(|| Percentiles::of(&stats.wake_lag)),
            timeline,
            unstolen,
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
        let who = if s.sessions > 0 {
            format!("{} session(s)", s.sessions)
        } else {
            format!("{} client(s)", s.clients)
        };
        let _ = writeln!(
            out,
            "load         {rate}, {} thread(s), {} connection(s), concurrency {}, {who}, \
             protocol {}",
            s.threads, s.connections, s.concurrency, s.protocol
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
            let _ = match self.error_samples.get(k) {
                Some(said) => writeln!(out, "  error      {k:<14} {v:<10} e.g. {said}"),
                None => writeln!(out, "  error      {k:<14} {v}"),
            };
        }
        let l = &self.latency_us;
        let _ = writeln!(
            out,
            "latency (us) p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
        );
        if let Some(l) = &self.wake_lag_us {
            let _ = writeln!(
                out,
                "wake lag     p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1} us (the generator's own lateness, inside the latency)",
                l.p50, l.p90, l.p99, l.max
            );
        }
        if !self.timeline.is_empty() {
            let _ = writeln!(
                out,
                "timeline     {:>8} {:>9} {:>7} {:>10} {:>10} {:>10} {:>15}",
                "at s", "requests", "errors", "p50 us", "p99 us", "max us", "host steal ms"
            );
            for s in &self.timeline {
                let steal = s
                    .host_steal_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}"));
                let _ = writeln!(
                    out,
                    "             {:>8.2} {:>9} {:>7} {:>10.1} {:>10.1} {:>10.1} {:>15}",
                    s.at_s, s.requests, s.errors, s.p50_us, s.p99_us, s.max_us, steal
                );
            }
        }
        if let Some(u) = &self.unstolen {
            let l = &u.latency_us;
            let _ = writeln!(
                out,
                "no steal     {} of {} slices, {} ok: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1} us",
                u.slices, u.of, u.ok, l.p50, l.p90, l.p99, l.p99_9, l.max
            );
        }
        out
    }
}

/// The timeline's slices as reported, and the latency over the slices the host left alone.
fn slice_reports(t: &Timeline, steal: Option<&[u64]>) -> (Vec<SliceReport>, Option<Unstolen>) {
    // steal[0] is the interval before the first slice, steal[i + 1] slice i.
    let steal = steal.filter(|s| s.len() == t.slices.len() + 1);
    let mut quiet = crate::timeline::slice_histogram();
    let mut quiet_slices = 0;
    let reports = t
        .slices
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let h = &s.latency;
            let p = Percentiles::of(h);
            if let Some(st) = steal {
                if st[i] == 0 && st[i + 1] == 0 {
                    quiet_slices += 1;
                    // Same bounds, so adding cannot fail.
                    let _ = quiet.add(h);
                }
            }
            SliceReport {
                at_s: (t.slice * u32::try_from(i).unwrap_or(u32::MAX)).as_secs_f64(),
                requests: h.len() + s.errors,
                errors: s.errors,
                p50_us: p.p50,
                p99_us: p.p99,
                max_us: p.max,
                host_steal_ms: steal.map(|st| st[i + 1] as f64 / 1e6),
            }
        })
        .collect();
    let unstolen = steal.map(|_| Unstolen {
        slices: quiet_slices,
        of: t.slices.len(),
        ok: quiet.len(),
        latency_us: Percentiles::of(&quiet),
    });
    (reports, unstolen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_and_percentiles() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for i in 1..=100u64 {
            a.record(Duration::ZERO, Duration::from_micros(i), Ok(()));
        }
        b.record(
            Duration::ZERO,
            Duration::from_micros(5),
            Err(Failure::Rpc(-32603)),
        );
        b.record(
            Duration::ZERO,
            Duration::from_micros(5),
            Err(Failure::Timeout),
        );
        a.merge(&b);
        let settings = Settings {
            url: "http://x/mcp".into(),
            mode: "closed",
            rate: None,
            threads: 1,
            connections: 1,
            concurrency: 1,
            sessions: 1,
            clients: 1,
            protocol: "2025-11-25",
            duration_s: 2.0,
            warmup_s: 0.0,
            mix: "ping".into(),
        };
        let r = Report::new(settings, &a, None);
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
        // Closed loop never waits for a slot, so no wake lag is reported.
        assert!(
            r.wake_lag_us.is_none() && !json.contains("wake_lag_us"),
            "{json}"
        );
    }

    #[test]
    fn the_generators_own_lateness_is_reported_apart() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for us in [10, 20, 30, 40] {
            a.record_wake_lag(Duration::from_micros(us));
        }
        b.record_wake_lag(Duration::from_micros(900));
        a.merge(&b);
        let settings = Settings {
            url: "http://x/mcp".into(),
            mode: "open",
            rate: Some(5.0),
            threads: 2,
            connections: 2,
            concurrency: 2,
            sessions: 1,
            clients: 1,
            protocol: "2025-11-25",
            duration_s: 1.0,
            warmup_s: 0.0,
            mix: "ping".into(),
        };
        let r = Report::new(settings, &a, None);
        let lag = r.wake_lag_us.as_ref().expect("lag was recorded");
        assert!(
            (lag.p50 - 30.0).abs() < 0.1 && (lag.max - 900.0).abs() < 1.0,
            "{lag:?}"
        );
        assert!(r.to_table().contains("wake lag"));
    }

    #[test]
    fn slices_the_host_stole_from_are_left_out_with_the_one_after() {
        let slice = Duration::from_millis(100);
        let (mut a, mut b) = (
            Stats::with_timeline(slice, 4),
            Stats::with_timeline(slice, 4),
        );
        // 10 requests per slice at 100 us, split over two threads, except slice 1, which a
        // stall hit (50 ms), and slice 2 draining its backlog (5 ms).
        for (k, us) in [100, 50_000, 5_000, 100].into_iter().enumerate() {
            let at = slice * k as u32 + Duration::from_millis(10);
            for i in 0..10 {
                let t = if i % 2 == 0 { &mut a } else { &mut b };
                t.record(at, Duration::from_micros(us), Ok(()));
            }
        }
        b.record(slice * 3, Duration::from_micros(1), Err(Failure::Timeout));
        a.merge(&b);
        let settings = Settings {
            url: "http://x/mcp".into(),
            mode: "open",
            rate: Some(100.0),
            threads: 2,
            connections: 2,
            concurrency: 2,
            sessions: 1,
            clients: 1,
            protocol: "2025-11-25",
            duration_s: 0.4,
            warmup_s: 0.0,
            mix: "ping".into(),
        };
        let ms = 1_000_000;
        // Before the first slice, then slices 0..4: the host took 20 ms in slice 1.
        let steal = [0, 0, 20 * ms, 0, 0];
        let r = Report::new(settings.clone(), &a, Some(&steal));
        let counts: Vec<(u64, u64)> = r.timeline.iter().map(|s| (s.requests, s.errors)).collect();
        assert_eq!(counts, [(10, 0), (10, 0), (10, 0), (11, 1)]);
        assert!(
            (r.timeline[1].p99_us - 50_000.0).abs() < 500.0,
            "{:?}",
            r.timeline[1]
        );
        assert_eq!(r.timeline[1].host_steal_ms, Some(20.0));
        assert!((r.timeline[3].at_s - 0.3).abs() < 1e-9);
        let u = r.unstolen.as_ref().expect("steal was read");
        assert_eq!((u.slices, u.of, u.ok), (2, 4, 20));
        assert!(u.latency_us.max < 101.0, "{:?}", u.latency_us);
        // The whole run's tail still shows the stall.
        assert!(r.latency_us.p99 > 40_000.0);
        assert!(r.to_json().contains("\"unstolen\""));
        assert!(r.to_table().contains("2 of 4 slices"));
        // Without steal readings (or with the wrong count), no unstolen figure is made up.
        assert!(Report::new(settings.clone(), &a, None).unstolen.is_none());
        assert!(Report::new(settings, &a, Some(&steal[1..]))
            .unstolen
            .is_none());
    }
}
