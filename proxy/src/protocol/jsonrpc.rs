//! JSON-RPC 2.0 messages: parse in place with simd-json, classify, and build replies.
//!
//! Parsing borrows from the receive buffer, so strings without escapes cost no allocation.
//! Replies the proxy writes itself (errors, local results) are assembled as bytes directly.

use bytes::Bytes;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

/// Standard and MCP error codes the proxy answers with.
pub mod code {
    /// The body is not JSON.
    pub const PARSE_ERROR: i32 = -32700;
    /// JSON, but not a JSON-RPC 2.0 message.
    pub const INVALID_REQUEST: i32 = -32600;
    /// No such method on this server.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Unknown tool/prompt/resource, or malformed params.
    pub const INVALID_PARAMS: i32 = -32602;
    /// The proxy itself failed.
    pub const INTERNAL_ERROR: i32 = -32603;
    /// An upstream server could not be reached or did not answer (implementation-defined range).
    pub const UPSTREAM_UNAVAILABLE: i32 = -32000;
    /// An upstream answered with something the proxy could not relay.
    pub const UPSTREAM_PROTOCOL: i32 = -32001;
}

/// A JSON-RPC request id: a string or an integer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Id {
    /// Integer ids, the common case.
    Num(i64),
    /// String ids.
    Str(String),
}

impl Id {
    /// Reads an id from a parsed value; `None` for null, floats and other shapes.
    pub fn from_value(v: &Value<'_>) -> Option<Id> {
        if let Some(s) = v.as_str() {
            Some(Id::Str(s.to_owned()))
        } else if let Some(n) = v.as_i64() {
            Some(Id::Num(n))
        } else {
            v.as_u64().and_then(|n| i64::try_from(n).ok()).map(Id::Num)
        }
    }

    /// The id as a JSON value, for splicing into a message being rewritten.
    pub fn to_value(&self) -> Value<'static> {
        match self {
            Id::Num(n) => Value::from(*n),
            Id::Str(s) => Value::from(s.clone()),
        }
    }

    /// Appends the id's JSON text.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Id::Num(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Id::Str(s) => write_json_string(out, s),
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Num(n) => write!(f, "{n}"),
            Id::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Why a body could not be taken as a JSON-RPC message, with the code to answer.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Not JSON at all.
    #[error("parse error: {0}")]
    Parse(String),
    /// JSON, but not a valid JSON-RPC 2.0 message.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// Arrays and objects nested deeper than the limit (checked before parsing).
    #[error("invalid request: JSON nested deeper than {0} levels; flatten the message or raise [limits] max_json_depth")]
    TooDeep(usize),
    /// One object names a member twice (the name, cut to 64 characters).
    #[error(
        "invalid request: the member name {0:?} appears twice in one object; send each name once"
    )]
    DuplicateKey(String),
}

impl RpcError {
    /// The JSON-RPC error code for this failure.
    pub fn code(&self) -> i32 {
        match self {
            RpcError::Parse(_) => code::PARSE_ERROR,
            // A repeated name is still JSON by the grammar (RFC 8259 leaves its meaning open),
            // so not -32700; it is no Request object with one meaning, so -32600.
            RpcError::Invalid(_) | RpcError::TooDeep(_) | RpcError::DuplicateKey(_) => {
                code::INVALID_REQUEST
            }
        }
    }
}

/// The messages of a body that holds several JSON texts one per line (some servers stream a
/// reply that way under `application/json` instead of SSE); blank lines are skipped.
pub fn json_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty())
}

/// What a message is, borrowed from its parsed form.
#[derive(Debug)]
pub enum Kind<'v> {
    /// Has an id and a method: expects an answer.
    Request {
        /// The sender's id.
        id: Id,
        /// The method name.
        method: &'v str,
    },
    /// A method without an id: no answer.
    Notification {
        /// The method name.
        method: &'v str,
    },
    /// A result or an error for an earlier request.
    Response {
        /// The id of the request answered; `None` for errors about unparseable requests.
        id: Option<Id>,
    },
}

/// Parses a body in place. Batches (arrays) are refused: they left the protocol in 2025-06-18.
/// So is an object that names a member twice, at any depth: the proxy would read the first and
/// the server behind it the last (see `duplicate_keys`), so what was checked would not be what
/// runs. Every message read whole, from a client or a server, comes through here.
pub fn parse(buf: &mut [u8]) -> Result<Value<'_>, RpcError> {
    let max = crate::protocol::depth::max_json_depth();
    if !crate::protocol::depth::json_depth_within(buf, max) {
        return Err(RpcError::TooDeep(max));
    }
    // The tape first, checked, then the tree from it: what `to_borrowed_value` does in one call,
    // with the check between (the tree of a large object keeps one member of a name).
    let tape = simd_json::to_tape(buf).map_err(|e| RpcError::Parse(e.to_string()))?;
    if let Some(name) = super::duplicate_keys::in_tape(&tape.0) {
        return Err(RpcError::DuplicateKey(name.chars().take(64).collect()));
    }
    let value = simd_json::value::lazy::Value::from_tape(tape.as_value()).into_value();
    if value.is_array() {
        return Err(RpcError::Invalid(
            "batch requests are not supported; send one message per POST",
        ));
    }
    if !value.is_object() {
        return Err(RpcError::Invalid("a JSON-RPC message must be an object"));
    }
    Ok(value)
}

/// Classifies a parsed message, enforcing the JSON-RPC 2.0 shape.
pub fn classify<'v>(msg: &'v Value<'v>) -> Result<Kind<'v>, RpcError> {
    if msg.get_str("jsonrpc") != Some("2.0") {
        return Err(RpcError::Invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let id = match msg.get("id") {
        None => None,
        Some(v) if v.is_null() => None,
        Some(v) => Some(
            Id::from_value(v).ok_or(RpcError::Invalid("\"id\" must be a string or an integer"))?,
        ),
    };
    match msg.get("method") {
        Some(m) => {
            let method = m
                .as_str()
                .ok_or(RpcError::Invalid("\"method\" must be a string"))?;
            if let Some(p) = msg.get("params") {
                if !p.is_object() && !p.is_array() {
                    return Err(RpcError::Invalid("\"params\" must be an object"));
                }
            }
            Ok(match id {
                Some(id) => Kind::Request { id, method },
                None => Kind::Notification { method },
            })
        }
        None if msg.contains_key("result") || msg.contains_key("error") => {
            Ok(Kind::Response { id })
        }
        None => Err(RpcError::Invalid(
            "a message needs \"method\", \"result\" or \"error\"",
        )),
    }
}

/// Sets member `key` of an object value (replacing one of that name); a no-op on anything
/// else. How messages are rewritten in place before they are re-serialised.
pub fn set_member<'v>(obj: &mut Value<'v>, key: &'static str, value: Value<'v>) {
    if let Some(map) = obj.as_object_mut() {
        map.insert(key.into(), value);
    }
}

/// Serializes a (possibly rewritten) message.
pub fn to_bytes(msg: &Value<'_>) -> Bytes {
    Bytes::from(msg.encode().into_bytes())
}

/// An error response. `id` is `None` when the request's id could not be read.
pub fn error_body(id: Option<&Id>, code: i32, message: &str) -> Bytes {
    error_with(id, code, message, None)
}

/// An error response with a `data` member (already JSON).
pub fn error_with_data(id: Option<&Id>, code: i32, message: &str, data_json: &str) -> Bytes {
    error_with(id, code, message, Some(data_json))
}

fn error_with(id: Option<&Id>, code: i32, message: &str, data_json: Option<&str>) -> Bytes {
    let mut out = Vec::with_capacity(64 + message.len() + data_json.map_or(0, str::len));
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    match id {
        Some(id) => id.write_json(&mut out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"error\":{\"code\":");
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(b",\"message\":");
    write_json_string(&mut out, message);
    if let Some(data) = data_json {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data.as_bytes());
    }
    out.extend_from_slice(b"}}");
    Bytes::from(out)
}

/// A success response around an already-serialized result.
pub fn result_body(id: &Id, result_json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(40 + result_json.len());
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    id.write_json(&mut out);
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(result_json);
    out.push(b'}');
    Bytes::from(out)
}

/// A notification around already-serialized params (or none).
pub fn notification_body(method: &str, params_json: Option<&[u8]>) -> Bytes {
    let mut out = Vec::with_capacity(48 + method.len());
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":");
    write_json_string(&mut out, method);
    if let Some(p) = params_json {
        out.extend_from_slice(b",\"params\":");
        out.extend_from_slice(p);
    }
    out.push(b'}');
    Bytes::from(out)
}

/// A request with a proxy-chosen id around already-serialized params.
pub fn request_body(id: &Id, method: &str, params_json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(56 + method.len() + params_json.len());
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    id.write_json(&mut out);
    out.extend_from_slice(b",\"method\":");
    write_json_string(&mut out, method);
    out.extend_from_slice(b",\"params\":");
    out.extend_from_slice(params_json);
    out.push(b'}');
    Bytes::from(out)
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(text: &str) -> Result<String, RpcError> {
        let mut buf = text.as_bytes().to_vec();
        let v = parse(&mut buf)?;
        Ok(format!("{:?}", classify(&v)?))
    }

    #[test]
    fn classifies_the_three_shapes() {
        assert!(kind_of(r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#)
            .unwrap()
            .starts_with("Request"));
        assert!(
            kind_of(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
                .unwrap()
                .starts_with("Notification")
        );
        assert!(kind_of(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#)
            .unwrap()
            .starts_with("Response"));
    }

    #[test]
    fn refuses_what_is_not_json_rpc() {
        assert_eq!(kind_of("{nope").unwrap_err().code(), code::PARSE_ERROR);
        assert_eq!(
            kind_of(r#"{"foo":1}"#).unwrap_err().code(),
            code::INVALID_REQUEST
        );
        assert_eq!(
            kind_of(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#)
                .unwrap_err()
                .code(),
            code::INVALID_REQUEST
        );
        assert_eq!(
            kind_of(r#"[{"jsonrpc":"2.0","id":1,"method":"x"}]"#)
                .unwrap_err()
                .code(),
            code::INVALID_REQUEST
        );
        assert_eq!(
            kind_of(r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#)
                .unwrap_err()
                .code(),
            code::INVALID_REQUEST
        );
        assert_eq!(
            kind_of(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#)
                .unwrap_err()
                .code(),
            code::INVALID_REQUEST
        );
    }

    #[test]
    fn refuses_a_member_named_twice_at_any_depth() {
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"secret__echo","name":"get-env"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","na\u006de":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":[{"k":1,"k":2}]}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"content":[{"type":"text","text":"x"}]}}"#,
        ] {
            let e = kind_of(text).unwrap_err();
            assert!(matches!(e, RpcError::DuplicateKey(_)), "{text}: {e}");
            assert_eq!(e.code(), code::INVALID_REQUEST, "{text}");
        }
        let e =
            kind_of(r#"{"jsonrpc":"2.0","method":"x","params":{"a":{"n\u0061me":1,"name":2}}}"#)
                .unwrap_err();
        assert!(e.to_string().contains("\"name\" appears twice"), "{e}");
        // Over 32 members, the tree simd-json builds keeps one of a name: the tape still tells.
        let padding: String = (0..40).map(|i| format!(",\"k{i}\":{i}")).collect();
        let large = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a"{padding},"name":"b"}}}}"#
        );
        assert!(matches!(kind_of(&large), Err(RpcError::DuplicateKey(_))));
        // The same name in different objects is no repetition.
        assert!(kind_of(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"name":"b","x":{"name":"c"}}}}"#
        )
        .is_ok());
    }

    #[test]
    fn built_bodies_parse_back() {
        let mut e = error_body(
            Some(&Id::Str("q\"x".into())),
            code::INVALID_PARAMS,
            "unknown tool \"a\nb\"",
        )
        .to_vec();
        let v = parse(&mut e).unwrap();
        assert_eq!(v.get("id").and_then(|i| i.as_str()), Some("q\"x"));
        assert_eq!(v.get("error").and_then(|e| e.get_i64("code")), Some(-32602));
        let mut r = result_body(&Id::Num(3), b"{\"ok\":true}").to_vec();
        let v = parse(&mut r).unwrap();
        assert!(matches!(
            classify(&v).unwrap(),
            Kind::Response {
                id: Some(Id::Num(3))
            }
        ));
        let mut n = notification_body("notifications/tools/list_changed", None).to_vec();
        assert!(parse(&mut n).is_ok());
    }
}
