//! Tool search (`proxy__search_tools`, `mcpctl tools search`): one plain-language need ranked
//! over 1,000 and 10,000 tools (copies of the real catalog in bench/semantic/catalog.json under
//! other server names), BM25 alone and BM25 with the static embedding; and building the index,
//! the work done off the shards when the catalog changes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use toolrank::{Index, Mode, Tool};

fn real_tools() -> Vec<Tool> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/semantic/catalog.json"
    ))
    .expect("bench/semantic/catalog.json");
    let catalog: serde_json::Value = serde_json::from_str(&text).expect("catalog.json is JSON");
    catalog["tools"]
        .as_array()
        .expect("catalog.json has tools")
        .iter()
        .map(|e| mcp_bench::tool_of(&e["tool"], e["server"].as_str().unwrap_or(""), &e["tags"]))
        .collect()
}

fn search(c: &mut Criterion) {
    let real = real_tools();
    let needs = [
        "show what is inside a folder",
        "give me a small sample picture",
        "history of recent commits",
    ];
    let mut group = c.benchmark_group("tool_search");
    for count in [1_000usize, 10_000] {
        let index = Index::build(&mcp_bench::many_tools(&real, count));
        for (label, mode) in [("hybrid", Mode::Hybrid), ("bm25", Mode::Lexical)] {
            group.bench_with_input(BenchmarkId::new(label, count), &index, |b, index| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % needs.len();
                    std::hint::black_box(index.search(needs[i], 5, mode, |_| true))
                })
            });
        }
    }
    group.finish();
    let mut group = c.benchmark_group("tool_index_build");
    group.sample_size(10);
    let tools = mcp_bench::many_tools(&real, 10_000);
    group.bench_function("10000", |b| b.iter(|| Index::build(&tools)));
    group.finish();
}

criterion_group!(benches, search);
criterion_main!(benches);
