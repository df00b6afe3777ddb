//! The stateless era (2026-07-28): per-request `_meta`, the `Mcp-Method`/`Mcp-Name` headers,
//! `server/discover`, multi-round-trip results and the era's error codes.
//!
//! Only wire facts live here: building and checking messages. Sessions, rounds and sockets
//! belong to `routing::bridge` and the transports.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::jsonrpc::{self, Id};

/// The stateless revision.
pub const VERSION: &str = "2026-07-28";

/// `_meta` key carrying the request's protocol version.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key carrying the client's capabilities.
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key carrying the client's identity.
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key carrying the per-request log level.
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// The era's error codes (basic/index.mdx, "Error codes").
pub mod code {
    /// Headers disagree with the body, or a required header is missing or malformed.
    pub const HEADER_MISMATCH: i32 = -32020;
    /// The request needs a client capability the client did not declare.
    pub const MISSING_CLIENT_CAPABILITY: i32 = -32021;
    /// The requested protocol version is not served here.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i32 = -32022;
}

/// True for revisions that carry version and capabilities on each request.
pub fn is_modern(version: &str) -> bool {
    version >= VERSION
}

/// Methods whose request names a tool, prompt or resource in `Mcp-Name`.
pub fn named_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Methods that may answer with `input_required` (basic/patterns/mrtr.mdx).
pub fn may_require_input(method: &str) -> bool {
    named_field(method).is_some()
}

/// Decodes a header value that may use the `=?base64?…?=` sentinel; `None` when malformed.
pub fn decode_header_value(raw: &str) -> Option<String> {
    match raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => String::from_utf8(STANDARD.decode(b64).ok()?).ok(),
        None => Some(raw.to_owned()),
    }
}

/// The request-metadata headers of one POST, as sent.
#[derive(Debug, Default, Clone)]
pub struct Headers {
    /// `MCP-Protocol-Version`.
    pub version: Option<String>,
    /// `Mcp-Method`.
    pub method: Option<String>,
    /// `Mcp-Name`, still encoded.
    pub name: Option<String>,
}

/// Checks the headers against the parsed body (streamable-http.mdx, "Server Validation").
/// The error text says which header disagrees and how.
pub fn check_headers(headers: &Headers, method: &str, msg: &Value<'_>) -> Result<(), String> {
    match headers.method.as_deref() {
        None => return Err("Mcp-Method header is required on every 2026-07-28 POST".into()),
        Some(m) if m != method => {
            return Err(format!(
            "Header mismatch: Mcp-Method header value '{m}' does not match body method '{method}'"
        ))
        }
        Some(_) => {}
    }
    let params = msg.get("params");
    if let Some(field) = named_field(method) {
        let body = params.and_then(|p| p.get_str(field));
        match (headers.name.as_deref(), body) {
            (None, _) => {
                return Err(format!(
                    "Mcp-Name header is required on {method} (it carries params.{field})"
                ))
            }
            (Some(raw), body) => {
                let Some(decoded) = decode_header_value(raw) else {
                    return Err(format!(
                        "Mcp-Name header value '{raw}' is not valid =?base64?...?= encoding"
                    ));
                };
                if body != Some(decoded.as_str()) {
                    return Err(format!(
                        "Header mismatch: Mcp-Name header value '{decoded}' does not match body value '{}'",
                        body.unwrap_or("(missing)")
                    ));
                }
            }
        }
    }
    let meta_version = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get_str(META_VERSION));
    if let (Some(h), Some(b)) = (headers.version.as_deref(), meta_version) {
        if h != b {
            return Err(format!(
                "Header mismatch: MCP-Protocol-Version header value '{h}' does not match _meta {META_VERSION} '{b}'"
            ));
        }
    }
    Ok(())
}

/// The client's capabilities and identity from a request's `_meta`, as JSON text.
pub fn client_meta(msg: &Value<'_>) -> (String, String) {
    let meta = msg.get("params").and_then(|p| p.get("_meta"));
    let caps = meta
        .and_then(|m| m.get(META_CAPABILITIES))
        .filter(|c| c.is_object())
        .map_or_else(|| "{}".to_owned(), |c| c.encode());
    let info = meta
        .and_then(|m| m.get(META_CLIENT_INFO))
        .filter(|c| c.is_object())
        .map_or_else(
            || r#"{"name":"unknown-client","version":"0"}"#.to_owned(),
            |c| c.encode(),
        );
    (caps, info)
}

/// Removes the era's envelope keys from `params._meta` before the request goes to a stateful
/// upstream, which would not know them; other `_meta` keys (progress tokens) stay.
pub fn strip_envelope(msg: &mut Value<'_>) {
    let meta = msg
        .get_mut("params")
        .and_then(|p| p.get_mut("_meta"))
        .and_then(|m| m.as_object_mut());
    if let Some(meta) = meta {
        for key in [
            META_VERSION,
            META_CAPABILITIES,
            META_CLIENT_INFO,
            META_LOG_LEVEL,
        ] {
            meta.remove(key);
        }
    }
    let empty = msg
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.as_object())
        .is_some_and(|m| m.is_empty());
    if empty {
        if let Some(p) = msg.get_mut("params").and_then(|p| p.as_object_mut()) {
            p.remove("_meta");
        }
    }
}

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
        code::UNSUPPORTED_PROTOCOL_VERSION,
        &format!(
            "Unsupported protocol version {requested}; supported: {}",
            supported.join(", ")
        ),
        &data,
    )
}

/// Rewrites a stateful-era response for a stateless-era client: results gain
/// `resultType: "complete"`, list results gain the required cache hints, and the stateful
/// "resource not found" code (-32002) becomes -32602; `id`, when given, replaces the id.
/// Bodies that do not parse pass unchanged.
pub fn modernize_response(method: &str, id: Option<&Id>, body: Bytes) -> Bytes {
    let mut buf = body.to_vec();
    let Ok(mut msg) = jsonrpc::parse(&mut buf) else {
        return body;
    };
    if let (Some(id), Some(obj)) = (id, msg.as_object_mut()) {
        obj.insert("id".into(), id.to_value());
    }
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
    } else if let Some(error) = msg.get_mut("error").and_then(|e| e.as_object_mut()) {
        if error.get("code").and_then(|c| c.as_i64()) == Some(-32002) {
            error.insert("code".into(), Value::from(-32602_i64));
        }
    }
    jsonrpc::to_bytes(&msg)
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

/// Encodes a value for `Mcp-Name` (or `Mcp-Param-*`): plain when it is safe ASCII, else the
/// `=?base64?…?=` sentinel (streamable-http.mdx, "Value Encoding").
pub fn encode_header_value(value: &str) -> String {
    let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    let padded = value.starts_with(' ') || value.ends_with(' ');
    let looks_encoded = value.starts_with("=?base64?") && value.ends_with("?=");
    let plain = !value.is_empty() && printable && !padded && !looks_encoded;
    if plain {
        value.to_owned()
    } else {
        format!("=?base64?{}?=", STANDARD.encode(value.as_bytes()))
    }
}

/// A request ready for a 2026-07-28 upstream: its body with the envelope in `_meta`, and the
/// values of `Mcp-Method` and `Mcp-Name`.
pub struct Stamped {
    /// The rewritten body.
    pub body: Bytes,
    /// `Mcp-Method`.
    pub method: String,
    /// `Mcp-Name`, already encoded.
    pub name: Option<String>,
}

/// Puts the per-request envelope (version, the client's capabilities and identity, all JSON
/// text) into a request's `params._meta`. `None` for anything that is not a request: the era
/// has no client notifications or responses over HTTP.
pub fn stamp(body: &[u8], capabilities: &str, client_info: &str) -> Option<Stamped> {
    // The envelope's buffers are declared first so they outlive the message borrowing them.
    let mut caps_buf = capabilities.as_bytes().to_vec();
    let mut info_buf = client_info.as_bytes().to_vec();
    let mut buf = body.to_vec();
    let mut msg = jsonrpc::parse(&mut buf).ok()?;
    msg.get("id")?;
    let method = msg.get_str("method")?.to_owned();
    let name = named_field(&method)
        .and_then(|f| msg.get("params").and_then(|p| p.get_str(f)))
        .map(encode_header_value);
    let caps = simd_json::to_borrowed_value(&mut caps_buf).ok()?;
    let info = simd_json::to_borrowed_value(&mut info_buf).ok()?;
    let root = msg.as_object_mut()?;
    if !root.get("params").is_some_and(|p| p.is_object()) {
        root.insert("params".into(), Value::object());
    }
    let params = root.get_mut("params")?.as_object_mut()?;
    if !params.get("_meta").is_some_and(|m| m.is_object()) {
        params.insert("_meta".into(), Value::object());
    }
    let meta = params.get_mut("_meta")?.as_object_mut()?;
    meta.insert(META_VERSION.into(), Value::from(VERSION));
    meta.insert(META_CAPABILITIES.into(), caps);
    meta.insert(META_CLIENT_INFO.into(), info);
    Some(Stamped {
        body: jsonrpc::to_bytes(&msg),
        method,
        name,
    })
}

/// The `server/discover` probe a proxy sends upstream.
pub fn discover_request(id: &Id, capabilities: &str, client_info: &str) -> Bytes {
    let params = format!(
        r#"{{"_meta":{{"{META_VERSION}":"{VERSION}","{META_CAPABILITIES}":{capabilities},"{META_CLIENT_INFO}":{client_info}}}}}"#
    );
    jsonrpc::request_body(id, "server/discover", params.as_bytes())
}

/// True when a discover answer's `supportedVersions` names this era.
pub fn discover_says_modern(result: &Value<'_>) -> bool {
    result
        .get("supportedVersions")
        .and_then(|v| v.as_array())
        .is_some_and(|vs| vs.iter().any(|v| v.as_str() == Some(VERSION)))
}

/// True when a response message carries an `InputRequiredResult`.
pub fn is_input_required(msg: &Value<'_>) -> bool {
    msg.get("result")
        .and_then(|r| r.get_str("resultType"))
        .is_some_and(|t| t == "input_required")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    #[test]
    fn headers_must_agree_with_the_body() {
        let mut buf = parsed(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let msg = jsonrpc::parse(&mut buf).unwrap();
        let mut h = Headers {
            version: Some(VERSION.into()),
            method: Some("tools/call".into()),
            name: Some("a__echo".into()),
        };
        assert!(check_headers(&h, "tools/call", &msg).is_ok());
        h.name = Some("=?base64?YV9fZWNobw==?=".into());
        assert!(check_headers(&h, "tools/call", &msg).is_ok());
        h.name = Some("a__other".into());
        let e = check_headers(&h, "tools/call", &msg).unwrap_err();
        assert!(e.contains("a__other") && e.contains("a__echo"), "{e}");
        h.name = None;
        assert!(check_headers(&h, "tools/call", &msg).is_err());
        h.name = Some("a__echo".into());
        h.method = Some("tools/list".into());
        assert!(check_headers(&h, "tools/call", &msg).is_err());
        h.method = Some("tools/call".into());
        h.version = Some("2026-08-01".into());
        assert!(check_headers(&h, "tools/call", &msg).is_err());
    }

    #[test]
    fn sentinel_decoding() {
        assert_eq!(decode_header_value("plain").as_deref(), Some("plain"));
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(decode_header_value("=?base64?!!?="), None);
    }

    #[test]
    fn responses_are_modernized() {
        let out = modernize_response(
            "tools/list",
            None,
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#),
        );
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains(r#""resultType":"complete""#), "{text}");
        assert!(text.contains(r#""cacheScope":"private""#), "{text}");
        let out = modernize_response(
            "resources/read",
            Some(&Id::Num(9)),
            Bytes::from_static(
                br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32002,"message":"x"}}"#,
            ),
        );
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.contains("-32602") && text.contains(r#""id":9"#),
            "{text}"
        );
    }

    #[test]
    fn envelope_is_stripped_but_progress_token_kept() {
        let mut buf = parsed(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":7,"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let mut msg = jsonrpc::parse(&mut buf).unwrap();
        strip_envelope(&mut msg);
        let text = msg.encode();
        assert!(
            text.contains("progressToken") && !text.contains("protocolVersion"),
            "{text}"
        );
    }

    #[test]
    fn stamping_adds_the_envelope_and_headers() {
        let s = stamp(
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"hé","arguments":{}}}"#
                .as_bytes(),
            r#"{"sampling":{}}"#,
            r#"{"name":"c","version":"1"}"#,
        )
        .unwrap();
        let text = std::str::from_utf8(&s.body).unwrap();
        assert!(
            text.contains(META_VERSION) && text.contains(r#""sampling":{}"#),
            "{text}"
        );
        assert_eq!(s.method, "tools/call");
        let name = s.name.unwrap();
        assert!(name.starts_with("=?base64?"), "{name}");
        assert_eq!(decode_header_value(&name).as_deref(), Some("hé"));
        assert!(stamp(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "{}",
            "{}"
        )
        .is_none());
        assert_eq!(encode_header_value("plain__name"), "plain__name");
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
