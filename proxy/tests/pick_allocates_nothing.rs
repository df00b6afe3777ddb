//! A pick allocates nothing: every strategy, over a few replicas and over many, with live
//! statistics, some replicas out and one excluded, and through the per-server balancer.
//!
//! Allocations are counted per thread by this test binary's global allocator, so tests
//! running beside it on other threads do not count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use mcp_proxy::balance::{Balancer, Picker, ReplicaSpec, ReplicaStats, Strategy, Traffic};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; only a count is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const STRATEGIES: [Strategy; 4] = [
    Strategy::LeastLatency,
    Strategy::RoundRobin,
    Strategy::Weighted,
    Strategy::Random,
];

/// `n` replicas with latency samples and load; every fourth one ejected.
fn fleet(n: usize, now: Instant) -> Vec<ReplicaStats> {
    (0..n)
        .map(|i| {
            let r = ReplicaStats::new(1 + (i % 3) as u32, false);
            for _ in 0..4 {
                r.begin();
                let took = Duration::from_micros(200 + 50 * i as u64);
                r.end(Traffic::Client, took, true, 3, now);
            }
            r.begin();
            if i % 4 == 3 {
                r.end(Traffic::Client, Duration::ZERO, false, 1, now);
            }
            r
        })
        .collect()
}

#[test]
fn picking_a_replica_allocates_nothing() {
    let now = Instant::now();
    for n in [1usize, 3, 16, 64] {
        let stats = fleet(n, now);
        let picker = Picker::seeded(0x5eed);
        for strategy in STRATEGIES {
            for exclude in [None, Some(0)] {
                let before = allocations();
                for _ in 0..1_000 {
                    std::hint::black_box(picker.pick(strategy, &stats, exclude, now));
                }
                let made = allocations() - before;
                assert_eq!(made, 0, "{strategy:?} over {n} (excluding {exclude:?})");
            }
        }
    }
}

#[test]
fn the_balancers_decisions_allocate_nothing() {
    for strategy in STRATEGIES {
        let specs = (0..8)
            .map(|i| ReplicaSpec {
                url: format!("http://127.0.0.1:{}/mcp", 9000 + i),
                weight: 1 + i % 3,
                drain: i == 5,
            })
            .collect();
        let balancer = Balancer::new("alloc", specs, strategy, 3);
        // The first decisions may set up the metric handles' state; count from the second.
        balancer.pick(None);
        let before = allocations();
        for _ in 0..1_000 {
            std::hint::black_box(balancer.bind());
            std::hint::black_box(balancer.open_on(Some(5), Some(1)));
            std::hint::black_box(balancer.retry_elsewhere(2));
            std::hint::black_box(balancer.for_request(Some(3), None, 0));
        }
        assert_eq!(allocations() - before, 0, "{strategy:?}");
    }
}
