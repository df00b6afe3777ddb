//! Rewriting what an upstream sends so it makes sense to the downstream client.
//!
//! Upstream ids mean nothing to the client: responses get the client's id back, and the
//! server's own requests get a proxy id unique in the session (servers all start at 0, so
//! their ids collide). Resource URIs get the server's prefix, in notifications and in results
//! (`protocol::result_uris`). `list_changed` is not passed
//! on as is: the proxy re-discovers the server and announces its own merged change.

use std::rc::Rc;

use bytes::Bytes;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use crate::mcp::session::Session;
use crate::protocol::jsonrpc::{self, set_member as set, Id};
use crate::protocol::{names, result_uris, splice};
use crate::upstream::table::ShardUpstreams;

/// What to do with one upstream message.
pub enum Relayed {
    /// The answer to the request being relayed (id already rewritten).
    Final(Bytes),
    /// A message for the client (notification or server-to-client request).
    Message(Bytes),
    /// Nothing for the client.
    Nothing,
}

impl Relayed {
    /// The bytes for the client, when there are any and this is not a final answer.
    pub fn into_message(self) -> Option<Bytes> {
        match self {
            Relayed::Message(b) => Some(b),
            _ => None,
        }
    }
}

/// Rewrites one message from `server`. `exchange` is `(upstream id, client id)` of the request
/// whose stream carried it, if any.
pub fn from_upstream(
    session: &Rc<Session>,
    server: usize,
    exchange: Option<(&Id, &Id)>,
    message: &[u8],
) -> Relayed {
    // The server's resource URIs in a result get its prefix, so the client can read them back.
    let prefix = result_uris::may_hold_uris(message)
        .then(|| {
            session
                .shard()
                .and_then(|s| s.upstreams().get(server).map(|u| u.config().prefix.clone()))
        })
        .flatten()
        .unwrap_or_default();
    let maps_uris = !prefix.is_empty();
    if let Some((up, down)) = exchange.filter(|_| !maps_uris) {
        // The common case needs no parse of the result, however large.
        if let Some(answer) = splice::answer(message, up, down) {
            return Relayed::Final(Bytes::from(answer));
        }
    }
    let mut buf = message.to_vec();
    let mut msg = match jsonrpc::parse(&mut buf) {
        Ok(msg) => msg,
        // A repeated member name lands here too: relayed, it could mean one thing to the proxy
        // and another to the client.
        Err(e) => {
            log::warn!("upstream #{server} sent a message that cannot be relayed ({e}); dropped");
            return Relayed::Nothing;
        }
    };
    let method = msg.get_str("method").map(str::to_owned);
    let id = msg.get("id").and_then(Id::from_value);
    match (method.as_deref(), id) {
        (None, Some(id)) => match exchange {
            Some((up, down)) if *up == id => {
                set(&mut msg, "id", down.to_value());
                if maps_uris {
                    result_uris::prefix_result_uris(&mut msg, &prefix);
                }
                Relayed::Final(jsonrpc::to_bytes(&msg))
            }
            _ => Relayed::Nothing,
        },
        (None, None) => match exchange {
            // An error about a request the server could not parse: it is about ours.
            Some((_, down)) if msg.contains_key("error") => {
                set(&mut msg, "id", down.to_value());
                Relayed::Final(jsonrpc::to_bytes(&msg))
            }
            _ => Relayed::Nothing,
        },
        (Some(_), Some(upstream_id)) => {
            let proxy_id = session.register_pending(server, upstream_id);
            set(&mut msg, "id", proxy_id.to_value());
            Relayed::Message(jsonrpc::to_bytes(&msg))
        }
        (Some(method), None) => notification(session, server, method, msg),
    }
}

fn notification(session: &Rc<Session>, server: usize, method: &str, mut msg: Value<'_>) -> Relayed {
    match method {
        "notifications/tools/list_changed"
        | "notifications/prompts/list_changed"
        | "notifications/resources/list_changed" => {
            if let Some(shard) = session.shard() {
                shard.request_rediscovery(server);
            }
            Relayed::Nothing
        }
        "notifications/cancelled" => {
            let upstream_id = msg
                .get("params")
                .and_then(|p| p.get("requestId"))
                .and_then(Id::from_value);
            let Some(proxy_id) = upstream_id.and_then(|u| session.pending_proxy_id(server, &u))
            else {
                return Relayed::Nothing;
            };
            session.take_pending(&proxy_id);
            if let Some(params) = msg.get_mut("params") {
                set(params, "requestId", proxy_id.to_value());
            }
            Relayed::Message(jsonrpc::to_bytes(&msg))
        }
        "notifications/resources/updated" => {
            let prefix = session
                .shard()
                .and_then(|s| s.upstreams().get(server).map(|u| u.config().prefix.clone()));
            let uri = msg
                .get("params")
                .and_then(|p| p.get_str("uri"))
                .map(str::to_owned);
            if let (Some(prefix), Some(uri), Some(params)) = (prefix, uri, msg.get_mut("params")) {
                set(params, "uri", Value::from(names::prefix_uri(&prefix, &uri)));
            }
            Relayed::Message(jsonrpc::to_bytes(&msg))
        }
        _ => Relayed::Message(jsonrpc::to_bytes(&msg)),
    }
}
