//! Picking a replica, as every new session binding (or stateless request) does, for each
//! strategy over 3 and 16 replicas with live statistics.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mcp_proxy::balance::{Picker, ReplicaStats, Strategy, Traffic};

fn fleet(n: usize) -> Vec<ReplicaStats> {
    let now = Instant::now();
    (0..n)
        .map(|i| {
            let r = ReplicaStats::new(1 + (i % 3) as u32, false);
            for _ in 0..8 {
                r.begin();
                r.end(
                    Traffic::Client,
                    Duration::from_micros(200 + 50 * i as u64),
                    true,
                    3,
                    now,
                );
            }
            r
        })
        .collect()
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer_pick");
    for replicas in [3usize, 16] {
        let stats = fleet(replicas);
        let picker = Picker::seeded(0x5eed);
        for (name, strategy) in [
            ("least_latency", Strategy::LeastLatency),
            ("round_robin", Strategy::RoundRobin),
            ("weighted", Strategy::Weighted),
            ("random", Strategy::Random),
        ] {
            group.bench_with_input(BenchmarkId::new(name, replicas), &stats, |b, stats| {
                let now = Instant::now();
                b.iter(|| std::hint::black_box(picker.pick(strategy, stats, None, now)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
