//! Fuzz target: see `mcp_proxy::fuzzing::forwarded_meaning` for what is fed where and what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mcp_proxy::fuzzing::forwarded_meaning(data);
});
