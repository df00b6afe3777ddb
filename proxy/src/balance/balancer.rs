//! One server's replicas as one shard balances them: the one place that decides which replica
//! serves a request, and that learns from how each exchange went.
//!
//! Every choice of a replica asks here: the binding of a new session at `initialize`
//! ([`Balancer::bind`]), the replica an upstream session opens on ([`Balancer::open_on`]) or
//! stays on ([`Balancer::keeps`]), the replica a failed attempt retries on
//! ([`Balancer::retry_elsewhere`]) and, for stateless servers, each request's replica
//! ([`Balancer::for_request`]). So the exclusions (a replica already tried), the circuit, drained
//! replicas and the panic rule hold the same way for all of them. Stdio children have no
//! statistics and are spread in turn ([`super::children`]).

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::panic::{self, Mode};
use super::{Picker, ReplicaStats, RetryBudget, Strategy, Traffic, Transition};

/// One replica as the balancer is told of it.
pub struct ReplicaSpec {
    /// Its URL, for logs and metric labels.
    pub url: String,
    /// Its weight under `weighted`.
    pub weight: u32,
    /// Draining from the start.
    pub drain: bool,
}

/// One server's replicas, their statistics and the picking state, on one shard.
pub struct Balancer {
    server: String,
    urls: Vec<String>,
    /// This shard's latency, load and failure statistics, by replica.
    pub stats: Vec<ReplicaStats>,
    picker: Picker,
    /// The strategy in force: the configured one until `balance_load` changes it live.
    strategy: Cell<Strategy>,
    /// Retries this shard may still spend on the server.
    pub retry_budget: RetryBudget,
    /// Failures in a row that eject a replica.
    threshold: u32,
    /// `mcp_proxy_balancer_picks_total` of each replica.
    pick_counters: Vec<metrics::Counter>,
    /// This shard's panic state for the server ([`panic`]).
    panic: panic::Watch,
}

impl Balancer {
    /// The balancer of server `server`, ejecting a replica after `threshold` failures in a row.
    pub fn new(
        server: &str,
        replicas: Vec<ReplicaSpec>,
        strategy: Strategy,
        threshold: u32,
    ) -> Balancer {
        Balancer {
            server: server.to_owned(),
            stats: replicas
                .iter()
                .map(|r| ReplicaStats::new(r.weight, r.drain))
                .collect(),
            pick_counters: replicas
                .iter()
                .map(|r| crate::metrics::fleet::picks(server, &r.url))
                .collect(),
            urls: replicas.into_iter().map(|r| r.url).collect(),
            picker: Picker::default(),
            strategy: Cell::new(strategy),
            retry_budget: RetryBudget::default(),
            threshold,
            panic: panic::Watch::new(server),
        }
    }

    /// The strategy in force.
    pub fn strategy(&self) -> Strategy {
        self.strategy.get()
    }

    /// Takes a new strategy and new weights (by replica) in place, statistics kept.
    pub fn retune(&self, strategy: Strategy, weights: impl IntoIterator<Item = u32>) {
        self.strategy.set(strategy);
        for (stats, w) in self.stats.iter().zip(weights) {
            stats.weight.set(w.max(1));
        }
    }

    fn url(&self, replica: usize) -> &str {
        self.urls.get(replica).map_or("", String::as_str)
    }

    /// Picks a replica for new work (a new session binding, or a stateless request), skipping
    /// `exclude`.
    pub fn pick(&self, exclude: Option<usize>) -> Option<usize> {
        let now = Instant::now();
        let mode = self.mode(now);
        let picked = self
            .picker
            .pick_in(mode, self.strategy.get(), &self.stats, exclude, now);
        if let Some(r) = picked.and_then(|r| self.stats.get(r)) {
            r.picked();
            self.panic.let_through(!r.available(now));
        }
        if let Some(c) = picked.and_then(|r| self.pick_counters.get(r)) {
            c.increment(1);
        }
        picked
    }

    /// The replica a new client session is bound to at `initialize` (kept in its sealed id).
    pub fn bind(&self) -> Option<usize> {
        self.pick(None)
    }

    /// The replica an upstream session opens on: `preferred` (the session's binding) while it
    /// takes new work, else a pick that avoids `avoid` (the replica it moves off), else any.
    pub fn open_on(&self, preferred: Option<usize>, avoid: Option<usize>) -> Option<usize> {
        let now = Instant::now();
        // Opening an upstream session is new work: a replica drained since the binding was
        // chosen is passed over like an unhealthy one.
        preferred
            .filter(|r| self.takes_new_work(*r, now))
            .or_else(|| self.pick(avoid))
            .or_else(|| self.pick(None))
    }

    /// True when a session on `replica` stays there: it still serves its sessions and is not
    /// the one being moved off (`avoid`).
    pub fn keeps(&self, replica: usize, avoid: Option<usize>) -> bool {
        self.serves(replica, Instant::now()) && Some(replica) != avoid
    }

    /// Another replica for an attempt that failed on `failed`, if there is one.
    pub fn retry_elsewhere(&self, failed: usize) -> Option<usize> {
        self.pick(Some(failed))
    }

    /// The replica one request to a stateless server goes to: `pinned` (the replica earlier
    /// rounds of the same call went to) while it serves and is not `avoid`, else a pick that
    /// avoids `avoid`, else `fallback` (the replica the session was set up on).
    pub fn for_request(
        &self,
        pinned: Option<usize>,
        avoid: Option<usize>,
        fallback: usize,
    ) -> usize {
        let now = Instant::now();
        pinned
            .filter(|r| Some(*r) != avoid && self.serves(*r, now))
            .or_else(|| self.pick(avoid))
            .unwrap_or(fallback)
    }

    /// Which replicas may take work now ([`panic`]), noting a change.
    pub fn mode(&self, now: Instant) -> Mode {
        self.panic.mode(&self.server, &self.stats, now)
    }

    /// True when `replica` may take new work now (a session bound or opened there).
    pub fn takes_new_work(&self, replica: usize, now: Instant) -> bool {
        self.stats.get(replica).is_some_and(|r| {
            let mode = || self.mode(now);
            r.available(now) || self.panic.let_through(mode().takes_new_work(r, now))
        })
    }

    /// True when the sessions already on `replica` may go on using it.
    pub fn serves(&self, replica: usize, now: Instant) -> bool {
        self.stats
            .get(replica)
            .is_some_and(|r| r.usable(now) || self.panic.let_through(self.mode(now).serves(r, now)))
    }

    /// The health checks' verdict on `replica`; the panic state follows.
    pub fn set_healthy(&self, replica: usize, healthy: bool) {
        if let Some(stats) = self.stats.get(replica) {
            stats.healthy.set(healthy);
            self.mode(Instant::now());
        }
    }

    /// An exchange with `replica` starts: it is load until settled or dropped.
    pub fn begin(&self, replica: usize) -> InFlight<'_> {
        let stats = self.stats.get(replica);
        if let Some(stats) = stats {
            stats.begin();
        }
        InFlight {
            balancer: self,
            replica,
            stats,
            started: Instant::now(),
        }
    }

    /// Remembers why a request to `replica` failed (the fleet views show the last one).
    pub fn note_error(&self, replica: usize, message: String) {
        if let Some(stats) = self.stats.get(replica) {
            stats.note_error(Instant::now(), message);
        }
    }

    /// A health check of `replica` ended; `failure` says why it failed, `pause` what its
    /// `Retry-After` asked for. Returns whether it passed.
    pub fn probed(&self, replica: usize, failure: Option<String>, pause: Option<Duration>) -> bool {
        let Some(stats) = self.stats.get(replica) else {
            return false;
        };
        let now = Instant::now();
        let ok = failure.is_none();
        note_failure(stats, now, failure, pause);
        self.transition(replica, stats.probed(ok, self.threshold, now));
        ok
    }

    /// Exports and logs a change of `replica`'s circuit.
    fn transition(&self, replica: usize, change: Transition) {
        match change {
            Transition::Ejected(pause) => {
                crate::metrics::fleet::circuit(&self.server, self.url(replica), true);
                log::warn!(
                    "replica {replica} of {} ({}) ejected for {pause:?} after consecutive failures",
                    self.server,
                    self.url(replica)
                )
            }
            Transition::Restored => {
                crate::metrics::fleet::circuit(&self.server, self.url(replica), false);
                log::info!(
                    "replica {replica} of {} ({}) answers again",
                    self.server,
                    self.url(replica)
                )
            }
            Transition::None => return,
        }
        self.mode(Instant::now());
    }
}

/// An exchange in flight on a replica: settled with its outcome, or dropped unsettled (its
/// caller went away: a client that disconnected, a cancelled call), when it stops counting as
/// load and says nothing of the replica.
pub struct InFlight<'a> {
    balancer: &'a Balancer,
    replica: usize,
    stats: Option<&'a ReplicaStats>,
    started: Instant,
}

impl InFlight<'_> {
    /// The exchange ended: `failure` says why when the replica failed it, `pause` what its
    /// `Retry-After` asked for, `timed_out` when it got no answer in time. Logs what that
    /// changed of the circuit.
    pub fn settle(
        mut self,
        traffic: Traffic,
        failure: Option<String>,
        pause: Option<Duration>,
        timed_out: bool,
    ) {
        let Some(stats) = self.stats.take() else {
            return;
        };
        let now = Instant::now();
        let ok = failure.is_none();
        note_failure(stats, now, failure, pause);
        let (threshold, elapsed) = (self.balancer.threshold, now - self.started);
        let change = if timed_out {
            stats.timed_out(traffic, elapsed, threshold, now)
        } else {
            stats.end(traffic, elapsed, ok, threshold, now)
        };
        self.balancer.transition(self.replica, change);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(stats) = self.stats {
            stats.abandoned();
        }
    }
}

/// Keeps what a failed exchange or health check said of `stats`' replica: the message for the
/// operator, and the pause it asked for, before the outcome counts against its circuit.
fn note_failure(
    stats: &ReplicaStats,
    now: Instant,
    failure: Option<String>,
    pause: Option<Duration>,
) {
    if let Some(message) = failure {
        stats.note_error(now, message);
    }
    if let Some(pause) = pause {
        stats.asked_pause(pause, now);
    }
}
