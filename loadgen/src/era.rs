//! The protocol era a run speaks: the stateful one (`initialize`, `Mcp-Session-Id`, then the
//! mix) or the stateless 2026-07-28 one, where no session exists and every request carries
//! what the server needs to know about the client.
//!
//! A 2026-07-28 request carries, beside its body, `MCP-Protocol-Version: 2026-07-28`,
//! `Mcp-Method` (the body's method) and, on `tools/call`, `prompts/get` and `resources/read`,
//! `Mcp-Name` (its `params.name` or `params.uri`); in `params._meta` it carries the version,
//! the client's capabilities and its identity. This module builds those once per mix entry, so
//! the hot path only copies bytes.

use simd_json::prelude::*;
use simd_json::OwnedValue;

use mcp_proxy::protocol::stateless::{
    encode_header_value, named_field, META_CAPABILITIES, META_CLIENT_INFO, META_VERSION, VERSION,
};

/// The revision a stateless run sends in `MCP-Protocol-Version` and `_meta`.
pub const STATELESS_VERSION: &str = VERSION;

/// How a run talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Era {
    /// `initialize` per session, `Mcp-Session-Id` on every request (2025-11-25 asked for).
    #[default]
    Stateful,
    /// 2026-07-28: no handshake, no session; the envelope rides on every request.
    Stateless,
}

impl Era {
    /// The protocol revision this era asks for, as the report names it.
    pub fn version(self) -> &'static str {
        match self {
            Era::Stateful => crate::client::PROTOCOL_VERSION,
            Era::Stateless => STATELESS_VERSION,
        }
    }
}

/// The headers that mirror a 2026-07-28 request's body: the server refuses a request whose
/// headers disagree with it, so they are derived from the body, never written by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// `Mcp-Method`: the body's `method`.
    pub method: String,
    /// `Mcp-Name`, already encoded for a header (`=?base64?...?=` when not plain ASCII).
    pub name: Option<String>,
}

/// Why params could not carry the envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("params are not a JSON object, or their `_meta` is not an object")]
pub struct EnvelopeError;

/// The `clientInfo.name` of client `k` of a run that speaks as `clients` clients:
/// `mcp-loadgen`, or `mcp-loadgen-K` when there are several. A 2026-07-28 server (the proxy's
/// bridge) tells clients apart by their identity alone, so these are several clients to it.
pub fn client_name(k: usize, clients: usize) -> String {
    if clients > 1 {
        format!("mcp-loadgen-{k}")
    } else {
        "mcp-loadgen".to_owned()
    }
}

/// `params` (a JSON object's text; None for none) with the 2026-07-28 envelope of the client
/// named `client` merged into its `_meta` (fields the mix already gave there are kept, the
/// envelope's own are set), and the headers that go with `method`.
pub fn envelope(
    method: &str,
    params: Option<&str>,
    client: &str,
) -> Result<(Vec<u8>, Stamp), EnvelopeError> {
    let mut value = match params {
        Some(text) => {
            let mut buf = text.as_bytes().to_vec();
            simd_json::to_owned_value(&mut buf).map_err(|_| EnvelopeError)?
        }
        None => OwnedValue::object(),
    };
    let object = value.as_object_mut().ok_or(EnvelopeError)?;
    let meta = object
        .entry("_meta".into())
        .or_insert_with(OwnedValue::object)
        .as_object_mut()
        .ok_or(EnvelopeError)?;
    meta.insert(META_VERSION.into(), OwnedValue::from(STATELESS_VERSION));
    meta.insert(META_CAPABILITIES.into(), OwnedValue::object());
    let mut info = OwnedValue::object();
    if let Some(i) = info.as_object_mut() {
        i.insert("name".into(), OwnedValue::from(client));
        i.insert(
            "version".into(),
            OwnedValue::from(env!("CARGO_PKG_VERSION")),
        );
    }
    meta.insert(META_CLIENT_INFO.into(), info);
    let name = named_field(method)
        .and_then(|field| value.get_str(field))
        .map(encode_header_value);
    let stamp = Stamp {
        method: method.to_owned(),
        name,
    };
    Ok((value.encode().into_bytes(), stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_of(params: &[u8]) -> OwnedValue {
        let mut buf = params.to_vec();
        let v = simd_json::to_owned_value(&mut buf).unwrap();
        v.get("_meta").unwrap().clone()
    }

    #[test]
    fn every_request_carries_the_envelope_and_its_headers() {
        let (params, stamp) = envelope(
            "tools/call",
            Some(r#"{"name":"a__echo","arguments":{"message":"hi"}}"#),
            "mcp-loadgen",
        )
        .unwrap();
        let meta = meta_of(&params);
        assert_eq!(meta.get_str(META_VERSION), Some("2026-07-28"));
        assert!(meta.get(META_CAPABILITIES).unwrap().is_object());
        assert_eq!(
            meta.get(META_CLIENT_INFO).and_then(|i| i.get_str("name")),
            Some("mcp-loadgen")
        );
        assert_eq!(
            stamp,
            Stamp {
                method: "tools/call".into(),
                name: Some("a__echo".into())
            }
        );
        // A method without params gets params holding just the envelope, and no Mcp-Name.
        let (params, stamp) = envelope("tools/list", None, "mcp-loadgen").unwrap();
        assert!(meta_of(&params).get(META_VERSION).is_some());
        assert_eq!(stamp.name, None);
        // resources/read is named by its URI; a name that is not plain ASCII is encoded.
        let (_, stamp) = envelope(
            "resources/read",
            Some(r#"{"uri":"demo://x"}"#),
            "mcp-loadgen",
        )
        .unwrap();
        assert_eq!(stamp.name.as_deref(), Some("demo://x"));
        let (_, stamp) =
            envelope("prompts/get", Some(r#"{"name":"grüß"}"#), "mcp-loadgen").unwrap();
        assert!(stamp.name.unwrap().starts_with("=?base64?"));
    }

    #[test]
    fn a_meta_the_mix_gave_is_kept() {
        let (params, _) = envelope(
            "tools/list",
            Some(r#"{"_meta":{"io.modelcontextprotocol/logLevel":"info"}}"#),
            "mcp-loadgen",
        )
        .unwrap();
        let meta = meta_of(&params);
        assert_eq!(
            meta.get_str("io.modelcontextprotocol/logLevel"),
            Some("info")
        );
        assert_eq!(meta.get_str(META_VERSION), Some("2026-07-28"));
        assert_eq!(
            envelope("tools/list", Some(r#"{"_meta":3}"#), "mcp-loadgen"),
            Err(EnvelopeError)
        );
    }

    #[test]
    fn several_clients_are_told_apart_by_their_names() {
        assert_eq!(client_name(0, 1), "mcp-loadgen");
        let names: std::collections::HashSet<_> = (0..4).map(|k| client_name(k, 4)).collect();
        assert_eq!(names.len(), 4);
        let (params, _) = envelope("tools/list", None, &client_name(2, 4)).unwrap();
        assert_eq!(
            meta_of(&params)
                .get(META_CLIENT_INFO)
                .and_then(|i| i.get_str("name")),
            Some("mcp-loadgen-2")
        );
    }
}
