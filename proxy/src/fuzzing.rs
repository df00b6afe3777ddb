//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay in `cargo test`.
//!
//! Each function feeds untrusted bytes through the same code a client's bytes reach, and
//! panics only when an invariant the rest of the proxy relies on is broken (a body over its
//! limit, an error with no answer, a forged session id that opens). Nothing here is used by
//! the proxy itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};

use crate::http::{HttpError, Limits, ServerConn};
use crate::mcp::session::token::SessionKey;

/// A peer that sends `input` in pieces of `step` bytes, then closes; writes are discarded.
struct Replay {
    input: Vec<u8>,
    pos: usize,
    step: usize,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = self.step.min(buf.len()).min(self.input.len() - self.pos);
        let from = self.pos;
        buf[..n].copy_from_slice(&self.input[from..from + n]);
        self.pos += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    /// One executor per thread for every input: the server's reads arm glommio timers.
    static EXECUTOR: glommio::LocalExecutor = glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap_or_else(|e| panic!("cannot start a glommio executor for fuzzing: {e}"));
}

/// Reads every request in `data` the way a client connection is read. The first byte picks
/// how many bytes each read returns (1 to 64), so partial reads are explored too.
pub fn http_request(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_head_bytes: 2048,
        max_headers: 16,
        max_body_bytes: 4096,
        head_timeout: Duration::from_secs(3600),
        body_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(3600),
    };
    let stream = Replay {
        input: rest.to_vec(),
        pos: 0,
        step: usize::from(first % 64) + 1,
    };
    EXECUTOR.with(|ex| {
        ex.run(async {
            let mut conn = ServerConn::new(stream);
            loop {
                match conn.read_request(&limits).await {
                    Ok(Some(req)) => {
                        assert!(
                            req.body.len() <= limits.max_body_bytes,
                            "body over its limit"
                        );
                        assert!(req.header_count() <= limits.max_headers);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // Every fault but a vanished peer gets an answer.
                        let silent = matches!(e, HttpError::Truncated | HttpError::Io(_));
                        assert!(silent || e.status().is_some(), "no status for {e:?}");
                        assert!(!matches!(e, HttpError::Timeout(_)), "a replay never stalls");
                        break;
                    }
                }
            }
        })
    });
}

/// Parses and classifies `data` as a JSON-RPC message, as every POST body is.
pub fn jsonrpc(data: &[u8]) {
    let mut buf = data.to_vec();
    let deep =
        !crate::protocol::depth::json_depth_within(data, crate::protocol::depth::max_json_depth());
    match crate::protocol::jsonrpc::parse(&mut buf) {
        Ok(msg) => {
            assert!(!deep, "a message over the depth limit was parsed");
            if let Ok(crate::protocol::jsonrpc::Kind::Request { id, .. }) =
                crate::protocol::jsonrpc::classify(&msg)
            {
                // Ids are echoed back into replies: writing one must give valid JSON.
                let mut out = Vec::new();
                id.write_json(&mut out);
                assert!(simd_json::to_borrowed_value(&mut out).is_ok(), "id {id:?}");
            }
        }
        Err(e) => {
            assert!(e.code() < 0);
        }
    };
}

/// Opens `data` as a session id, and as the plaintext of a genuinely sealed one.
pub fn session_token(data: &[u8]) {
    let key = SessionKey::from_hex(&"5a".repeat(32)).unwrap_or_else(|_| unreachable!());
    // Forged ids: nothing a client makes up may open.
    let text = String::from_utf8_lossy(data);
    assert!(key.open(&text).is_none(), "a forged id opened: {text:?}");
    // Sealed garbage: what follows decryption must take any plaintext without panicking, and
    // whatever opens must seal and open again to the same claims.
    let shard = data.first().copied().unwrap_or(0);
    let id = key.seal_raw(shard, data);
    if let Some(claims) = key.open(&id) {
        assert_eq!(claims.shard, shard);
        assert_eq!(key.open(&key.seal(&claims)), Some(claims));
    }
}

/// A client's message as the proxy checks it, against the bytes it forwards as their receiver
/// reads them: every message either route accepts must mean the same to a peer that keeps the
/// last of repeated member names (JavaScript's `JSON.parse`, Python's `json`, serde here) as it
/// did to the proxy, which reads the first.
///
/// `data` goes through the byte splice (`splice::request`, then its rewrite of the id and of
/// `params.name`/`params.uri`, as `routing::spliced` does) and through the full parse
/// (`jsonrpc::parse`, `classify`, then the id and that member set on the tree and re-encoded, as
/// `routing::request` and `forward::request` do), and as an upstream answer through
/// `splice::answer`. For each output: the proxy's reading of `data` (its tree, first member of a
/// name wins, with the rewrites applied) must equal the receiver's reading of the output; a
/// message the splice takes must also pass the full parse, with the same id, method and name.
pub fn forwarded_meaning(data: &[u8]) {
    use crate::protocol::jsonrpc::{self, Id, Kind};
    use crate::protocol::splice;
    use simd_json::prelude::*;

    let target = |method: &str| match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    };
    // The server's own name: quotes, a backslash, a control character and non-ASCII, so the
    // rewrite's escaping is exercised too.
    let server_name = |exposed: &str| format!("up\"\\\u{1}é/{exposed}");
    let upstream_id = if data.len() % 2 == 0 {
        Id::Num(-88)
    } else {
        Id::Str("p-\"7\"".into())
    };

    let mut buf = data.to_vec();
    let tree = jsonrpc::parse(&mut buf).ok();
    let view = tree.as_ref().map(first_wins);

    // The full parse, as a request, notification or response is forwarded after it.
    if let (Some(mut msg), Some(mut expected)) = (tree.clone(), view.clone()) {
        let shape = match jsonrpc::classify(&msg) {
            Ok(Kind::Request { method, .. }) => Some((target(method), true)),
            Ok(Kind::Notification { .. }) => Some((None, false)),
            Ok(Kind::Response { .. }) => Some((None, true)),
            Err(_) => None,
        };
        if let Some((field, has_id)) = shape {
            let name = field.and_then(|f| {
                let exposed = msg.get("params")?.get_str(f)?;
                Some((f, server_name(exposed)))
            });
            if let Some((field, original)) = name {
                expected["params"][field] = serde_json::Value::from(original.as_str());
                if let Some(params) = msg.get_mut("params") {
                    crate::protocol::jsonrpc::set_member(params, field, original.into());
                }
            }
            if has_id {
                crate::protocol::jsonrpc::set_member(&mut msg, "id", upstream_id.to_value());
                expected["id"] = id_json(&upstream_id);
            }
            let out = jsonrpc::to_bytes(&msg);
            assert_same(&expected, &out, "re-encoded");
        }
    }

    // The byte splice of a request.
    let max_depth = crate::protocol::depth::max_json_depth();
    if let Some(peeked) = splice::request(data, max_depth, |m| target(m).is_some()) {
        let (Some(tree), Some(view)) = (&tree, &view) else {
            panic!("the splice took a message the full parse refuses");
        };
        match jsonrpc::classify(tree) {
            Ok(Kind::Request { id, method }) => {
                assert_eq!(
                    (&id, method),
                    (&peeked.id, peeked.method),
                    "splice and parse differ"
                );
            }
            other => panic!("the splice took a request the full parse reads as {other:?}"),
        }
        let field = target(peeked.method).unwrap_or_else(|| unreachable!("taken above"));
        if let Some((span, exposed)) = peeked.param_str(data, field) {
            assert_eq!(
                tree.get("params").and_then(|p| p.get_str(field)),
                Some(exposed),
                "the splice and the full parse read different names"
            );
            let original = server_name(exposed);
            let out = peeked.rewrite(data, &upstream_id, span, &original);
            let mut expected = view.clone();
            expected["params"][field] = serde_json::Value::from(original);
            expected["id"] = id_json(&upstream_id);
            assert_same(&expected, &out, "spliced request");
        }
    }

    // The byte splice of an answer, its id given back to the client.
    let down = Id::Str("client-\u{e9}".into());
    let up = splice::top_level(data)
        .and_then(|t| t.id)
        .and_then(|span| std::str::from_utf8(&data[span]).ok())
        .and_then(|text| match text.strip_prefix('"') {
            Some(quoted) => quoted.strip_suffix('"').map(|s| Id::Str(s.to_owned())),
            None => text.parse().ok().map(Id::Num),
        });
    if let Some(out) = up.and_then(|up| splice::answer(data, &up, &down)) {
        let Some(view) = &view else {
            panic!("the splice relayed an answer the full parse refuses");
        };
        let mut expected = view.clone();
        expected["id"] = id_json(&down);
        assert_same(&expected, &out, "spliced answer");
    }
}

/// The proxy's reading of a parsed message: where an object names a member twice, the first,
/// which is what its lookups return.
fn first_wins(v: &simd_json::BorrowedValue<'_>) -> serde_json::Value {
    use simd_json::{BorrowedValue as Value, StaticNode};
    match v {
        Value::Static(StaticNode::Null) => serde_json::Value::Null,
        Value::Static(StaticNode::Bool(b)) => serde_json::Value::Bool(*b),
        Value::Static(StaticNode::I64(n)) => serde_json::Value::from(*n),
        Value::Static(StaticNode::U64(n)) => serde_json::Value::from(*n),
        Value::Static(StaticNode::F64(f)) => serde_json::Value::from(*f),
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(first_wins).collect()),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, member) in map.iter() {
                let name: &str = k;
                if !out.contains_key(name) {
                    out.insert(name.to_owned(), first_wins(member));
                }
            }
            serde_json::Value::Object(out)
        }
    }
}

fn id_json(id: &crate::protocol::jsonrpc::Id) -> serde_json::Value {
    match id {
        crate::protocol::jsonrpc::Id::Num(n) => serde_json::Value::from(*n),
        crate::protocol::jsonrpc::Id::Str(s) => serde_json::Value::from(s.as_str()),
    }
}

/// Reads `out` as its receiver does (serde: the last of repeated names wins) and compares it
/// with what the proxy meant to send.
fn assert_same(expected: &serde_json::Value, out: &[u8], what: &str) {
    let received: serde_json::Value = serde_json::from_slice(out).unwrap_or_else(|e| {
        panic!(
            "{what}: the receiver cannot read the forwarded bytes ({e}): {}",
            String::from_utf8_lossy(out)
        )
    });
    assert!(
        same_meaning(expected, &received),
        "{what}: the proxy checked {expected} but forwarded {received}"
    );
}

/// Equal as JSON values, numbers by value: an integer written as a float is the same number,
/// and floats may differ in their last bits. simd-json reads a mantissa of more than 19 digits
/// an ulp or so away from a correctly rounded parser (serde), and re-encodes what it read; the
/// proxy decides nothing on a float's value, and this target is about which members a message
/// has and what its strings and integers say.
fn same_meaning(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => {
                        (x - y).abs() <= 8.0 * f64::EPSILON * x.abs().max(y.abs())
                    }
                    _ => false,
                },
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_meaning(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_meaning(v, w)))
        }
        _ => a == b,
    }
}
