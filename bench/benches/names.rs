//! Exposed tool name -> (server, original name), as every `tools/call` through the proxy does.
//! The same lookups at 10, 1,000 and 10,000 tools show whether the cost stays flat.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mcp_bench::catalog;
use mcp_proxy::protocol::names::NameTable;

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("name_lookup");
    for tools in [10usize, 1_000, 10_000] {
        let items = catalog(tools);
        let table = NameTable::build(items.iter().map(|(s, p, n)| (*s, p.as_str(), n.as_str())))
            .expect("catalog has no collisions");
        // Look names up in a scattered order, so the bench is not one hot cache line.
        let exposed: Vec<String> = items
            .iter()
            .step_by(7.min(tools))
            .filter_map(|(s, _, n)| table.exposed(*s, n).map(str::to_owned))
            .collect();
        group.bench_with_input(BenchmarkId::new("hit", tools), &exposed, |b, names| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % names.len();
                std::hint::black_box(table.lookup(&names[i]))
            })
        });
        group.bench_with_input(BenchmarkId::new("miss", tools), &(), |b, _| {
            b.iter(|| std::hint::black_box(table.lookup("server3__no_such_tool")))
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
