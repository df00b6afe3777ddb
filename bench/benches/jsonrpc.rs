//! Reading a JSON-RPC message as the proxy does for every POST: parse in place, then classify.
//!
//! The copy into a fresh buffer (simd-json parses in place, so every iteration needs pristine
//! bytes) happens in the batch setup and is not timed.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mcp_bench::{large_result, SMALL_REQUEST, TOOLS_CALL};
use mcp_proxy::protocol::jsonrpc::{self, classify, parse, Id};
use mcp_proxy::protocol::splice;
use simd_json::prelude::*;

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

/// Giving an answer back its client id: the full parse and re-encode the relay used to do for
/// every answer, against the splice into its bytes (with the whole-message grammar check) that it
/// does now.
fn answer_id(c: &mut Criterion) {
    let small = jsonrpc::result_body(
        &Id::Num(1042),
        br#"{"content":[{"type":"text","text":"hello"}]}"#,
    );
    let large = large_result(10 * 1024);
    let client = Id::Str("client-7".into());
    let mut group = c.benchmark_group("answer_id");
    for (name, msg) in [("small", &small[..]), ("result_10kb", large.as_bytes())] {
        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_function(format!("reencode/{name}"), |b| {
            b.iter(|| {
                let mut buf = msg.to_vec();
                let mut value = parse(&mut buf).expect("fixture parses");
                jsonrpc::set_member(&mut value, "id", client.to_value());
                std::hint::black_box(jsonrpc::to_bytes(&value))
            })
        });
        group.bench_function(format!("splice/{name}"), |b| {
            b.iter(|| {
                std::hint::black_box(
                    splice::answer(msg, &Id::Num(1042), &client).expect("well-formed answer"),
                )
            })
        });
    }
    group.finish();
}

/// Making a client's `tools/call` the server's: its id swapped for the proxy's and its tool name
/// for the server's own. The full parse, rewrite and re-encode the proxy did for every request,
/// against the read and splice in its bytes (grammar check included) that it does now.
fn request_rewrite(c: &mut Criterion) {
    let upstream_id = Id::Num(88);
    let mut group = c.benchmark_group("request_rewrite");
    group.throughput(Throughput::Bytes(TOOLS_CALL.len() as u64));
    group.bench_function("reencode/tools_call_args", |b| {
        b.iter(|| {
            let mut buf = TOOLS_CALL.as_bytes().to_vec();
            let mut value = parse(&mut buf).expect("fixture parses");
            let id = match classify(&value).expect("fixture is JSON-RPC") {
                jsonrpc::Kind::Request { id, .. } => id,
                _ => unreachable!("fixture is a request"),
            };
            let params = value.get_mut("params").expect("fixture has params");
            jsonrpc::set_member(params, "name", "search_issues".into());
            jsonrpc::set_member(&mut value, "id", upstream_id.to_value());
            std::hint::black_box((id, jsonrpc::to_bytes(&value)))
        })
    });
    group.bench_function("splice/tools_call_args", |b| {
        b.iter(|| {
            let msg = TOOLS_CALL.as_bytes();
            let request = splice::request(msg, 64, |m| m == "tools/call").expect("plain request");
            let (span, _) = request.param_str(msg, "name").expect("params.name");
            let out = bytes::Bytes::from(request.rewrite(msg, &upstream_id, span, "search_issues"));
            std::hint::black_box((request.id, out))
        })
    });
    group.finish();
}

criterion_group!(benches, read_messages, answer_id, request_rewrite);
criterion_main!(benches);
