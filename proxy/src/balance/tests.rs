//! Unit tests of the balancer: strategies, the circuit, pauses asked for, the retry budget.

use super::circuit::{EJECT_MAX, EJECT_MIN};
use super::*;
use std::time::{Duration, Instant};

fn fleet(n: usize) -> Vec<ReplicaStats> {
    (0..n).map(|_| ReplicaStats::new(1, false)).collect()
}

#[test]
fn round_robin_visits_every_available_replica_in_turn() {
    let r = fleet(3);
    let p = Picker::seeded(7);
    let now = Instant::now();
    let picks: Vec<_> = (0..6)
        .map(|_| p.pick(Strategy::RoundRobin, &r, None, now).unwrap())
        .collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    r[1].drain.set(true);
    let picks: Vec<_> = (0..4)
        .map(|_| p.pick(Strategy::RoundRobin, &r, None, now).unwrap())
        .collect();
    assert!(
        !picks.contains(&1),
        "a draining replica gets no new work: {picks:?}"
    );
}

#[test]
fn least_latency_sends_little_to_a_slow_replica() {
    let r = fleet(3);
    let p = Picker::seeded(42);
    let now = Instant::now();
    for _ in 0..20 {
        r[0].begin();
        r[0].end(Traffic::Client, Duration::from_millis(20), true, 3, now);
        for fast in &r[1..] {
            fast.begin();
            fast.end(Traffic::Client, Duration::from_micros(300), true, 3, now);
        }
    }
    let mut counts = [0usize; 3];
    for _ in 0..10_000 {
        counts[p.pick(Strategy::LeastLatency, &r, None, now).unwrap()] += 1;
    }
    assert!(counts[0] < 1_000, "slow replica got {counts:?}");
    assert!(
        counts[1] > 3_000 && counts[2] > 3_000,
        "fast ones share the rest: {counts:?}"
    );
}

#[test]
fn equal_replicas_share_and_an_unmeasured_one_is_neither_flooded_nor_starved() {
    let r = fleet(2);
    let p = Picker::seeded(11);
    let now = Instant::now();
    for _ in 0..5 {
        r[0].begin();
        r[0].end(Traffic::Client, Duration::from_micros(300), true, 3, now);
    }
    let first = (0..1_000)
        .filter(|_| p.pick(Strategy::LeastLatency, &r, None, now) == Some(1))
        .count();
    assert!(
        (300..700).contains(&first),
        "unmeasured replica got {first}/1000"
    );
}

#[test]
fn an_idle_slow_replica_is_tried_again_later() {
    let r = fleet(2);
    let p = Picker::seeded(5);
    let now = Instant::now();
    r[0].begin();
    r[0].end(Traffic::Client, Duration::from_millis(20), true, 3, now);
    r[1].begin();
    r[1].end(
        Traffic::Client,
        Duration::from_micros(300),
        true,
        3,
        now + Duration::from_secs(60),
    );
    let later = now + Duration::from_secs(60);
    let slow = (0..1_000)
        .filter(|_| p.pick(Strategy::LeastLatency, &r, None, later) == Some(0))
        .count();
    assert!(
        slow > 100,
        "a replica slow a minute ago is never retried: {slow}/1000"
    );
}

#[test]
fn weighted_follows_the_weights() {
    let r = vec![ReplicaStats::new(1, false), ReplicaStats::new(3, false)];
    let p = Picker::seeded(3);
    let now = Instant::now();
    let heavy = (0..8_000)
        .filter(|_| p.pick(Strategy::Weighted, &r, None, now) == Some(1))
        .count();
    assert!(
        (5_600..6_400).contains(&heavy),
        "expected about 3/4, got {heavy}/8000"
    );
}

#[test]
fn consecutive_failures_eject_then_half_open_then_restore() {
    let r = fleet(2);
    let now = Instant::now();
    assert_eq!(
        r[0].end(Traffic::Client, Duration::ZERO, false, 3, now),
        Transition::None
    );
    assert_eq!(
        r[0].end(Traffic::Client, Duration::ZERO, false, 3, now),
        Transition::None
    );
    assert!(matches!(
        r[0].end(Traffic::Client, Duration::ZERO, false, 3, now),
        Transition::Ejected(_)
    ));
    assert!(!r[0].available(now));
    let p = Picker::seeded(1);
    assert!((0..100).all(|_| p.pick(Strategy::Random, &r, None, now) == Some(1)));
    let later = now + EJECT_MIN;
    assert!(r[0].available(later), "half-open after the pause");
    assert!(
        matches!(r[0].end(Traffic::Client, Duration::ZERO, false, 3, later), Transition::Ejected(d) if d > EJECT_MIN)
    );
    let much_later = later + EJECT_MAX;
    assert_eq!(
        r[0].end(
            Traffic::Client,
            Duration::from_micros(100),
            true,
            3,
            much_later
        ),
        Transition::Restored
    );
    assert!(r[0].available(much_later));
}

#[test]
fn health_checks_are_counted_apart_and_feed_only_the_circuit() {
    let r = fleet(2);
    let now = Instant::now();
    for _ in 0..5 {
        assert_eq!(r[0].probed(true, 3, now), Transition::None);
    }
    let s = r[0].snapshot(now);
    assert_eq!((s.probes, s.failed_probes), (5, 0));
    assert_eq!((s.requests, s.failures, s.exchanges), (0, 0, 0));
    assert_eq!(s.inflight, 0);
    assert_eq!(s.ewma_us, None, "a ping is not a latency sample");
    // Client requests are counted as such, whatever the exchanges around them.
    r[0].served(true);
    r[0].served(false);
    let s = r[0].snapshot(now);
    assert_eq!((s.requests, s.failures, s.probes), (2, 1, 5));
    // Failed checks still eject, and a good one closes the circuit.
    assert_eq!(r[1].probed(false, 3, now), Transition::None);
    assert_eq!(r[1].probed(false, 3, now), Transition::None);
    assert!(matches!(r[1].probed(false, 3, now), Transition::Ejected(_)));
    assert!(!r[1].available(now));
    assert_eq!(r[1].probed(true, 3, now), Transition::Restored);
    assert!(r[1].available(now));
    let s = r[1].snapshot(now);
    assert_eq!(
        (s.probes, s.failed_probes, s.requests, s.failures),
        (4, 3, 0, 0)
    );
    // The balancer still sees both as unmeasured: equal shares.
    let p = Picker::seeded(17);
    let first = (0..1_000)
        .filter(|_| p.pick(Strategy::LeastLatency, &r, None, now) == Some(0))
        .count();
    assert!(
        (300..700).contains(&first),
        "probed replica got {first}/1000"
    );
}

#[test]
fn own_exchanges_feed_only_the_circuit() {
    let r = fleet(2);
    let now = Instant::now();
    for _ in 0..5 {
        r[0].begin();
        let slow = Duration::from_millis(50);
        assert_eq!(r[0].end(Traffic::Own, slow, true, 3, now), Transition::None);
    }
    let s = r[0].snapshot(now);
    assert_eq!((s.exchanges, s.inflight, s.ewma_us), (5, 0, None), "{s:?}");
    // Failed set-ups still eject, and an answered one closes the circuit.
    for _ in 0..2 {
        r[1].begin();
        assert_eq!(
            r[1].end(Traffic::Own, Duration::ZERO, false, 3, now),
            Transition::None
        );
    }
    r[1].begin();
    let third = r[1].end(Traffic::Own, Duration::ZERO, false, 3, now);
    assert!(matches!(third, Transition::Ejected(_)), "{third:?}");
    let later = now + EJECT_MAX;
    r[1].begin();
    let fourth = r[1].end(Traffic::Own, Duration::from_millis(50), true, 3, later);
    assert_eq!(fourth, Transition::Restored);
    assert_eq!(r[1].snapshot(later).ewma_us, None);
}

/// Fails `r` once as a client request answered "unavailable, retry after `pause`" is.
fn asked(r: &ReplicaStats, pause: Duration, now: Instant) -> Transition {
    r.asked_pause(pause, now);
    r.end(Traffic::Client, Duration::ZERO, false, 3, now)
}

#[test]
fn a_pause_asked_for_lengthens_the_ejection_but_does_not_cause_it() {
    let r = fleet(2);
    let now = Instant::now();
    let pause = Duration::from_secs(30);
    // One request's answer does not take the replica out: the threshold still decides.
    assert_eq!(asked(&r[0], pause, now), Transition::None);
    assert_eq!(asked(&r[0], pause, now), Transition::None);
    assert!(r[0].available(now));
    assert_eq!(asked(&r[0], pause, now), Transition::Ejected(pause));
    // Out past the circuit's own first ejection, for as long as it asked.
    assert!(!r[0].available(now + EJECT_MIN));
    assert!(!r[0].available(now + pause - Duration::from_millis(1)));
    assert!(r[0].available(now + pause));
    assert_eq!(r[0].snapshot(now).ejected_for_ms, 30_000);

    // A pause asked for once, in a run of failures, still counts when the run ejects.
    let now = now + Duration::from_secs(600);
    r[1].asked_pause(Duration::from_secs(20), now);
    r[1].end(Traffic::Own, Duration::ZERO, false, 3, now);
    r[1].probed(false, 3, now);
    let third = r[1].end(Traffic::Client, Duration::ZERO, false, 3, now);
    assert_eq!(third, Transition::Ejected(Duration::from_secs(20)));
    // Back once it is over; a pause asked for then forgotten by a success in between: the
    // next ejection is the circuit's own.
    let later = now + Duration::from_secs(20);
    let back = r[1].end(Traffic::Client, Duration::ZERO, true, 3, later);
    assert_eq!(back, Transition::Restored);
    assert_eq!(
        asked(&r[1], Duration::from_secs(40), later),
        Transition::None
    );
    let ok = r[1].end(Traffic::Client, Duration::ZERO, true, 3, later);
    assert_eq!(ok, Transition::None);
    for _ in 0..3 {
        r[1].end(Traffic::Client, Duration::ZERO, false, 3, later);
    }
    assert_eq!(r[1].snapshot(later).ejected_for_ms, 5_000);
}

#[test]
fn a_pause_shorter_than_the_backoff_changes_nothing() {
    let r = fleet(1);
    let now = Instant::now();
    asked(&r[0], Duration::from_secs(1), now);
    asked(&r[0], Duration::from_secs(1), now);
    assert_eq!(
        asked(&r[0], Duration::from_secs(1), now),
        Transition::Ejected(EJECT_MIN)
    );
    // Past the pause it asked for, an answer closes the circuit as before.
    let later = now + Duration::from_secs(2);
    assert_eq!(r[0].probed(true, 3, later), Transition::Restored);
    assert!(r[0].available(later));
}

#[test]
fn an_answer_during_the_pause_asked_for_does_not_close_the_circuit() {
    let r = fleet(1);
    let now = Instant::now();
    for _ in 0..3 {
        asked(&r[0], Duration::from_secs(30), now);
    }
    // A request that was already on its way, then a health check, both answered.
    let soon = now + Duration::from_secs(1);
    assert_eq!(
        r[0].end(Traffic::Client, Duration::ZERO, true, 3, soon),
        Transition::None
    );
    assert_eq!(r[0].probed(true, 3, soon), Transition::None);
    assert!(!r[0].available(soon));
    // Once the pause is over, the next answer closes it.
    let after = now + Duration::from_secs(30);
    assert_eq!(r[0].probed(true, 3, after), Transition::Restored);
    assert!(r[0].available(after));
}

#[test]
fn a_pause_asked_for_while_out_lengthens_the_ejection_never_shortens_it() {
    let r = fleet(1);
    let now = Instant::now();
    for _ in 0..3 {
        r[0].end(Traffic::Client, Duration::ZERO, false, 3, now);
    }
    assert_eq!(r[0].snapshot(now).ejected_for_ms, 5_000);
    // An answer still in flight when the circuit opened asks for 45 s.
    let soon = now + Duration::from_secs(1);
    r[0].asked_pause(Duration::from_secs(45), soon);
    assert_eq!(r[0].snapshot(soon).ejected_for_ms, 45_000);
    // A shorter one does not cut it.
    r[0].asked_pause(Duration::from_secs(2), soon);
    assert_eq!(r[0].snapshot(soon).ejected_for_ms, 45_000);
    // Failures while out change nothing: it stays out for as long as was asked.
    for _ in 0..3 {
        r[0].end(Traffic::Client, Duration::ZERO, false, 3, soon);
    }
    assert_eq!(r[0].snapshot(soon).ejected_for_ms, 45_000);
}

#[test]
fn an_absurd_pause_is_capped() {
    let r = fleet(1);
    let now = Instant::now();
    for _ in 0..3 {
        asked(&r[0], Duration::MAX, now);
    }
    assert_eq!(
        r[0].snapshot(now).ejected_for_ms,
        HOLD_MAX.as_millis() as u64
    );
    assert!(r[0].available(now + HOLD_MAX));
    // Asked while out: capped too, no overflow.
    r[0].asked_pause(Duration::MAX, now + Duration::from_secs(1));
    assert!(r[0].available(now + Duration::from_secs(1) + HOLD_MAX));
    // Zero asks for nothing.
    let r = fleet(1);
    for _ in 0..3 {
        asked(&r[0], Duration::ZERO, now);
    }
    assert_eq!(r[0].snapshot(now).ejected_for_ms, 5_000);
}

#[test]
fn the_retry_budget_runs_out_and_refills_with_traffic() {
    let b = RetryBudget::default();
    assert_eq!((0..20).filter(|_| b.withdraw()).count(), 10);
    for _ in 0..10 {
        b.deposit();
    }
    assert!(b.withdraw());
    assert!(!b.withdraw());
}

#[test]
fn nothing_available_and_exclusion() {
    let r = fleet(2);
    let now = Instant::now();
    let p = Picker::seeded(9);
    assert!((0..50).all(|_| p.pick(Strategy::LeastLatency, &r, Some(0), now) == Some(1)));
    r[1].healthy.set(false);
    assert_eq!(p.pick(Strategy::LeastLatency, &r, Some(0), now), None);
}

#[test]
fn background_failures_never_eject_and_background_answers_close_the_circuit() {
    let r = fleet(1);
    let now = Instant::now();
    for _ in 0..10 {
        r[0].begin();
        let t = r[0].end(Traffic::Background, Duration::ZERO, false, 3, now);
        assert_eq!(t, Transition::None);
    }
    let s = r[0].snapshot(now);
    assert_eq!(
        (s.exchanges, s.failed_exchanges, s.ejected_for_ms),
        (10, 10, 0)
    );
    assert!(r[0].available(now));
    // Out for the failures of client requests, back at the first answer of any exchange.
    for _ in 0..3 {
        r[0].end(Traffic::Client, Duration::ZERO, false, 3, now);
    }
    assert!(!r[0].available(now));
    let t = r[0].end(Traffic::Background, Duration::from_millis(1), true, 3, now);
    assert_eq!(t, Transition::Restored);
    assert_eq!(r[0].snapshot(now).ewma_us, None, "not a latency sample");
}

#[test]
fn failures_while_out_do_not_lengthen_the_ejection() {
    let r = fleet(1);
    let now = Instant::now();
    for _ in 0..3 {
        r[0].end(Traffic::Client, Duration::ZERO, false, 3, now);
    }
    assert_eq!(
        r[0].snapshot(now).ejected_for_ms,
        EJECT_MIN.as_millis() as u64
    );
    // Exchanges begun before it went out, failed checks: nothing changes.
    let soon = now + Duration::from_secs(1);
    for _ in 0..10 {
        assert_eq!(
            r[0].end(Traffic::Own, Duration::ZERO, false, 3, soon),
            Transition::None
        );
        assert_eq!(r[0].probed(false, 3, soon), Transition::None);
    }
    assert_eq!(r[0].snapshot(soon).ejected_for_ms, 4_000);
    assert_eq!(r[0].snapshot(soon).ejections, 1);
    // The half-open trial decides: a failure then doubles it.
    let later = now + EJECT_MIN;
    let t = r[0].probed(false, 3, later);
    assert_eq!(t, Transition::Ejected(EJECT_MIN * 2));
}

#[test]
fn a_timeout_while_the_replica_answers_other_exchanges_says_nothing_against_it() {
    let r = fleet(1);
    let now = Instant::now();
    let timeout = Duration::from_secs(1);
    // A health check answers while slow calls wait: their timeouts do not count.
    r[0].probed(true, 3, now + Duration::from_millis(200));
    let then = now + timeout;
    for _ in 0..200 {
        r[0].begin();
        assert_eq!(
            r[0].timed_out(Traffic::Client, timeout, 3, then),
            Transition::None
        );
    }
    let s = r[0].snapshot(then);
    assert_eq!(
        (s.consecutive_failures, s.ejected_for_ms, s.inflight),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!((s.exchanges, s.failed_exchanges), (200, 200));
    // Nothing answered since they were sent: the replica is not answering at all.
    let later = then + timeout;
    for _ in 0..2 {
        r[0].begin();
        assert_eq!(
            r[0].timed_out(Traffic::Client, timeout, 3, later),
            Transition::None
        );
    }
    r[0].begin();
    let third = r[0].timed_out(Traffic::Client, timeout, 3, later);
    assert_eq!(third, Transition::Ejected(EJECT_MIN));
    // Never answered at all: the same.
    let fresh = fleet(1);
    for _ in 0..3 {
        fresh[0].timed_out(Traffic::Client, timeout, 3, later);
    }
    assert!(!fresh[0].available(later));
}
