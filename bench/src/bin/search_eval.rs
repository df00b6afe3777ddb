//! Tool-search evaluation: top-1 and top-3 accuracy of BM25 alone and of the hybrid ranking
//! (BM25 with the static embedding) over bench/semantic/needs.json, in one run, then the
//! query latency and memory per tool at 10,000 tools.
//!
//! `cargo run --release -p mcp-bench --bin search_eval [-- --misses] [--needs FILE]`
//! (FILE in the same form, `tools` or a single `tool` per need: tests/data/search_needs.json
//! holds needs worded like the tools, which BM25 alone ranks right).

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;
use toolrank::{Index, Mode, Tool};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let show_misses = args.iter().any(|a| a == "--misses");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/semantic");
    let needs_path = args
        .iter()
        .position(|a| a == "--needs")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| format!("{dir}/needs.json"));
    let catalog: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/catalog.json")).context("catalog.json")?,
    )?;
    let needs: Value = serde_json::from_str(
        &std::fs::read_to_string(&needs_path).with_context(|| needs_path.clone())?,
    )?;
    let tools: Vec<Tool> = catalog["tools"]
        .as_array()
        .context("catalog.json: no tools")?
        .iter()
        .map(|e| mcp_bench::tool_of(&e["tool"], e["server"].as_str().unwrap_or(""), &e["tags"]))
        .collect();
    let index = Index::build(&tools);
    let needs = needs["needs"].as_array().context("needs.json: no needs")?;
    println!("{} needs over {} tools", needs.len(), tools.len());
    println!("{:<8} {:>6} {:>6}", "ranking", "top-1", "top-3");
    for (label, mode) in [("bm25", Mode::Lexical), ("hybrid", Mode::Hybrid)] {
        let (mut top1, mut top3) = (0, 0);
        let mut misses = Vec::new();
        for n in needs {
            let need = n["need"].as_str().unwrap_or("");
            let mut right: Vec<&str> = n["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            right.extend(n["tool"].as_str());
            let hits = index.search(need, 3, mode, |_| true);
            let names: Vec<&str> = hits.iter().map(|h| tools[h.tool].name.as_str()).collect();
            if names.first().is_some_and(|t| right.contains(t)) {
                top1 += 1;
            } else {
                misses.push(format!("  {need:?}: wanted {right:?}, got {names:?}"));
            }
            if names.iter().any(|t| right.contains(t)) {
                top3 += 1;
            }
        }
        let pct = |x: usize| 100.0 * x as f64 / needs.len() as f64;
        println!("{label:<8} {:>5.1}% {:>5.1}%", pct(top1), pct(top3));
        if show_misses {
            misses.iter().for_each(|m| println!("{m}"));
        }
    }
    latency(&tools)?;
    Ok(())
}

/// Build time, memory per tool and query latency percentiles over 10,000 tools.
fn latency(tools: &[Tool]) -> Result<()> {
    let big = mcp_bench::many_tools(tools, 10_000);
    let started = Instant::now();
    let index = Index::build(&big);
    let built = started.elapsed();
    let queries = [
        "show what is inside a folder",
        "give me a small sample picture",
        "what time is it in Tokyo",
        "history of recent commits",
        "forget a person completely",
    ];
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    for round in 0..200 {
        let q = queries[round % queries.len()];
        let t = Instant::now();
        let hits = index.search(q, 5, Mode::Hybrid, |_| true);
        hist.record(t.elapsed().as_micros() as u64)?;
        std::hint::black_box(hits);
    }
    println!(
        "10000 tools: built in {:.0} ms, index {} bytes per tool; query p50 {} us, p99 {} us, max {} us",
        built.as_secs_f64() * 1000.0,
        index.memory_bytes() / big.len(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    Ok(())
}
