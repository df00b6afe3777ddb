//! Properties of the pick over arbitrary fleets: what may never be picked, weights followed,
//! every candidate visited in turn, and a replica every other beats never chosen by p2c.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::panic::Mode;
// `Strategy` is proptest's word for a value generator; the balancing strategy is renamed here.
use super::{Children, Picker, ReplicaStats, Strategy as Balancing, Traffic};

const STRATEGIES: [Balancing; 4] = [
    Balancing::LeastLatency,
    Balancing::RoundRobin,
    Balancing::Weighted,
    Balancing::Random,
];

/// How a replica stands at the pick.
#[derive(Clone, Copy, Debug)]
enum Standing {
    Up,
    Unhealthy,
    /// Ejected by failures in a row.
    Ejected,
    /// Ejected, and in a pause it asked for (`Retry-After`).
    Paused,
}

fn standing() -> impl Strategy<Value = Standing> {
    prop_oneof![
        Just(Standing::Up),
        Just(Standing::Unhealthy),
        Just(Standing::Ejected),
        Just(Standing::Paused),
    ]
}

/// One replica: its weight, its standing, whether it drains, and one latency sample (µs).
type Spec = (u32, Standing, bool, u64);

fn replica(spec: Spec, now: Instant) -> ReplicaStats {
    let (weight, standing, drain, latency_us) = spec;
    let r = ReplicaStats::new(weight, drain);
    r.begin();
    r.end(
        Traffic::Client,
        Duration::from_micros(latency_us),
        true,
        1,
        now,
    );
    match standing {
        Standing::Up => {}
        Standing::Unhealthy => r.healthy.set(false),
        Standing::Ejected => {
            r.end(Traffic::Client, Duration::ZERO, false, 1, now);
        }
        Standing::Paused => {
            r.asked_pause(Duration::from_secs(30), now);
            r.end(Traffic::Client, Duration::ZERO, false, 1, now);
        }
    }
    r
}

fn fleet_of(specs: &[Spec], now: Instant) -> Vec<ReplicaStats> {
    specs.iter().map(|s| replica(*s, now)).collect()
}

fn specs(max: usize) -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec(
        (
            1u32..=10,
            standing(),
            prop::bool::weighted(0.2),
            50u64..50_000,
        ),
        1..max,
    )
}

proptest! {
    /// Whatever the fleet and the strategy: never the replica excluded (a retry's), never one
    /// draining or in a pause it asked for; never an unhealthy or ejected one while enough
    /// others are available (the panic rule is not in force); and nothing only when no
    /// replica may take the work.
    #[test]
    fn a_pick_never_returns_a_replica_that_may_not_take_the_work(
        specs in specs(9),
        strategy in prop::sample::select(&STRATEGIES[..]),
        exclude in proptest::option::of(0usize..9),
        seed in any::<u64>(),
    ) {
        let now = Instant::now();
        let fleet = fleet_of(&specs, now);
        let mode = Mode::of(&fleet, now);
        let picker = Picker::seeded(seed);
        let may = |i: usize| Some(i) != exclude && mode.takes_new_work(&fleet[i], now);
        let any = (0..fleet.len()).any(may);
        for _ in 0..20 {
            let picked = picker.pick(strategy, &fleet, exclude, now);
            prop_assert_eq!(picked.is_some(), any, "{:?} {:?}", picked, mode);
            let Some(i) = picked else { continue };
            prop_assert!(Some(i) != exclude, "picked the excluded {}", i);
            prop_assert!(!fleet[i].drain.get(), "picked the draining {}", i);
            prop_assert!(!fleet[i].paused(now), "picked the paused {}", i);
            if mode == Mode::Normal {
                prop_assert!(fleet[i].available(now), "picked {} that is out", i);
            }
        }
    }

    /// `weighted` sends each replica its weight's share of the picks, within 2 points over
    /// 20,000 picks (five standard deviations at worst).
    #[test]
    fn weighted_picks_follow_the_weights(
        weights in prop::collection::vec(1u32..=10, 2..6),
        seed in any::<u64>(),
    ) {
        let now = Instant::now();
        let fleet: Vec<_> = weights.iter().map(|w| ReplicaStats::new(*w, false)).collect();
        let picker = Picker::seeded(seed);
        let mut counts = vec![0u32; fleet.len()];
        const PICKS: u32 = 20_000;
        for _ in 0..PICKS {
            let i = picker.pick(Balancing::Weighted, &fleet, None, now);
            prop_assert!(i.is_some());
            counts[i.unwrap_or_default()] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (w, c) in weights.iter().zip(&counts) {
            let expected = f64::from(*w) / f64::from(total);
            let got = f64::from(*c) / f64::from(PICKS);
            prop_assert!((got - expected).abs() < 0.02, "{:?} got {:?}", weights, counts);
        }
    }

    /// `round_robin` visits every candidate exactly once in as many picks as there are
    /// candidates, from wherever its turn stands.
    #[test]
    fn round_robin_visits_every_candidate_once_a_round(
        specs in specs(9),
        turns in 0usize..20,
    ) {
        let now = Instant::now();
        let fleet = fleet_of(&specs, now);
        let mode = Mode::of(&fleet, now);
        let picker = Picker::seeded(1);
        for _ in 0..turns {
            picker.pick(Balancing::RoundRobin, &fleet, None, now);
        }
        let candidates: Vec<usize> =
            (0..fleet.len()).filter(|i| mode.takes_new_work(&fleet[*i], now)).collect();
        let mut seen: Vec<usize> = (0..candidates.len())
            .filter_map(|_| picker.pick(Balancing::RoundRobin, &fleet, None, now))
            .collect();
        seen.sort_unstable();
        prop_assert_eq!(seen, candidates);
    }

    /// `least_latency` never picks a replica whose cost (latency × (in flight + 1)) is beyond
    /// the tie ratio above every other's: whichever two it draws, the other one wins.
    #[test]
    fn least_latency_never_picks_a_replica_every_other_beats(
        others in prop::collection::vec((100u64..10_000, 0u32..4), 1..7),
        at in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        let now = Instant::now();
        let load = |latency_us: u64, inflight: u32| {
            let r = ReplicaStats::new(1, false);
            r.begin();
            r.end(Traffic::Client, Duration::from_micros(latency_us), true, 1, now);
            (0..inflight).for_each(|_| r.begin());
            r
        };
        let costliest = others
            .iter()
            .map(|(l, n)| *l * u64::from(n + 1))
            .max()
            .unwrap_or(1);
        let mut fleet: Vec<_> = others.iter().map(|(l, n)| load(*l, *n)).collect();
        // Twice the costliest other: well past the tie ratio (1.25).
        let slow = at.index(fleet.len() + 1);
        fleet.insert(slow, load(costliest * 2, 0));
        let picker = Picker::seeded(seed);
        for _ in 0..200 {
            let picked = picker.pick(Balancing::LeastLatency, &fleet, None, now);
            prop_assert!(picked.is_some() && picked != Some(slow), "{:?}", picked);
        }
    }

    /// Stdio children: sessions are bound to each child in turn.
    #[test]
    fn stdio_sessions_are_bound_to_each_child_in_turn(count in 1usize..9, turns in 0usize..20) {
        let children = Children::new(count);
        for _ in 0..turns {
            children.serving(None);
        }
        let mut seen: Vec<usize> = (0..count).map(|_| children.serving(None)).collect();
        seen.sort_unstable();
        prop_assert_eq!(seen, (0..count).collect::<Vec<_>>());
        // A bound session keeps its child.
        prop_assert_eq!(children.serving(Some(count - 1)), count - 1);
        // One child: nothing to bind.
        prop_assert_eq!(children.bind().is_none(), count == 1);
    }
}
