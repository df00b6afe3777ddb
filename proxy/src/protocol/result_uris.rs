//! Resource URIs inside results: every URI a server hands out must be one the client can read
//! back through the proxy, so those naming the server's own resources get its prefix (the
//! same `{prefix}+{uri}` form as `resources/list`).
//!
//! Where they are (server/resources.mdx, server/tools.mdx, server/prompts.mdx):
//! - `resources/read`: `result.contents[].uri`;
//! - `tools/call`: `result.content[]` blocks of type `resource_link` (`uri`) and `resource`
//!   (`resource.uri`);
//! - `prompts/get`: `result.messages[].content`, the same two block types (a message's content
//!   is one block, or an array of them).
//!
//! What a client sends is left alone: URIs inside tool arguments or `_meta` go to the server as
//! the client wrote them (the proxy cannot tell a URI argument from any other string, and a
//! server's own URI in an argument means what it means to that server). A client that passes a
//! URI it got from the proxy into an argument passes the prefixed form.

use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::names;

/// Whether `message` may hold a URI to map: a byte search for the member name, so answers
/// without one keep the tree-less path.
pub fn may_hold_uris(message: &[u8]) -> bool {
    const NEEDLE: &[u8] = b"\"uri\"";
    message.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// Prefixes every resource URI in a response's `result` (see the module docs) with `prefix`;
/// an empty prefix changes nothing.
pub fn prefix_result_uris(msg: &mut Value<'_>, prefix: &str) {
    if prefix.is_empty() {
        return;
    }
    let Some(result) = msg.get_mut("result") else {
        return;
    };
    if let Some(contents) = result.get_mut("contents").and_then(|c| c.as_array_mut()) {
        for item in contents {
            prefix_member(item, "uri", prefix);
        }
    }
    if let Some(content) = result.get_mut("content").and_then(|c| c.as_array_mut()) {
        for block in content {
            prefix_block(block, prefix);
        }
    }
    if let Some(messages) = result.get_mut("messages").and_then(|m| m.as_array_mut()) {
        for message in messages {
            match message.get_mut("content") {
                Some(Value::Array(blocks)) => {
                    for block in blocks.iter_mut() {
                        prefix_block(block, prefix);
                    }
                }
                Some(block) => prefix_block(block, prefix),
                None => {}
            }
        }
    }
}

/// A content block: a `resource_link`'s `uri`, an embedded `resource`'s `resource.uri`.
fn prefix_block(block: &mut Value<'_>, prefix: &str) {
    match block.get_str("type") {
        Some("resource_link") => prefix_member(block, "uri", prefix),
        Some("resource") => {
            if let Some(resource) = block.get_mut("resource") {
                prefix_member(resource, "uri", prefix);
            }
        }
        _ => {}
    }
}

fn prefix_member(obj: &mut Value<'_>, key: &'static str, prefix: &str) {
    let Some(uri) = obj.get_str(key) else {
        return;
    };
    let mapped = names::prefix_uri(prefix, uri);
    if let Some(o) = obj.as_object_mut() {
        o.insert(key.into(), Value::from(mapped));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::jsonrpc;

    fn mapped(text: &str, prefix: &str) -> String {
        let mut buf = text.as_bytes().to_vec();
        let mut msg = jsonrpc::parse(&mut buf).unwrap();
        prefix_result_uris(&mut msg, prefix);
        msg.encode()
    }

    #[test]
    fn read_contents_are_prefixed() {
        let out = mapped(
            r#"{"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"demo://a","text":"x"}]}}"#,
            "ev",
        );
        assert!(out.contains(r#""uri":"ev+demo://a""#), "{out}");
    }

    #[test]
    fn links_and_embedded_resources_are_prefixed_in_tool_results_and_prompts() {
        let tool = mapped(
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"uri"},{"type":"resource_link","uri":"demo://l","name":"l"},{"type":"resource","resource":{"uri":"demo://e","text":"t"}}],"structuredContent":{"uri":"demo://s"}}}"#,
            "ev",
        );
        assert!(tool.contains(r#""uri":"ev+demo://l""#), "{tool}");
        assert!(tool.contains(r#""uri":"ev+demo://e""#), "{tool}");
        assert!(
            tool.contains(r#""uri":"demo://s""#),
            "structured content is the tool's own data: {tool}"
        );
        let prompt = mapped(
            r#"{"jsonrpc":"2.0","id":1,"result":{"messages":[{"role":"user","content":{"type":"resource","resource":{"uri":"demo://p","text":"t"}}},{"role":"user","content":[{"type":"resource_link","uri":"demo://q","name":"q"}]}]}}"#,
            "ev",
        );
        assert!(prompt.contains(r#""uri":"ev+demo://p""#), "{prompt}");
        assert!(prompt.contains(r#""uri":"ev+demo://q""#), "{prompt}");
    }

    #[test]
    fn an_empty_prefix_and_requests_change_nothing() {
        let text = r#"{"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"demo://a"}]}}"#;
        assert_eq!(mapped(text, ""), text);
        let request = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"uri":"demo://a"}}}"#;
        assert_eq!(mapped(request, "ev"), request);
        assert!(may_hold_uris(text.as_bytes()));
        assert!(!may_hold_uris(br#"{"result":{"content":[]}}"#));
    }
}
