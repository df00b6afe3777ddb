//! Finding a member name that appears twice in one JSON object.
//!
//! JSON leaves a repeated name's meaning open (RFC 8259 §4: names SHOULD be unique): simd-json's
//! tree keeps both members of a small object, and its lookups see the first, while JavaScript's
//! `JSON.parse`, Python's `json` and serde keep the last. A message with one would be checked by
//! the proxy with one meaning and acted on by its server with another (a policy that allows the
//! first `params.name`, a server that runs the second), so the proxy refuses every message that
//! has one, at any depth, before it reads anything in it.
//!
//! The check runs on simd-json's tape, the flat list of a document's nodes that its tree is
//! built from (the tree of a large object has already dropped all but one member of a name).
//! Names are compared as decoded (`"na\u006de"` is `"name"`): the tape holds strings after
//! unescaping. Small objects (nearly all of them) are checked pairwise, in place; larger ones by
//! their names sorted.

use simd_json::Node;

/// Objects with at most this many members are checked pairwise, without a sort.
const PAIRWISE_AT_MOST: usize = 16;

/// The first name found twice in one object of a document's tape, at any depth.
pub fn in_tape<'t>(nodes: &[Node<'t>]) -> Option<&'t str> {
    let mut sorted: Vec<&'t str> = Vec::new();
    for (at, node) in nodes.iter().enumerate() {
        let Node::Object { len, .. } = *node else {
            continue;
        };
        // Nested objects are reached by the outer loop in their turn.
        let members = Members {
            nodes,
            next: at + 1,
            left: len,
        };
        if len <= PAIRWISE_AT_MOST {
            for (i, key) in members.clone().enumerate() {
                if members.clone().take(i).any(|earlier| earlier == key) {
                    return Some(key);
                }
            }
        } else {
            sorted.clear();
            sorted.extend(members);
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Some(pair[0]);
            }
        }
    }
    None
}

/// The member names of one object on a tape, in order.
#[derive(Clone)]
struct Members<'n, 't> {
    nodes: &'n [Node<'t>],
    /// Where the next member's name is.
    next: usize,
    left: usize,
}

impl<'t> Iterator for Members<'_, 't> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let Some(Node::String(key)) = self.nodes.get(self.next) else {
            // A tape simd-json built always has a name here; stop rather than misread one.
            self.left = 0;
            return None;
        };
        // The value follows its name: one node, or a container's header and all it holds.
        let size = match self.nodes.get(self.next + 1) {
            Some(Node::Object { count, .. } | Node::Array { count, .. }) => count + 1,
            _ => 1,
        };
        self.next += 1 + size;
        Some(*key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_repeated(text: &str) -> Option<String> {
        let mut buf = text.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut buf).expect("test JSON");
        in_tape(&tape.0).map(str::to_owned)
    }

    #[test]
    fn finds_a_repeated_name_at_any_depth_and_however_it_is_written() {
        let many: String = (0..40).map(|i| format!("\"k{i}\":{i},")).collect();
        for (text, name) in [
            (r#"{"a":1,"a":2}"#, "a"),
            (r#"{"params":{"name":"x","name":"y"}}"#, "name"),
            (r#"{"params":{},"id":1,"params":{}}"#, "params"),
            (r#"{"x":[1,{"deep":{"k":1,"k":[2]}}]}"#, "k"),
            (r#"{"name":"x","na\u006de":"y"}"#, "name"),
            (r#"{"\u00e9":1,"é":2}"#, "é"),
            (&format!("{{{many}\"k7\":0}}"), "k7"),
            (&format!("{{\"o\":{{{many}\"k39\":0}},\"z\":1}}"), "k39"),
        ] {
            assert_eq!(first_repeated(text).as_deref(), Some(name), "{text}");
        }
    }

    #[test]
    fn passes_names_that_differ_even_where_values_repeat() {
        let many: String = (0..40)
            .map(|i| format!("\"k{i}\":{{\"a\":{i}}},"))
            .collect();
        for text in [
            r#"{}"#,
            r#"[]"#,
            r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#,
            r#"{"name":"x","Name":"y","name ":"z","nam":"w"}"#,
            r#"{"a":"\"a\":1","b":{"c":[],"d":{}},"e":[[],{}],"f":null}"#,
            &format!("{{{many}\"last\":[{{}},{{\"x\":1,\"y\":2}}]}}"),
        ] {
            assert_eq!(first_repeated(text), None, "{text}");
        }
    }
}
