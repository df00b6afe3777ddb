//! The stateless era (2026-07-28): per-request `_meta`, the `Mcp-Method`/`Mcp-Name` headers,
//! `server/discover`, multi-round-trip results and the era's error codes.
//!
//! Only wire facts live here: building and checking messages. Sessions, rounds and sockets
//! belong to `mcp::bridge` and the transports.

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
pub fn is_stateless_version(version: &str) -> bool {
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
    /// Every `Mcp-Param-{Name}` header: `{Name}` lowercased, and the value still encoded.
    pub params: Vec<(String, String)>,
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

/// Checks that a request carries the envelope's required `_meta` fields (basic/index.mdx,
/// "Per-request protocol fields"): `protocolVersion` (a string) and `clientCapabilities` (an
/// object); `clientInfo` is optional. The error text names what is missing.
pub fn check_envelope(msg: &Value<'_>) -> Result<(), String> {
    let Some(meta) = msg.get("params").and_then(|p| p.get("_meta")) else {
        return Err(format!(
            "params._meta is required on every 2026-07-28 request, with {META_VERSION} and {META_CAPABILITIES}"
        ));
    };
    if meta.get(META_VERSION).and_then(|v| v.as_str()).is_none() {
        return Err(format!(
            "params._meta.{META_VERSION} is required (a string, e.g. \"{VERSION}\")"
        ));
    }
    if !meta.get(META_CAPABILITIES).is_some_and(|c| c.is_object()) {
        return Err(format!(
            "params._meta.{META_CAPABILITIES} is required (an object, {{}} for none)"
        ));
    }
    Ok(())
}

/// The `Mcp-Param-*` fields of a request head, for [`Headers::params`].
pub fn param_fields<'a>(
    fields: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Vec<(String, String)> {
    fields
        .filter_map(|(name, value)| {
            let rest = name
                .get(..10)
                .filter(|p| p.eq_ignore_ascii_case("mcp-param-"))?;
            let suffix = &name[rest.len()..];
            // A non-UTF-8 value is kept lossily so the check reports it as invalid.
            Some((
                suffix.to_ascii_lowercase(),
                String::from_utf8_lossy(value).into_owned(),
            ))
        })
        .collect()
}

/// One `x-mcp-header` annotation of a tool's `inputSchema` (streamable-http.mdx, "Custom
/// Headers from Tool Parameters"): the argument at `path` is mirrored into `Mcp-Param-{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    /// The `{Name}` part of the header, as the schema spells it.
    pub name: String,
    /// The chain of `properties` keys from the schema root to the argument.
    pub path: Vec<String>,
    /// The argument is an integer, so header and body compare as numbers.
    pub integer: bool,
}

/// The `x-mcp-header` annotations of a tool's `inputSchema`; `Err` saying why when one breaks
/// the spec's constraints (the tool must then be withheld from clients).
pub fn param_headers(schema: Option<&Value<'_>>) -> Result<Vec<ParamHeader>, String> {
    let mut found = Vec::new();
    let Some(schema) = schema else {
        return Ok(found);
    };
    let mut path = Vec::new();
    collect_param_headers(schema, &mut path, &mut found)?;
    if count_annotations(schema, false) != found.len() {
        return Err(
            "x-mcp-header is only allowed on properties reached through `properties` alone (not items, oneOf, anyOf, allOf, not, if/then/else or $ref)".into(),
        );
    }
    for (i, a) in found.iter().enumerate() {
        if found[..i]
            .iter()
            .any(|b| b.name.eq_ignore_ascii_case(&a.name))
        {
            return Err(format!("x-mcp-header '{}' is declared twice", a.name));
        }
    }
    Ok(found)
}

fn collect_param_headers(
    schema: &Value<'_>,
    path: &mut Vec<String>,
    found: &mut Vec<ParamHeader>,
) -> Result<(), String> {
    let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
        return Ok(());
    };
    for (key, prop) in props.iter() {
        path.push(key.to_string());
        if let Some(ann) = prop.get("x-mcp-header") {
            let at = path.join(".");
            let name = ann
                .as_str()
                .ok_or_else(|| format!("x-mcp-header of '{at}' is not a string"))?;
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(format!(
                    "x-mcp-header '{name}' of '{at}' is not an HTTP field-name token"
                ));
            }
            let integer = match prop.get_str("type") {
                Some("integer") => true,
                Some("string" | "boolean") => false,
                other => {
                    return Err(format!(
                        "x-mcp-header '{name}' is on '{at}' of type {}: only integer, string and boolean parameters may be mirrored",
                        other.unwrap_or("(none)")
                    ))
                }
            };
            found.push(ParamHeader {
                name: name.to_owned(),
                path: path.clone(),
                integer,
            });
        }
        collect_param_headers(prop, path, found)?;
        path.pop();
    }
    Ok(())
}

/// Counts `x-mcp-header` keywords anywhere in a schema (keys of a `properties` map are
/// property names, not keywords).
fn count_annotations(schema: &Value<'_>, names: bool) -> usize {
    match schema {
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| {
                let own = usize::from(!names && k == "x-mcp-header");
                own + count_annotations(v, !names && k == "properties")
            })
            .sum(),
        Value::Array(a) => a.iter().map(|v| count_annotations(v, false)).sum(),
        _ => 0,
    }
}

/// The argument an annotation mirrors, `None` when absent or null (the header is omitted).
fn param_argument<'v>(args: Option<&'v Value<'v>>, path: &[String]) -> Option<&'v Value<'v>> {
    let mut at = args?;
    for key in path {
        at = at.get(key.as_str())?;
    }
    (!at.is_null()).then_some(at)
}

/// A mirrored argument as header text before encoding ("Value Encoding": strings as they are,
/// integers in decimal, booleans in lowercase).
fn param_text(v: &Value<'_>) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Static(simd_json::StaticNode::F64(f))
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 =>
        {
            format!("{}", *f as i64)
        }
        other => other.encode(),
    }
}

/// The `Mcp-Param-*` headers (name, encoded value) a client must send for these arguments.
pub fn param_header_values(
    decls: &[ParamHeader],
    args: Option<&Value<'_>>,
) -> Vec<(String, String)> {
    decls
        .iter()
        .filter_map(|d| {
            let v = param_argument(args, &d.path)?;
            Some((
                format!("Mcp-Param-{}", d.name),
                encode_header_value(&param_text(v)),
            ))
        })
        .collect()
}

/// Checks the `Mcp-Param-*` headers against a `tools/call`'s arguments ("Server Behavior for
/// Custom Headers"): a mirrored argument needs its header with the same value, and a header
/// the tool declares needs its argument. Headers the tool does not declare are not checked.
pub fn check_param_headers(
    decls: &[ParamHeader],
    sent: &[(String, String)],
    args: Option<&Value<'_>>,
) -> Result<(), String> {
    for d in decls {
        let header = format!("Mcp-Param-{}", d.name);
        let body = param_argument(args, &d.path).map(param_text);
        let raw = sent
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&d.name))
            .map(|(_, v)| v.as_str());
        let at = d.path.join(".");
        let Some(raw) = raw else {
            if let Some(body) = body {
                return Err(format!(
                    "{header} header is required: the tool mirrors arguments.{at} into it (body value '{body}')"
                ));
            }
            continue;
        };
        let valid = raw.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
        let Some(decoded) = decode_header_value(raw).filter(|_| valid) else {
            return Err(format!(
                "{header} header value '{raw}' is not a visible-ASCII value or valid =?base64?...?= encoding"
            ));
        };
        let same = match body.as_deref() {
            None => false,
            Some(b) if d.integer => match (decoded.trim().parse::<f64>(), b.parse::<f64>()) {
                (Ok(h), Ok(b)) => h == b,
                _ => decoded == b,
            },
            Some(b) => decoded == b,
        };
        if !same {
            return Err(format!(
                "Header mismatch: {header} header value '{decoded}' does not match body value '{}' (arguments.{at})",
                body.as_deref().unwrap_or("(missing)")
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

/// Severity rank of a log level (server/utilities/logging.mdx, the RFC 5424 order), lowest
/// first; `None` for a word that is not a level.
pub fn log_level_rank(level: &str) -> Option<u8> {
    const LEVELS: [&str; 8] = [
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
    ];
    LEVELS
        .iter()
        .position(|l| *l == level)
        .and_then(|i| u8::try_from(i).ok())
}

/// The rank of the level a request opts in to with `_meta` logLevel; `None` when it asks for
/// no log messages (the era's default).
pub fn requested_log_level(msg: &Value<'_>) -> Option<u8> {
    msg.get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get_str(META_LOG_LEVEL))
        .and_then(log_level_rank)
}

/// Whether a `notifications/message` may go to a request that opted in to `wanted` (a rank
/// from [`requested_log_level`]): none without the opt-in, then those at or above the level.
/// A message without a known level counts as `debug`.
pub fn log_wanted(notification: &Value<'_>, wanted: Option<u8>) -> bool {
    let level = notification
        .get("params")
        .and_then(|p| p.get_str("level"))
        .and_then(log_level_rank)
        .unwrap_or(0);
    wanted.is_some_and(|w| level >= w)
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
    /// `Mcp-Param-*` (full header name, encoded value) for the tool's `x-mcp-header` arguments.
    pub params: Vec<(String, String)>,
}

/// Puts the per-request envelope (version, the client's capabilities and identity, all JSON
/// text) into a request's `params._meta`. `None` for anything that is not a request: the era
/// has no client notifications or responses over HTTP. `decls` gives a tool's `x-mcp-header`
/// annotations by its (upstream) name, so a `tools/call` carries its `Mcp-Param-*` headers.
pub fn stamp(
    body: &[u8],
    capabilities: &str,
    client_info: &str,
    decls: impl FnOnce(&str) -> Vec<ParamHeader>,
) -> Option<Stamped> {
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
    let param_values = match msg.get("params").filter(|_| method == "tools/call") {
        Some(p) => match p.get_str("name") {
            Some(tool) => param_header_values(&decls(tool), p.get("arguments")),
            None => Vec::new(),
        },
        None => Vec::new(),
    };
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
    // A stateful client has no per-request opt-in: it gets every log message, as from a
    // stateful server it never sent `logging/setLevel`; a 2026-07-28 client's calls are
    // filtered by the bridge to the level each asked for.
    if !meta.contains_key(META_LOG_LEVEL) {
        meta.insert(META_LOG_LEVEL.into(), Value::from("debug"));
    }
    Some(Stamped {
        body: jsonrpc::to_bytes(&msg),
        method,
        name,
        params: param_values,
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
pub fn discover_says_stateless(result: &Value<'_>) -> bool {
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
            params: Vec::new(),
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
    fn x_mcp_header_annotations_are_found_and_policed() {
        let schema = |text: &str| text.as_bytes().to_vec();
        let mut ok = schema(
            r#"{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"},"opts":{"type":"object","properties":{"tenant":{"type":"integer","x-mcp-header":"Tenant"}}},"x-mcp-header":{"type":"string"}}}"#,
        );
        let v = simd_json::to_borrowed_value(&mut ok).unwrap();
        let found = param_headers(Some(&v)).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        let tenant = found.iter().find(|d| d.name == "Tenant").unwrap();
        assert_eq!(tenant.path, ["opts", "tenant"]);
        assert!(tenant.integer);
        for (bad, why) in [
            (
                r#"{"properties":{"a":{"type":"number","x-mcp-header":"A"}}}"#,
                "number",
            ),
            (
                r#"{"properties":{"a":{"type":"string","x-mcp-header":"A B"}}}"#,
                "token",
            ),
            (
                r#"{"properties":{"a":{"type":"string","x-mcp-header":"A"},"b":{"type":"string","x-mcp-header":"a"}}}"#,
                "twice",
            ),
            (
                r#"{"properties":{"a":{"type":"array","items":{"type":"string","x-mcp-header":"A"}}}}"#,
                "items",
            ),
        ] {
            let mut buf = schema(bad);
            let v = simd_json::to_borrowed_value(&mut buf).unwrap();
            let e = param_headers(Some(&v)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }

        let decls = found;
        let mut args = schema(r#"{"region":"eu-west1","opts":{"tenant":42}}"#);
        let args = simd_json::to_borrowed_value(&mut args).unwrap();
        let sent = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let check = |pairs: &[(&str, &str)]| check_param_headers(&decls, &sent(pairs), Some(&args));
        assert!(check(&[("region", "eu-west1"), ("tenant", "42.0")]).is_ok());
        assert!(check(&[
            ("region", "=?base64?ZXUtd2VzdDE=?="),
            ("tenant", "42"),
            ("other", "x")
        ])
        .is_ok());
        let e = check(&[("region", "us-east1"), ("tenant", "42")]).unwrap_err();
        assert!(
            e.contains("Mcp-Param-Region") && e.contains("us-east1") && e.contains("eu-west1"),
            "{e}"
        );
        let e = check(&[("region", "eu-west1")]).unwrap_err();
        assert!(
            e.contains("Mcp-Param-Tenant") && e.contains("required"),
            "{e}"
        );
        let e = check(&[("region", "=?base64?!!?="), ("tenant", "42")]).unwrap_err();
        assert!(e.contains("encoding"), "{e}");
        let mut none = schema(r#"{"region":null}"#);
        let none = simd_json::to_borrowed_value(&mut none).unwrap();
        assert!(check_param_headers(&decls, &[], Some(&none)).is_ok());
        let e = check_param_headers(&decls, &sent(&[("tenant", "1")]), Some(&none)).unwrap_err();
        assert!(e.contains("(missing)"), "{e}");
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
    fn log_messages_go_only_to_requests_that_opted_in_at_their_level() {
        let mut buf = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"warning","data":"x"}}"#.to_vec();
        let warning = jsonrpc::parse(&mut buf).unwrap();
        assert!(!log_wanted(&warning, None), "no opt-in, no log messages");
        assert!(log_wanted(&warning, log_level_rank("debug")));
        assert!(log_wanted(&warning, log_level_rank("warning")));
        assert!(!log_wanted(&warning, log_level_rank("error")));
        assert_eq!(log_level_rank("loud"), None);
        let mut req = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"io.modelcontextprotocol/logLevel":"info"}}}"#.to_vec();
        assert_eq!(
            requested_log_level(&jsonrpc::parse(&mut req).unwrap()),
            Some(1)
        );
    }

    #[test]
    fn stamping_adds_the_envelope_and_headers() {
        let s = stamp(
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"hé","arguments":{"region":"Zürich","n":7}}}"#
                .as_bytes(),
            r#"{"sampling":{}}"#,
            r#"{"name":"c","version":"1"}"#,
            |tool| {
                assert_eq!(tool, "hé");
                let decl = |name: &str, key: &str, integer| ParamHeader {
                    name: name.into(),
                    path: vec![key.into()],
                    integer,
                };
                vec![
                    decl("Region", "region", false),
                    decl("N", "n", true),
                    decl("Absent", "nothing", false),
                ]
            },
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
        let region = &s.params[0];
        assert_eq!(region.0, "Mcp-Param-Region");
        assert_eq!(decode_header_value(&region.1).as_deref(), Some("Zürich"));
        assert_eq!(s.params[1], ("Mcp-Param-N".into(), "7".into()));
        assert_eq!(s.params.len(), 2, "an absent argument gets no header");
        assert!(stamp(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "{}",
            "{}",
            |_| Vec::new(),
        )
        .is_none());
        assert_eq!(encode_header_value("plain__name"), "plain__name");
    }

    #[test]
    fn the_envelope_needs_version_and_capabilities() {
        let check = |text: &str| {
            let mut buf = parsed(text);
            let msg = jsonrpc::parse(&mut buf).unwrap();
            check_envelope(&msg)
        };
        let v = META_VERSION;
        let c = META_CAPABILITIES;
        assert!(check(r#"{"jsonrpc":"2.0","id":1,"method":"server/discover"}"#).is_err());
        assert!(
            check(r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#).is_err()
        );
        let only_caps = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{{"_meta":{{"{c}":{{}}}}}}}}"#
        );
        assert!(check(&only_caps).unwrap_err().contains(v));
        let only_version = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{{"_meta":{{"{v}":"2026-07-28"}}}}}}"#
        );
        assert!(check(&only_version).unwrap_err().contains(c));
        let both = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{{"_meta":{{"{v}":"2026-07-28","{c}":{{}}}}}}}}"#
        );
        assert!(check(&both).is_ok(), "clientInfo is optional");
    }
}
