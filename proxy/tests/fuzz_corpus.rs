//! Stable-Rust smoke run of the fuzz targets: every committed seed (fuzz/seeds/) and every
//! regression input (fuzz/regressions/) goes through the same entry points as `cargo fuzz`.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).expect("read corpus file");
            run(&data);
            count += 1;
        }
    }
    assert!(count > 0, "no seeds for {target}");
}

#[test]
fn http_request_corpus() {
    replay("http_request", mcp_proxy::fuzzing::http_request);
}

#[test]
fn jsonrpc_corpus() {
    replay("jsonrpc", mcp_proxy::fuzzing::jsonrpc);
}

#[test]
fn session_token_corpus() {
    replay("session_token", mcp_proxy::fuzzing::session_token);
}

#[test]
fn forwarded_meaning_corpus() {
    replay("forwarded_meaning", mcp_proxy::fuzzing::forwarded_meaning);
}
