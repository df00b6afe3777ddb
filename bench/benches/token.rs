//! Sealing a session id (every initialize) and opening one (every request for a session this
//! process does not hold), with the client parameters a typical SDK sends.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use mcp_proxy::mcp::session::token::{Claims, SessionKey};

const INIT_PARAMS: &str = r#"{"protocolVersion":"2025-11-25","capabilities":{"sampling":{},"elicitation":{"form":{}},"roots":{"listChanged":true}},"clientInfo":{"name":"mcp","version":"2.3.0"}}"#;

fn token(c: &mut Criterion) {
    let key = SessionKey::from_hex(&"5a".repeat(32)).expect("key");
    let claims = Claims {
        shard: 1,
        member: None,
        issued_at: 1_764_000_000,
        version: "2025-11-25".into(),
        init_params: Bytes::from_static(INIT_PARAMS.as_bytes()),
        bindings: vec![0, 2, 1],
        principal: Vec::new(),
    };
    let id = key.seal(&claims);
    let mut group = c.benchmark_group("session_token");
    group.bench_function("seal", |b| {
        b.iter(|| std::hint::black_box(key.seal(&claims)))
    });
    group.bench_function("open", |b| b.iter(|| std::hint::black_box(key.open(&id))));
    group.finish();
}

criterion_group!(benches, token);
criterion_main!(benches);
