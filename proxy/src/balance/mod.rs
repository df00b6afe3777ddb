//! Choosing a replica: pure functions over per-shard replica statistics.
//!
//! Nothing here knows about HTTP or MCP. Each shard keeps its own [`ReplicaStats`] (latency
//! EWMA, requests in flight, failures) for the replicas of each server, so picking takes no lock
//! and allocates nothing.
//!
//! `least_latency` is power of two choices: draw two available replicas at random and take the
//! one with the lower cost, where cost = EWMA latency × (in-flight + 1). Two random draws avoid
//! the herd that "always the best" causes when every shard sees the same best replica, and the
//! EWMA starts at a floor rather than zero so a fresh replica is not flooded before it has a
//! latency of its own.
//!
//! When too few replicas are available, the picker tries them anyway ([`panic`]).

pub mod panic;

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

pub use crate::config::Strategy;

/// Latency a replica is assumed to have before it has answered anything.
const SEED_LATENCY_US: f64 = 1_000.0;
/// Weight of the newest sample in the latency average.
const EWMA_ALPHA: f64 = 0.3;
/// Time constant of the decay of an unrefreshed latency average.
const DECAY_SECS: f64 = 5.0;
/// Costs closer than this ratio count as a tie, broken at random, so equal replicas share work.
const TIE_RATIO: f64 = 1.25;
/// First ejection of a failing replica; doubles on each further ejection, up to the max.
const EJECT_MIN: Duration = Duration::from_secs(5);
const EJECT_MAX: Duration = Duration::from_secs(60);
/// Longest pause a replica's own request for one (HTTP `Retry-After`, parsed by the transport)
/// keeps it out: the circuit's own longest ejection. One replica's header never keeps it out
/// longer than the circuit would for failures that go on; one still unavailable by then says
/// so again to the request the half-open circuit lets through, and is held again.
pub const HOLD_MAX: Duration = EJECT_MAX;

/// One replica as one shard sees it.
#[derive(Debug)]
pub struct ReplicaStats {
    /// Share of new work under `weighted` (at least 1); changed live by `balance_load`.
    pub weight: Cell<u32>,
    /// Draining: no new work.
    pub drain: Cell<bool>,
    /// Active health checks say it is up.
    pub healthy: Cell<bool>,
    ewma_us: Cell<f64>,
    /// When the latency average last took a sample; `None` before the first.
    sampled_at: Cell<Option<Instant>>,
    inflight: Cell<u32>,
    consecutive_failures: Cell<u32>,
    ejections: Cell<u32>,
    ejected_until: Cell<Option<Instant>>,
    /// The longest pause the replica asked for since its last success or ejection.
    asked: Cell<Option<Duration>>,
    /// The end of the pause the replica itself asked for: until then an answer (one already on
    /// its way, a health check) does not close its circuit.
    held_until: Cell<Option<Instant>>,
    /// When it last answered anything (an exchange, a health check).
    answered_at: Cell<Option<Instant>>,
    /// Times the picker chose it (a session binding, or a stateless request).
    picks: Cell<u64>,
    /// Client requests sent to it that ended, and those of them that got no answer.
    requests: Cell<u64>,
    failures: Cell<u64>,
    /// HTTP exchanges other than health checks (requests, session set-up, streams opened,
    /// sessions deleted) that ended, and those that failed (no answer, broken, timed out).
    exchanges: Cell<u64>,
    failed_exchanges: Cell<u64>,
    /// Health checks that ended, and those that failed.
    probes: Cell<u64>,
    failed_probes: Cell<u64>,
    /// The last failure's message and when it happened.
    last_error: RefCell<Option<(Instant, String)>>,
}

/// What one shard knows about one replica right now, for the fleet views.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaSnapshot {
    /// Weight under `weighted`.
    pub weight: u32,
    /// Draining.
    pub drain: bool,
    /// Active health checks say it is up.
    pub healthy: bool,
    /// Ejected (circuit open) until this many ms from now; 0 when not ejected.
    pub ejected_for_ms: u64,
    /// Ejections in a row (resets once it answers again).
    pub ejections: u32,
    /// Failed requests in a row.
    pub consecutive_failures: u32,
    /// Requests in flight.
    pub inflight: u32,
    /// Latency average in microseconds, when it has answered at least once.
    pub ewma_us: Option<f64>,
    /// Times the picker chose it.
    pub picks: u64,
    /// Client requests sent to it (each attempt, retries included) that ended.
    pub requests: u64,
    /// Client requests it did not answer (no answer, broken, timed out, an HTTP error
    /// status, not Streamable HTTP); a JSON-RPC error is an answer.
    pub failures: u64,
    /// HTTP exchanges other than health checks (requests, session set-up, streams, deletes).
    pub exchanges: u64,
    /// Exchanges that failed (no answer, broken, timed out).
    pub failed_exchanges: u64,
    /// Health checks that ended.
    pub probes: u64,
    /// Health checks that failed (no HTTP answer within the check's limit).
    pub failed_probes: u64,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// How long ago the last failure happened, in ms.
    pub last_error_ago_ms: Option<u64>,
}

impl ReplicaStats {
    /// A fresh replica, healthy until shown otherwise.
    pub fn new(weight: u32, drain: bool) -> ReplicaStats {
        ReplicaStats {
            weight: Cell::new(weight.max(1)),
            drain: Cell::new(drain),
            healthy: Cell::new(true),
            ewma_us: Cell::new(SEED_LATENCY_US),
            sampled_at: Cell::new(None),
            inflight: Cell::new(0),
            consecutive_failures: Cell::new(0),
            ejections: Cell::new(0),
            ejected_until: Cell::new(None),
            asked: Cell::new(None),
            held_until: Cell::new(None),
            answered_at: Cell::new(None),
            picks: Cell::new(0),
            requests: Cell::new(0),
            failures: Cell::new(0),
            exchanges: Cell::new(0),
            failed_exchanges: Cell::new(0),
            probes: Cell::new(0),
            failed_probes: Cell::new(0),
            last_error: RefCell::new(None),
        }
    }

    /// Counts one pick.
    pub fn picked(&self) {
        self.picks.set(self.picks.get() + 1);
    }

    /// Remembers why a request failed (the fleet views show the last one).
    pub fn note_error(&self, now: Instant, message: String) {
        *self.last_error.borrow_mut() = Some((now, message));
    }

    /// A copy of the figures, for the fleet views.
    pub fn snapshot(&self, now: Instant) -> ReplicaSnapshot {
        let last = self.last_error.borrow();
        ReplicaSnapshot {
            weight: self.weight.get(),
            drain: self.drain.get(),
            healthy: self.healthy.get(),
            ejected_for_ms: self.ejected_until.get().map_or(0, |t| {
                u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
            }),
            ejections: self.ejections.get(),
            consecutive_failures: self.consecutive_failures.get(),
            inflight: self.inflight.get(),
            ewma_us: self.measured().then(|| self.ewma_us.get()),
            picks: self.picks.get(),
            requests: self.requests.get(),
            failures: self.failures.get(),
            exchanges: self.exchanges.get(),
            failed_exchanges: self.failed_exchanges.get(),
            probes: self.probes.get(),
            failed_probes: self.failed_probes.get(),
            last_error: last.as_ref().map(|(_, m)| m.clone()),
            last_error_ago_ms: last.as_ref().map(|(at, _)| {
                u64::try_from(now.saturating_duration_since(*at).as_millis()).unwrap_or(u64::MAX)
            }),
        }
    }

    /// True when it may take new work now: healthy, not draining, not ejected (an ejection
    /// that has run out lets work through again: the circuit is half-open, and the next
    /// result closes or reopens it).
    pub fn available(&self, now: Instant) -> bool {
        self.healthy.get() && !self.drain.get() && self.ejected_until.get().is_none_or(|t| now >= t)
    }

    /// True when requests may still go to it (existing sessions on a draining replica finish).
    pub fn usable(&self, now: Instant) -> bool {
        self.healthy.get() && self.ejected_until.get().is_none_or(|t| now >= t)
    }

    /// True while a pause the replica asked for (`Retry-After`) runs: it gets nothing then,
    /// even when the balancer is in panic.
    pub fn paused(&self, now: Instant) -> bool {
        self.held_until.get().is_some_and(|t| now < t)
    }

    /// Cost for least-latency picking: the latency average, decayed with the time since its
    /// last sample (so a replica that stopped getting work because it looked slow is tried
    /// again after a while, instead of never), times the requests in flight plus one. A
    /// replica never measured costs `unmeasured`, the average of its measured peers: neither
    /// flooded (a zero seed would be) nor starved (a pessimistic seed would be).
    fn cost(&self, now: Instant, unmeasured: f64) -> f64 {
        let latency = match self.sampled_at.get() {
            Some(at) => {
                let age = now.saturating_duration_since(at).as_secs_f64();
                self.ewma_us.get() * (-age / DECAY_SECS).exp()
            }
            None => unmeasured,
        };
        latency * f64::from(self.inflight.get() + 1)
    }

    /// True once the replica has answered at least once.
    fn measured(&self) -> bool {
        self.sampled_at.get().is_some()
    }

    /// Latency average, in microseconds.
    pub fn latency_us(&self) -> f64 {
        self.ewma_us.get()
    }

    /// Requests in flight.
    pub fn inflight(&self) -> u32 {
        self.inflight.get()
    }

    /// An exchange starts (not a health check: those are not load).
    pub fn begin(&self) {
        self.inflight.set(self.inflight.get() + 1);
    }

    /// An exchange was dropped before its outcome was known (its caller went away: a client
    /// that disconnected, a cancelled call): no longer load, and no verdict on the replica.
    pub fn abandoned(&self) {
        self.inflight.set(self.inflight.get().saturating_sub(1));
    }

    /// An exchange ended after `elapsed`; `ok` when the replica answered. An answer closes the
    /// circuit whoever asked; a failure counts against it unless it was
    /// [`Traffic::Background`]; the latency feeds the average only for [`Traffic::Client`].
    pub fn end(
        &self,
        traffic: Traffic,
        elapsed: Duration,
        ok: bool,
        threshold: u32,
        now: Instant,
    ) -> Transition {
        self.inflight.set(self.inflight.get().saturating_sub(1));
        self.exchanges.set(self.exchanges.get() + 1);
        if !ok {
            self.failed_exchanges.set(self.failed_exchanges.get() + 1);
            if traffic == Traffic::Background {
                return Transition::None;
            }
        }
        if ok && traffic != Traffic::Client {
            return self.succeeded(now);
        }
        if ok {
            let sample = elapsed.as_secs_f64() * 1e6;
            let ewma = if self.measured() {
                EWMA_ALPHA * sample + (1.0 - EWMA_ALPHA) * self.ewma_us.get()
            } else {
                sample
            };
            self.ewma_us.set(ewma.max(1.0));
            self.sampled_at.set(Some(now));
            return self.succeeded(now);
        }
        self.failed(threshold, now)
    }

    /// An exchange got no answer within the server's timeout, `elapsed` after it was sent.
    /// When the replica answered something else meanwhile (another request, a health check, a
    /// stream), the time was this request's own (a slow tool, a stuck handler): it fails the
    /// request but says nothing against the replica. When nothing answered, it counts as any
    /// failure: a replica that answers nothing at all is down.
    pub fn timed_out(
        &self,
        traffic: Traffic,
        elapsed: Duration,
        threshold: u32,
        now: Instant,
    ) -> Transition {
        let sent = now.checked_sub(elapsed);
        let answered_since = self
            .answered_at
            .get()
            .zip(sent)
            .is_some_and(|(answered, sent)| answered > sent);
        if !answered_since {
            return self.end(traffic, elapsed, false, threshold, now);
        }
        self.inflight.set(self.inflight.get().saturating_sub(1));
        self.exchanges.set(self.exchanges.get() + 1);
        self.failed_exchanges.set(self.failed_exchanges.get() + 1);
        Transition::None
    }

    fn succeeded(&self, now: Instant) -> Transition {
        self.answered_at.set(Some(now));
        self.consecutive_failures.set(0);
        self.asked.set(None);
        if self.held_until.get().is_some_and(|t| now < t) {
            // The replica asked for this pause; an answer that was already on its way, or a
            // sessionless health check, does not cut it short.
            return Transition::None;
        }
        self.held_until.set(None);
        if self.ejected_until.take().is_some() {
            self.ejections.set(0);
            return Transition::Restored;
        }
        Transition::None
    }

    /// A client request sent to it ended; `answered` when the replica answered it.
    pub fn served(&self, answered: bool) {
        self.requests.set(self.requests.get() + 1);
        if !answered {
            self.failures.set(self.failures.get() + 1);
        }
    }

    /// A health check ended; `ok` when the replica answered. Its outcome is evidence for the
    /// circuit like any exchange's (a good check closes an open circuit, failed ones count
    /// toward ejection), but it is neither load nor a latency sample: a sessionless `ping`,
    /// which stateful servers refuse at once, says nothing about how long real work takes,
    /// and would keep an idle replica's average from decaying and seed a fresh one with it.
    pub fn probed(&self, ok: bool, threshold: u32, now: Instant) -> Transition {
        self.probes.set(self.probes.get() + 1);
        if ok {
            return self.succeeded(now);
        }
        self.failed_probes.set(self.failed_probes.get() + 1);
        self.failed(threshold, now)
    }

    /// The replica asked to get no work for `pause` (it answered "unavailable, retry after"):
    /// the failure that comes with it counts as usual, and whenever that ejects the replica the
    /// ejection lasts at least `pause`; an ejection already in force is lengthened to it. The
    /// request decides whether to eject (one answer of one request does not take a replica
    /// out), the replica how long. Capped at [`HOLD_MAX`], so no value keeps it out for good.
    pub fn asked_pause(&self, pause: Duration, now: Instant) {
        let pause = pause.min(HOLD_MAX);
        if pause.is_zero() {
            return;
        }
        match self.ejected_until.get() {
            Some(until) if now < until => {
                let end = now + pause;
                self.ejected_until.set(Some(until.max(end)));
                self.hold_until(end);
            }
            _ => self
                .asked
                .set(Some(self.asked.get().map_or(pause, |a| a.max(pause)))),
        }
    }

    fn hold_until(&self, end: Instant) {
        let held = self.held_until.get().map_or(end, |h| h.max(end));
        self.held_until.set(Some(held));
    }

    fn failed(&self, threshold: u32, now: Instant) -> Transition {
        // While the circuit is open a failure says nothing new: exchanges begun before it
        // opened, health checks, calls the panic rule let through. Counted, each would take
        // the replica out again for twice as long while it is down, and keep it out long after
        // it answers again. The half-open trial, once the ejection has run out, decides.
        if self.ejected_until.get().is_some_and(|t| now < t) {
            return Transition::None;
        }
        let failures = self.consecutive_failures.get() + 1;
        self.consecutive_failures.set(failures);
        // A half-open replica that fails again is ejected at once, for longer.
        let half_open = self.ejected_until.get().is_some_and(|t| now >= t);
        if failures >= threshold || half_open {
            let n = self.ejections.get();
            self.ejections.set(n + 1);
            let backoff = (EJECT_MIN * 2u32.saturating_pow(n)).min(EJECT_MAX);
            let asked = self.asked.take().unwrap_or_default();
            if !asked.is_zero() {
                self.hold_until(now + asked);
            }
            // Never shorter than an ejection already in force (one the replica asked for).
            let end = now + backoff.max(asked);
            let end = self.ejected_until.get().map_or(end, |t| t.max(end));
            self.ejected_until.set(Some(end));
            self.consecutive_failures.set(0);
            return Transition::Ejected(end.saturating_duration_since(now));
        }
        Transition::None
    }
}

/// Whose work an exchange with a replica is, which decides what the balancer learns from it.
///
/// Only a client's request says how long real work takes there. The proxy's own exchanges
/// (upstream session set-up, the `server/discover` probe, notifications and answers passed
/// on) are slower (`initialize`) or faster (a 202) than that and come in bursts (a replica
/// that just took many sessions), so as latency samples they would move traffic for no
/// reason. Whether they got an answer is still evidence for the circuit: a replica that fails
/// the `initialize` a client waits on is failing.
///
/// What the proxy retries on its own, with nobody waiting (GET streams opened and re-opened,
/// sessions re-opened to keep their subscriptions, subscriptions renewed, discovery, DELETEs),
/// is [`Traffic::Background`]: an answer closes the circuit, a failure does not count against
/// it. Those retries go on while a replica is down, so counted they would keep it ejected,
/// for longer each time, after it is back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// A request a client sent: a latency sample for the balancer and evidence for the circuit.
    Client,
    /// The proxy's own exchange for a client's request: evidence for the circuit only.
    Own,
    /// The proxy's own exchange that nobody waits on: only its answers count, as signs of life.
    Background,
}

/// What a request's outcome did to a replica.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// Taken out for this long after consecutive failures.
    Ejected(Duration),
    /// Back after an ejection.
    Restored,
}

/// Retries a shard may spend on one server: each request earns a tenth of a retry, up to a
/// reserve of ten, so retries stay a small share of traffic when a whole fleet fails.
#[derive(Debug)]
pub struct RetryBudget {
    /// In tenths of a retry, so earning is exact.
    tenths: Cell<u32>,
}

/// Largest reserve, in tenths of a retry.
const RETRY_RESERVE_TENTHS: u32 = 100;

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            tenths: Cell::new(RETRY_RESERVE_TENTHS),
        }
    }
}

impl RetryBudget {
    /// A request was sent: a tenth of a retry earned.
    pub fn deposit(&self) {
        self.tenths
            .set((self.tenths.get() + 1).min(RETRY_RESERVE_TENTHS));
    }

    /// Takes one retry; false when the budget is spent.
    pub fn withdraw(&self) -> bool {
        let t = self.tenths.get();
        if t >= 10 {
            self.tenths.set(t - 10);
            true
        } else {
            false
        }
    }
}

/// Per-shard picking state: the round-robin position and a small PRNG.
#[derive(Debug)]
pub struct Picker {
    next: Cell<usize>,
    rng: Cell<u64>,
}

impl Default for Picker {
    fn default() -> Self {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Picker {
            next: Cell::new(0),
            rng: Cell::new(u64::from_le_bytes(seed) | 1),
        }
    }
}

impl Picker {
    /// A picker with a fixed seed, for tests and benchmarks.
    pub fn seeded(seed: u64) -> Picker {
        Picker {
            next: Cell::new(0),
            rng: Cell::new(seed | 1),
        }
    }

    /// xorshift64*: a statistically decent draw without a dependency or a syscall.
    fn random(&self, below: usize) -> usize {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % below as u64) as usize
    }

    /// Picks a replica for new work, skipping `exclude`: among those available, or under the
    /// panic rule among all that may be tried ([`panic`]).
    pub fn pick(
        &self,
        strategy: Strategy,
        replicas: &[ReplicaStats],
        exclude: Option<usize>,
        now: Instant,
    ) -> Option<usize> {
        let mode = panic::Mode::of(replicas, now);
        self.pick_in(mode, strategy, replicas, exclude, now)
    }

    /// [`pick`](Self::pick) in a `mode` the caller already worked out.
    pub fn pick_in(
        &self,
        mode: panic::Mode,
        strategy: Strategy,
        replicas: &[ReplicaStats],
        exclude: Option<usize>,
        now: Instant,
    ) -> Option<usize> {
        let ok = |i: usize| Some(i) != exclude && mode.takes_new_work(&replicas[i], now);
        let count = (0..replicas.len()).filter(|i| ok(*i)).count();
        if count == 0 {
            return None;
        }
        // The n-th available replica, without collecting them.
        let nth = |n: usize| (0..replicas.len()).filter(|i| ok(*i)).nth(n);
        match strategy {
            Strategy::RoundRobin => {
                let n = self.next.get();
                self.next.set(n.wrapping_add(1));
                nth(n % count)
            }
            Strategy::Random => nth(self.random(count)),
            Strategy::Weighted => {
                let total: u64 = (0..replicas.len())
                    .filter(|i| ok(*i))
                    .map(|i| u64::from(replicas[i].weight.get()))
                    .sum();
                let mut point = self.random(total as usize) as u64;
                (0..replicas.len()).filter(|i| ok(*i)).find(|i| {
                    let w = u64::from(replicas[*i].weight.get());
                    if point < w {
                        true
                    } else {
                        point -= w;
                        false
                    }
                })
            }
            Strategy::LeastLatency => {
                let a = nth(self.random(count))?;
                if count == 1 {
                    return Some(a);
                }
                // A second draw among the others: skip a's position.
                let mut k = self.random(count - 1);
                let pos_a = (0..replicas.len())
                    .filter(|i| ok(*i))
                    .position(|i| i == a)
                    .unwrap_or(0);
                if k >= pos_a {
                    k += 1;
                }
                let b = nth(k)?;
                let (sum, measured) = replicas
                    .iter()
                    .filter(|r| r.measured())
                    .fold((0.0, 0u32), |(sum, n), r| (sum + r.ewma_us.get(), n + 1));
                let unmeasured = if measured == 0 {
                    SEED_LATENCY_US
                } else {
                    sum / f64::from(measured)
                };
                let (ca, cb) = (
                    replicas[a].cost(now, unmeasured),
                    replicas[b].cost(now, unmeasured),
                );
                if ca.max(cb) <= ca.min(cb) * TIE_RATIO {
                    return Some(if self.random(2) == 0 { a } else { b });
                }
                Some(if cb < ca { b } else { a })
            }
        }
    }
}

#[cfg(test)]
mod tests;
