//! Per-shard latency hdrhistograms, merged on demand into exact quantiles.
//!
//! Each shard records into its own thread-local [`Latencies`] (no lock, no atomic). Once a
//! second a task on the shard adds what it recorded since the last time into the shard's slot
//! of a process-wide board (`Mutex` per shard) and clears its local copy. The admin endpoint
//! locks each slot in turn and adds them up. So the hot path never touches a lock; the only
//! lock is taken once a second per shard and by the admin reader, and they never wait long
//! (an add of two histograms). The price: what `/stats` shows lags by up to one second.
//!
//! Values are microseconds with 3 significant digits (0.1 % precision), from 1 µs to one hour;
//! longer values count as one hour. A histogram is allocated the first time it records, so a
//! server that is never called costs nothing.

use std::cell::RefCell;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hdrhistogram::Histogram;

/// How often each shard publishes what it recorded.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Highest value tracked: one hour, in microseconds.
const HIGHEST_US: u64 = 3_600_000_000;
const SIGFIG: u8 = 3;

/// One histogram per series, allocated on first use.
type Slot = Option<Histogram<u64>>;

/// Latencies recorded by one shard (or merged across shards).
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    /// End-to-end latency of POSTed messages (request read to response written).
    pub end_to_end: Slot,
    /// Per server: the proxy's whole handling of a forwarded request.
    pub request: Vec<Slot>,
    /// Per server: request sent upstream to response received.
    pub upstream: Vec<Slot>,
    /// Per server: the proxy's own time on a forwarded request, from reading it to its
    /// answer being ready to write, less the wait for the upstream.
    pub overhead: Vec<Slot>,
}

/// Quantiles of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Quantiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

impl Quantiles {
    /// The quantiles of `h` (all zero when nothing was recorded).
    pub fn of(h: &Slot) -> Quantiles {
        match h {
            Some(h) if !h.is_empty() => Quantiles {
                count: h.len(),
                p50: h.value_at_quantile(0.5),
                p90: h.value_at_quantile(0.9),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
            },
            _ => Quantiles::default(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, HIGHEST_US, SIGFIG).expect("valid histogram bounds")
}

fn record(slot: &mut Slot, took: Duration) {
    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    slot.get_or_insert_with(new_histogram)
        .saturating_record(us.clamp(1, HIGHEST_US));
}

/// Records `took` into a histogram kept outside the board (allocated on first use).
pub fn record_into(slot: &mut Slot, took: Duration) {
    record(slot, took);
}

/// Adds histogram `from` into `into` (both kept by [`record_into`]).
pub fn add_into(into: &mut Slot, from: &Slot) {
    add(into, from);
}

/// A histogram kept by [`record_into`] as (value, count) pairs, one per non-empty bucket: a
/// compact form that survives JSON, for sending it to another shard.
pub fn to_counts(slot: &Slot) -> Vec<(u64, u64)> {
    slot.iter()
        .flat_map(|h| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
        })
        .collect()
}

/// The histogram [`to_counts`] described: each value lands in the bucket it came from, so
/// quantiles and counts are exactly those of the original.
pub fn from_counts(counts: &[(u64, u64)]) -> Slot {
    let mut slot = None;
    for &(value, count) in counts.iter().filter(|(_, c)| *c > 0) {
        let _ = slot
            .get_or_insert_with(new_histogram)
            .record_n(value.clamp(1, HIGHEST_US), count);
    }
    slot
}

fn add(into: &mut Slot, from: &Slot) {
    if let Some(from) = from.as_ref().filter(|h| !h.is_empty()) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = into.get_or_insert_with(new_histogram).add(from);
    }
}

impl Latencies {
    /// Empty latencies for `servers` servers.
    pub fn new(servers: usize) -> Latencies {
        Latencies {
            end_to_end: None,
            request: vec![None; servers],
            upstream: vec![None; servers],
            overhead: vec![None; servers],
        }
    }

    /// Adds every value of `other` into `self`.
    pub fn add(&mut self, other: &Latencies) {
        add(&mut self.end_to_end, &other.end_to_end);
        for (series, from) in [
            (&mut self.request, &other.request),
            (&mut self.upstream, &other.upstream),
            (&mut self.overhead, &other.overhead),
        ] {
            if series.len() < from.len() {
                series.resize(from.len(), None);
            }
            for (into, from) in series.iter_mut().zip(from) {
                add(into, from);
            }
        }
    }

    /// Forgets every value, keeping the allocations.
    pub fn clear(&mut self) {
        let all = std::iter::once(&mut self.end_to_end)
            .chain(self.request.iter_mut())
            .chain(self.upstream.iter_mut())
            .chain(self.overhead.iter_mut());
        for h in all.flatten() {
            h.reset();
        }
    }
}

/// The shards' published latencies, one slot per shard.
struct Board {
    slots: Vec<Mutex<Latencies>>,
}

static BOARD: OnceLock<Board> = OnceLock::new();

/// Sizes the board (first call wins).
pub fn init_board(shards: usize, servers: usize) {
    BOARD.get_or_init(|| Board {
        slots: (0..shards)
            .map(|_| Mutex::new(Latencies::new(servers)))
            .collect(),
    });
}

thread_local! {
    /// This shard's index and what it recorded since it last published.
    static LOCAL: RefCell<Option<(usize, Latencies)>> = const { RefCell::new(None) };
}

/// Starts recording on this thread, as shard `shard`.
pub fn init_local(shard: usize, servers: usize) {
    LOCAL.with(|l| *l.borrow_mut() = Some((shard, Latencies::new(servers))));
}

/// Makes room on this shard for `servers` servers (servers added while running).
pub fn grow_local(servers: usize) {
    with_local(|l| {
        if l.request.len() < servers {
            l.request.resize(servers, None);
            l.upstream.resize(servers, None);
            l.overhead.resize(servers, None);
        }
    });
}

fn with_local(f: impl FnOnce(&mut Latencies)) {
    LOCAL.with(|l| {
        if let Some((_, lat)) = l.borrow_mut().as_mut() {
            f(lat)
        }
    });
}

/// Records an end-to-end latency on this shard.
pub fn record_end_to_end(took: Duration) {
    with_local(|l| record(&mut l.end_to_end, took));
}

/// Records the proxy's whole handling of a request to `server`.
pub fn record_request(server: usize, took: Duration) {
    with_local(|l| {
        if let Some(slot) = l.request.get_mut(server) {
            record(slot, took)
        }
    });
}

/// Records an upstream latency of `server`.
pub fn record_upstream(server: usize, took: Duration) {
    with_local(|l| {
        if let Some(slot) = l.upstream.get_mut(server) {
            record(slot, took)
        }
    });
}

/// Records the proxy's own time on a request to `server`.
pub fn record_overhead(server: usize, took: Duration) {
    with_local(|l| {
        if let Some(slot) = l.overhead.get_mut(server) {
            record(slot, took)
        }
    });
}

/// This thread's unpublished latencies (for tests of what the recording sites record).
#[cfg(test)]
pub fn local_snapshot() -> Option<Latencies> {
    LOCAL.with(|l| l.borrow().as_ref().map(|(_, lat)| lat.clone()))
}

/// Adds what this shard recorded to its slot of the board and starts afresh.
pub fn publish() {
    LOCAL.with(|l| {
        let mut local = l.borrow_mut();
        let Some((shard, lat)) = local.as_mut() else {
            return;
        };
        let Some(slot) = BOARD.get().and_then(|b| b.slots.get(*shard)) else {
            return;
        };
        // A poisoned slot only means a reader panicked mid-merge; the data is still sound.
        let mut published = slot.lock().unwrap_or_else(|p| p.into_inner());
        published.add(lat);
        drop(published);
        lat.clear();
    });
}

/// Publishes this shard's latencies every [`PUBLISH_EVERY`], forever.
pub async fn publish_forever() {
    loop {
        glommio::timer::sleep(PUBLISH_EVERY).await;
        publish();
    }
}

/// What every shard published, merged; and each shard's own end-to-end count.
pub fn merged() -> (Latencies, Vec<u64>) {
    let mut all = Latencies::default();
    let mut per_shard = Vec::new();
    for slot in BOARD.get().map(|b| b.slots.as_slice()).unwrap_or_default() {
        let lat = slot.lock().unwrap_or_else(|p| p.into_inner());
        per_shard.push(lat.end_to_end.as_ref().map_or(0, |h| h.len()));
        all.add(&lat);
    }
    (all, per_shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        // Two shards see different halves of the same traffic; the merge must be exactly
        // what one histogram fed with all of it reports.
        let mut a = Latencies::new(2);
        let mut b = Latencies::new(2);
        let mut one = Latencies::new(2);
        for i in 1..=1000u64 {
            let (shard, server) = if i % 3 == 0 { (&mut a, 0) } else { (&mut b, 1) };
            record(&mut shard.upstream[server], ms(i));
            record(&mut shard.end_to_end, ms(i));
            record(&mut one.upstream[server], ms(i));
            record(&mut one.end_to_end, ms(i));
        }
        let mut merged = Latencies::new(2);
        merged.add(&a);
        merged.add(&b);
        assert_eq!(
            Quantiles::of(&merged.end_to_end),
            Quantiles::of(&one.end_to_end)
        );
        for server in 0..2 {
            assert_eq!(
                Quantiles::of(&merged.upstream[server]),
                Quantiles::of(&one.upstream[server])
            );
        }
        let q = Quantiles::of(&merged.end_to_end);
        assert_eq!(q.count, 1000);
        // 3 significant digits: within 0.1 % of the true order statistics.
        let close =
            |got: u64, want_ms: u64| (got as f64 / (want_ms * 1000) as f64 - 1.0).abs() < 1e-3;
        assert!(close(q.p50, 500), "{q:?}");
        assert!(close(q.p90, 900), "{q:?}");
        assert!(close(q.p99, 990), "{q:?}");
        assert!(close(q.p999, 999), "{q:?}");
        assert!(close(q.max, 1000), "{q:?}");
        assert_eq!(Quantiles::of(&merged.request[0]), Quantiles::default());
    }

    #[test]
    fn a_histogram_sent_as_counts_reads_the_same() {
        let mut slot = None;
        for i in 1..=5000u64 {
            record(&mut slot, Duration::from_micros(i * i % 90_001 + 1));
        }
        record(&mut slot, Duration::from_secs(7200));
        let wire = serde_json::to_string(&to_counts(&slot)).expect("counts serialize");
        let back: Vec<(u64, u64)> = serde_json::from_str(&wire).expect("counts parse");
        let copy = from_counts(&back);
        assert_eq!(Quantiles::of(&copy), Quantiles::of(&slot));
        assert_eq!(Quantiles::of(&copy).count, 5001);
        // Merging copies is merging the originals.
        let (mut a, mut b) = (None, None);
        add_into(&mut a, &slot);
        add_into(&mut a, &slot);
        add_into(&mut b, &copy);
        add_into(&mut b, &from_counts(&to_counts(&slot)));
        assert_eq!(Quantiles::of(&a), Quantiles::of(&b));
        assert!(to_counts(&None).is_empty() && from_counts(&[]).is_none());
    }

    #[test]
    fn clear_keeps_nothing_and_extremes_saturate() {
        let mut l = Latencies::new(1);
        record(&mut l.upstream[0], Duration::from_secs(7200));
        record(&mut l.upstream[0], Duration::ZERO);
        let q = Quantiles::of(&l.upstream[0]);
        assert_eq!(q.count, 2);
        assert!(q.max >= HIGHEST_US && q.max <= HIGHEST_US + HIGHEST_US / 1000);
        l.clear();
        assert_eq!(Quantiles::of(&l.upstream[0]).count, 0);
        // Merging a shard that knows more servers (a config with more entries) grows the series.
        let mut small = Latencies::new(0);
        small.add(&l);
        assert_eq!(small.upstream.len(), 1);
    }
}
