//! What one shard knows about one replica: its latency average, the requests in flight, what
//! it was sent and how that went, its circuit ([`Circuit`]), and the flags the operator and the
//! health checks set.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use super::circuit::{Circuit, Transition};

/// Latency a replica is assumed to have before it has answered anything.
pub(super) const SEED_LATENCY_US: f64 = 1_000.0;
/// Weight of the newest sample in the latency average.
const EWMA_ALPHA: f64 = 0.3;
/// Time constant of the decay of an unrefreshed latency average.
const DECAY_SECS: f64 = 5.0;

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
    circuit: Circuit,
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
            circuit: Circuit::default(),
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
            ejected_for_ms: millis(self.circuit.ejected_for(now)),
            ejections: self.circuit.ejections(),
            consecutive_failures: self.circuit.consecutive_failures(),
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
            last_error_ago_ms: last
                .as_ref()
                .map(|(at, _)| millis(now.saturating_duration_since(*at))),
        }
    }

    /// True when it may take new work now: healthy, not draining, not ejected (an ejection
    /// that has run out lets work through again: the circuit is half-open, and the next
    /// result closes or reopens it).
    pub fn available(&self, now: Instant) -> bool {
        self.healthy.get() && !self.drain.get() && self.circuit.closed(now)
    }

    /// True when requests may still go to it (existing sessions on a draining replica finish).
    pub fn usable(&self, now: Instant) -> bool {
        self.healthy.get() && self.circuit.closed(now)
    }

    /// True while a pause the replica asked for (`Retry-After`) runs: it gets nothing then,
    /// even when the balancer is in panic.
    pub fn paused(&self, now: Instant) -> bool {
        self.circuit.paused(now)
    }

    /// Cost for least-latency picking: the latency average, decayed with the time since its
    /// last sample (so a replica that stopped getting work because it looked slow is tried
    /// again after a while, instead of never), times the requests in flight plus one. A
    /// replica never measured costs `unmeasured`, the average of its measured peers: neither
    /// flooded (a zero seed would be) nor starved (a pessimistic seed would be).
    pub(super) fn cost(&self, now: Instant, unmeasured: f64) -> f64 {
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
    pub(super) fn measured(&self) -> bool {
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
            return self.circuit.succeeded(now);
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
            return self.circuit.succeeded(now);
        }
        self.circuit.failed(threshold, now)
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
        if !self.circuit.answered_since(now.checked_sub(elapsed)) {
            return self.end(traffic, elapsed, false, threshold, now);
        }
        self.inflight.set(self.inflight.get().saturating_sub(1));
        self.exchanges.set(self.exchanges.get() + 1);
        self.failed_exchanges.set(self.failed_exchanges.get() + 1);
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
            return self.circuit.succeeded(now);
        }
        self.failed_probes.set(self.failed_probes.get() + 1);
        self.circuit.failed(threshold, now)
    }

    /// The replica asked to get no work for `pause` (see [`Circuit::asked_pause`]).
    pub fn asked_pause(&self, pause: Duration, now: Instant) {
        self.circuit.asked_pause(pause, now);
    }
}
