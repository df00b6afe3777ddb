//! Reading a JSON-RPC message as the proxy does for every POST: parse in place, then classify.
//!
//! The copy into a fresh buffer (simd-json parses in place, so every iteration needs pristine
//! bytes) happens in the batch setup and is not timed.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mcp_bench::{large_result, SMALL_REQUEST, TOOLS_CALL};
use mcp_proxy::protocol::jsonrpc::{classify, parse};

fn read_messages(c: &mut Criterion) {
    let large = large_result(10 * 1024);
    let mut group = c.benchmark_group("jsonrpc_parse_classify");
    for (name, msg) in [
        ("small_request", SMALL_REQUEST),
        ("tools_call_args", TOOLS_CALL),
        ("result_10kb", large.as_str()),
    ] {
        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || msg.as_bytes().to_vec(),
                |buf| {
                    let value = parse(buf).expect("fixture parses");
                    let kind = classify(&value).expect("fixture is JSON-RPC");
                    std::hint::black_box(&kind);
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, read_messages);
criterion_main!(benches);
