//! The panic rule: when too few of a server's replicas are available, try them anyway.
//!
//! Health checks and the circuit take a replica out so that the others carry its work. When
//! there are no others, or too few to carry it, refusing every call is worse than trying the
//! replicas that are out: a lone replica that restarted answers again long before its circuit
//! or its health checks say so, and a replica ejected by a burst of failures may be fine by the
//! next call. So, as Envoy's panic threshold: when fewer than [`PANIC_THRESHOLD_PERCENT`] of
//! the replicas that may take work (those not draining) are available, the balancer picks among
//! all of them, healthy or not, ejected or not. Two limits stay: a draining replica never takes
//! new work, and a replica that asked for a pause (`Retry-After`) is left alone until it ends,
//! so a server whose replicas all drain or all asked to wait still refuses.

use std::cell::Cell;
use std::time::Instant;

use super::ReplicaStats;

/// Share of a server's non-draining replicas, in percent, that must be available for the
/// balancer to respect health and ejections (Envoy's default). With one replica: whenever it
/// is out, it is tried anyway; with two, only when both are out.
pub const PANIC_THRESHOLD_PERCENT: usize = 50;

/// Which replicas may take new work right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Enough replicas are available: only those (healthy, not ejected, not draining).
    Normal,
    /// Too few are: any replica not draining and not in a pause it asked for.
    Panic,
}

impl Mode {
    /// The mode `replicas` are in at `now`. Panic only when it changes something: some replica
    /// that is out could be tried.
    pub fn of(replicas: &[ReplicaStats], now: Instant) -> Mode {
        let (mut open, mut available, mut tryable) = (0usize, 0usize, 0usize);
        for r in replicas.iter().filter(|r| !r.drain.get()) {
            open += 1;
            available += usize::from(r.available(now));
            tryable += usize::from(!r.paused(now));
        }
        if available * 100 < PANIC_THRESHOLD_PERCENT * open && tryable > available {
            Mode::Panic
        } else {
            Mode::Normal
        }
    }

    /// True when `r` may take new work (a session bound or opened, a stateless request).
    pub fn takes_new_work(self, r: &ReplicaStats, now: Instant) -> bool {
        match self {
            Mode::Normal => r.available(now),
            Mode::Panic => !r.drain.get() && !r.paused(now),
        }
    }

    /// True when the sessions already on `r` may go on sending to it (draining or not).
    pub fn serves(self, r: &ReplicaStats, now: Instant) -> bool {
        match self {
            Mode::Normal => r.usable(now),
            Mode::Panic => !r.paused(now),
        }
    }
}

/// One server's panic state on one shard: tells when it changes (shard 0 logs it and exports
/// `mcp_proxy_balancer_panic`, its view standing for the proxy's as for health) and counts the
/// work it let through to replicas that were out (`mcp_proxy_balancer_panic_picks_total`).
pub struct Watch {
    panicking: Cell<bool>,
    let_through: metrics::Counter,
}

impl Watch {
    /// The state of server `server`, out of panic.
    pub fn new(server: &str) -> Watch {
        Watch {
            panicking: Cell::new(false),
            let_through: crate::metrics::fleet::panic_picks(server),
        }
    }

    /// The mode of `server`'s `replicas` at `now`, noting a change.
    pub fn mode(&self, server: &str, replicas: &[ReplicaStats], now: Instant) -> Mode {
        let mode = Mode::of(replicas, now);
        let panic = mode == Mode::Panic;
        if self.panicking.replace(panic) == panic || crate::metrics::shard() != Some(0) {
            return mode;
        }
        crate::metrics::fleet::panic(server, panic);
        let available = replicas.iter().filter(|r| r.available(now)).count();
        let of = replicas.len();
        if panic {
            log::warn!(
                "upstream {server}: balancer in panic: {available} of {of} replicas available, \
                 so every replica not draining is tried, ejected or unhealthy"
            );
        } else {
            log::info!(
                "upstream {server}: balancer out of panic: {available} of {of} replicas available"
            );
        }
        mode
    }

    /// Counts work sent to a replica that was out, which only panic allowed, when `allowed`;
    /// returns `allowed`.
    pub fn let_through(&self, allowed: bool) -> bool {
        if allowed {
            self.let_through.increment(1);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::balance::{Picker, Strategy, Traffic};

    const STRATEGIES: [Strategy; 4] = [
        Strategy::LeastLatency,
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::Random,
    ];

    fn fleet(n: usize) -> Vec<ReplicaStats> {
        (0..n).map(|_| ReplicaStats::new(1, false)).collect()
    }

    fn eject(r: &ReplicaStats, now: Instant) {
        for _ in 0..3 {
            r.begin();
            r.end(Traffic::Client, Duration::ZERO, false, 3, now);
        }
        assert!(!r.available(now));
    }

    /// How often each replica is picked in 1,000 picks under `strategy`.
    fn picks(r: &[ReplicaStats], strategy: Strategy, now: Instant) -> Vec<usize> {
        let p = Picker::seeded(23);
        let mut counts = vec![0; r.len()];
        for _ in 0..1_000 {
            if let Some(i) = p.pick(strategy, r, None, now) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn a_lone_replica_that_is_out_is_still_picked() {
        let now = Instant::now();
        let ejected = fleet(1);
        eject(&ejected[0], now);
        let unhealthy = fleet(1);
        unhealthy[0].healthy.set(false);
        for r in [&ejected, &unhealthy] {
            assert_eq!(Mode::of(r, now), Mode::Panic);
            for s in STRATEGIES {
                assert_eq!(picks(r, s, now), [1_000], "{s:?}");
            }
        }
    }

    #[test]
    fn with_half_the_replicas_available_the_available_one_takes_everything() {
        let r = fleet(2);
        let now = Instant::now();
        eject(&r[0], now);
        assert_eq!(Mode::of(&r, now), Mode::Normal);
        for s in STRATEGIES {
            assert_eq!(picks(&r, s, now), [0, 1_000], "{s:?}");
        }
    }

    #[test]
    fn when_all_are_out_every_one_is_tried() {
        let r = fleet(2);
        let now = Instant::now();
        eject(&r[0], now);
        eject(&r[1], now);
        for s in STRATEGIES {
            let counts = picks(&r, s, now);
            assert!(counts.iter().all(|c| *c > 300), "{s:?}: {counts:?}");
        }
        // Under the threshold, not only at zero: one of three available is too few.
        let r = fleet(3);
        eject(&r[0], now);
        eject(&r[1], now);
        assert_eq!(Mode::of(&r, now), Mode::Panic);
        let counts = picks(&r, Strategy::RoundRobin, now);
        assert!(counts.iter().all(|c| *c > 300), "{counts:?}");
    }

    #[test]
    fn a_draining_replica_is_never_picked_even_in_panic() {
        let now = Instant::now();
        let r = fleet(2);
        r[1].drain.set(true);
        eject(&r[0], now);
        assert_eq!(Mode::of(&r, now), Mode::Panic);
        for s in STRATEGIES {
            assert_eq!(picks(&r, s, now), [1_000, 0], "{s:?}");
        }
        // Sessions already on it finish there; new work never goes to it.
        assert!(Mode::Panic.serves(&r[1], now));
        assert!(!Mode::Panic.takes_new_work(&r[1], now));
        // All draining: refused.
        let r = fleet(2);
        r[0].drain.set(true);
        r[1].drain.set(true);
        assert_eq!(Mode::of(&r, now), Mode::Normal);
        for s in STRATEGIES {
            assert_eq!(picks(&r, s, now), [0, 0], "{s:?}");
        }
    }

    #[test]
    fn a_replica_that_asked_for_a_pause_is_left_alone_even_in_panic() {
        let now = Instant::now();
        let r = fleet(1);
        for _ in 0..3 {
            r[0].asked_pause(Duration::from_secs(30), now);
            r[0].end(Traffic::Client, Duration::ZERO, false, 3, now);
        }
        // Nothing to try: not panic, and refused until the pause is over.
        assert_eq!(Mode::of(&r, now), Mode::Normal);
        assert_eq!(picks(&r, Strategy::LeastLatency, now), [0]);
        assert!(!Mode::Panic.serves(&r[0], now));
        let later = now + Duration::from_secs(30);
        assert_eq!(picks(&r, Strategy::LeastLatency, later), [1_000]);
        // Beside one merely ejected, the paused one still gets nothing.
        let r = fleet(2);
        for _ in 0..3 {
            r[0].asked_pause(Duration::from_secs(30), now);
            r[0].end(Traffic::Client, Duration::ZERO, false, 3, now);
        }
        eject(&r[1], now);
        assert_eq!(Mode::of(&r, now), Mode::Panic);
        assert_eq!(picks(&r, Strategy::Random, now), [0, 1_000]);
    }

    #[test]
    fn exclusion_still_holds_in_panic() {
        let r = fleet(2);
        let now = Instant::now();
        eject(&r[0], now);
        eject(&r[1], now);
        let p = Picker::seeded(3);
        assert!((0..100).all(|_| p.pick(Strategy::LeastLatency, &r, Some(0), now) == Some(1)));
        let lone = fleet(1);
        eject(&lone[0], now);
        assert_eq!(p.pick(Strategy::LeastLatency, &lone, Some(0), now), None);
    }
}
