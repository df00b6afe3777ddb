//! How deep a JSON message may nest, and the check that holds every message to it.
//!
//! The limit (`[limits] max_json_depth`) is one process-wide atomic: written at start and on a
//! reload, read with a relaxed load by every parse, so shards need no message to follow a reload.

use std::sync::atomic::{AtomicUsize, Ordering};

static MAX_JSON_DEPTH: AtomicUsize = AtomicUsize::new(128);

/// The JSON depth limit in force (`[limits] max_json_depth`).
pub fn max_json_depth() -> usize {
    MAX_JSON_DEPTH.load(Ordering::Relaxed)
}

/// Puts a new depth limit in force for the whole process (at start, and on reload).
pub fn set_max_json_depth(max: usize) {
    MAX_JSON_DEPTH.store(max, Ordering::Relaxed);
}

/// Whether `json` nests arrays and objects at most `max` deep. One pass over the bytes,
/// skipping strings (with their escapes), run before simd-json so a hostile `[[[[...` is refused
/// in linear time without building anything. Malformed JSON that stays shallow passes: the
/// parser reports it.
pub fn json_depth_within(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_nesting_not_strings() {
        assert!(json_depth_within(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(!json_depth_within(br#"{"a":[1,{"b":2}]}"#, 2));
        assert!(json_depth_within(br#"{"a":"[[[[[[[[\"[[["}"#, 1));
        let deep = "[".repeat(100_000);
        assert!(!json_depth_within(deep.as_bytes(), 128));
        assert!(json_depth_within(b"", 1));
    }
}
