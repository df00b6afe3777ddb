//! What a 2026-07-28 client is answered: results in the era's shape, the era's errors, and
//! the HTTP status each error calls for (streamable-http.mdx, basic/index.mdx).

use bytes::Bytes;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::jsonrpc::{self, code, Id};
use super::stateless::code as era_code;

/// An `UnsupportedProtocolVersionError` naming every version served here.
pub fn unsupported_version(id: Option<&Id>, requested: &str, supported: &[&str]) -> Bytes {
    let mut data = String::from(r#"{"supported":["#);
    for (i, v) in supported.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        data.push('"');
        data.push_str(v);
        data.push('"');
    }
    data.push_str(r#"],"requested":"#);
    let mut requested_json = Vec::new();
    jsonrpc::write_json_string(&mut requested_json, requested);
    data.push_str(&String::from_utf8_lossy(&requested_json));
    data.push('}');
    jsonrpc::error_with_data(
        id,
        era_code::UNSUPPORTED_PROTOCOL_VERSION,
        &format!(
            "Unsupported protocol version {requested}; supported: {}",
            supported.join(", ")
        ),
        &data,
    )
}

/// `_meta` key of a result naming the server that produced it (basic/index.mdx, "Per-response
/// protocol fields").
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// A response dressed for a stateless-era client, and the HTTP status it goes with.
pub struct Dressed {
    /// The response.
    pub body: Bytes,
    /// The HTTP status the era asks for (see [`http_status`]).
    pub status: u16,
}

/// Rewrites a stateful-era response for a stateless-era client: results gain
/// `resultType: "complete"`, list results gain the required cache hints, every result names
/// `server_info` (the JSON of the proxy's `Implementation`) in `_meta` — the client talks to
/// the proxy, whatever answered behind it — and the stateful "resource not found" code
/// (-32002) becomes -32602; `id`, when given, replaces the id. Bodies that do not parse pass
/// unchanged (status 200).
pub fn dress(method: &str, id: Option<&Id>, body: Bytes, server_info: &str) -> Dressed {
    let mut buf = body.to_vec();
    let mut info_buf = server_info.as_bytes().to_vec();
    let Ok(mut msg) = jsonrpc::parse(&mut buf) else {
        return Dressed { body, status: 200 };
    };
    let info = simd_json::to_borrowed_value(&mut info_buf).ok();
    if let (Some(id), Some(obj)) = (id, msg.as_object_mut()) {
        obj.insert("id".into(), id.to_value());
    }
    let mut status = 200;
    if let Some(result) = msg.get_mut("result").and_then(|r| r.as_object_mut()) {
        if !result.contains_key("resultType") {
            result.insert("resultType".into(), Value::from("complete"));
        }
        if cacheable(method) {
            if !result.contains_key("ttlMs") {
                result.insert("ttlMs".into(), Value::from(0_u64));
            }
            if !result.contains_key("cacheScope") {
                // Lists are filtered per client, so a shared cache must not keep them.
                result.insert("cacheScope".into(), Value::from("private"));
            }
        }
        if let Some(info) = info {
            let meta = result
                .entry("_meta".into())
                .or_insert_with(|| Value::from(simd_json::borrowed::Object::new()));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert(META_SERVER_INFO.into(), info);
            }
        }
    } else if let Some(error) = msg.get_mut("error").and_then(|e| e.as_object_mut()) {
        let mut code = error.get("code").and_then(|c| c.as_i64());
        if code == Some(-32002) {
            error.insert("code".into(), Value::from(-32602_i64));
            code = Some(-32602);
        }
        status = code.map_or(200, http_status);
    }
    Dressed {
        body: jsonrpc::to_bytes(&msg),
        status,
    }
}

/// Rewrites a 2026-07-28 server's response for a stateful-era client, which must see only
/// what its own era defines: a result loses `resultType: "complete"`, the cache hints
/// (`ttlMs`, `cacheScope`) and the server's identity in
/// `_meta["io.modelcontextprotocol/serverInfo"]` (a stateful client learnt the proxy's in
/// `initialize`); an emptied `_meta` goes too. Bodies that name none of these, or do not
/// parse, pass unchanged.
pub fn undress(body: Bytes) -> Bytes {
    let named = [
        b"resultType".as_slice(),
        b"ttlMs",
        b"cacheScope",
        META_SERVER_INFO.as_bytes(),
    ]
    .iter()
    .any(|k| body.windows(k.len()).any(|w| w == *k));
    if !named {
        return body;
    }
    let mut buf = body.to_vec();
    let Ok(mut msg) = jsonrpc::parse(&mut buf) else {
        return body;
    };
    let Some(result) = msg.get_mut("result").and_then(|r| r.as_object_mut()) else {
        return body;
    };
    if result.get("resultType").and_then(|t| t.as_str()) == Some("complete") {
        result.remove("resultType");
    }
    result.remove("ttlMs");
    result.remove("cacheScope");
    let emptied = match result.get_mut("_meta").and_then(|m| m.as_object_mut()) {
        Some(meta) => {
            meta.remove(META_SERVER_INFO);
            meta.is_empty()
        }
        None => false,
    };
    if emptied {
        result.remove("_meta");
    }
    jsonrpc::to_bytes(&msg)
}

/// The HTTP status a JSON-RPC error answering a 2026-07-28 request goes with
/// (streamable-http.mdx, basic/index.mdx): 404 for a method the server does not implement,
/// 400 for a message it cannot accept (malformed, headers that disagree with the body, a
/// missing client capability, an unsupported version); any other error is the answer to a
/// well-formed request, sent with 200.
pub fn http_status(code: i64) -> u16 {
    const NOT_FOUND: i64 = code::METHOD_NOT_FOUND as i64;
    const PARSE: i64 = code::PARSE_ERROR as i64;
    const INVALID: i64 = code::INVALID_REQUEST as i64;
    const MISMATCH: i64 = era_code::HEADER_MISMATCH as i64;
    const VERSION: i64 = era_code::UNSUPPORTED_PROTOCOL_VERSION as i64;
    const MISSING_CAPABILITY: i64 = era_code::MISSING_CLIENT_CAPABILITY as i64;
    match code {
        NOT_FOUND => 404,
        PARSE | INVALID | MISMATCH | MISSING_CAPABILITY | VERSION => 400,
        _ => 200,
    }
}

fn cacheable(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// An `InputRequiredResult` around `(key, request JSON)` pairs and the proxy's state token.
pub fn input_required(id: &Id, requests: &[(String, Bytes)], state: &str) -> Bytes {
    let mut out = Vec::with_capacity(128 + requests.iter().map(|(_, r)| r.len()).sum::<usize>());
    out.extend_from_slice(br#"{"resultType":"input_required","inputRequests":{"#);
    for (i, (key, request)) in requests.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        jsonrpc::write_json_string(&mut out, key);
        out.push(b':');
        out.extend_from_slice(request);
    }
    out.extend_from_slice(br#"},"requestState":"#);
    jsonrpc::write_json_string(&mut out, state);
    out.push(b'}');
    jsonrpc::result_body(id, &out)
}

/// The `{method, params}` of a server-to-client request, for an `inputRequests` entry.
pub fn input_request_of(request: &Value<'_>) -> Option<String> {
    let method = request.get_str("method")?;
    let mut out = Vec::new();
    out.extend_from_slice(br#"{"method":"#);
    jsonrpc::write_json_string(&mut out, method);
    if let Some(params) = request.get("params") {
        out.extend_from_slice(br#","params":"#);
        out.extend_from_slice(params.encode().as_bytes());
    }
    out.push(b'}');
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stateful_client_sees_no_field_of_the_stateless_era() {
        let body = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":3,"result":{"content":[],"resultType":"complete","ttlMs":0,"cacheScope":"private","_meta":{"io.modelcontextprotocol/serverInfo":{"name":"up","version":"1"}}}}"#,
        );
        let text = String::from_utf8(undress(body).to_vec()).unwrap_or_default();
        assert_eq!(text, r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#);
        let other = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":3,"result":{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"up"},"k":1}}}"#,
        );
        let text = String::from_utf8(undress(other).to_vec()).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"jsonrpc":"2.0","id":3,"result":{"_meta":{"k":1}}}"#
        );
        let plain = Bytes::from_static(br#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#);
        assert_eq!(undress(plain.clone()), plain);
    }

    #[test]
    fn responses_gain_the_stateless_result_shape() {
        let out = dress(
            "tools/list",
            None,
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#),
            INFO,
        );
        let text = std::str::from_utf8(&out.body).unwrap();
        assert!(text.contains(r#""resultType":"complete""#), "{text}");
        assert!(text.contains(r#""cacheScope":"private""#), "{text}");
        assert!(
            text.contains(r#""io.modelcontextprotocol/serverInfo":{"name":"p""#),
            "{text}"
        );
        assert_eq!(out.status, 200);
        let out = dress(
            "resources/read",
            Some(&Id::Num(9)),
            Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32002,"message":"x"}}"#,
            ),
            INFO,
        );
        let text = std::str::from_utf8(&out.body).unwrap();
        assert!(
            text.contains("-32602") && text.contains(r#""id":9"#),
            "{text}"
        );
        assert_eq!(
            out.status, 200,
            "an unknown resource is an answer, not a refusal"
        );
    }

    const INFO: &str = r#"{"name":"p","version":"1"}"#;

    #[test]
    fn the_server_info_of_the_proxy_replaces_the_upstreams() {
        let out = dress(
            "tools/call",
            None,
            Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"up"},"k":1}}}"#,
            ),
            INFO,
        );
        let text = std::str::from_utf8(&out.body).unwrap();
        assert!(
            text.contains(r#""name":"p""#) && !text.contains(r#""up""#),
            "{text}"
        );
        assert!(text.contains(r#""k":1"#), "other _meta keys stay: {text}");
    }

    #[test]
    fn errors_carry_the_status_their_code_calls_for() {
        for (code, status) in [
            (-32601, 404),
            (-32600, 400),
            (-32700, 400),
            (-32020, 400),
            (-32021, 400),
            (-32022, 400),
            (-32602, 200),
            (-32603, 200),
            (-32000, 200),
        ] {
            assert_eq!(http_status(code), status, "{code}");
            let body =
                format!(r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":{code},"message":"m"}}}}"#);
            assert_eq!(dress("tools/call", None, body.into(), INFO).status, status);
        }
    }

    #[test]
    fn input_required_shape() {
        let body = input_required(
            &Id::Num(3),
            &[(
                "s1".into(),
                Bytes::from_static(br#"{"method":"sampling/createMessage","params":{}}"#),
            )],
            "tok",
        );
        let mut buf = body.to_vec();
        let msg = jsonrpc::parse(&mut buf).unwrap();
        let result = msg.get("result").unwrap();
        assert_eq!(result.get_str("resultType"), Some("input_required"));
        assert_eq!(result.get_str("requestState"), Some("tok"));
        assert!(result.get("inputRequests").unwrap().get("s1").is_some());
    }
}
