//! What each MCP method does: answered by the proxy, merged across servers, or sent to one.
//!
//! - [`answer`]: the one answer type both eras and both endpoints use.
//! - [`target`]: which server a named tool, prompt or resource goes to, under the session's
//!   policy (one check for the spliced and the parsed route).
//! - [`relay`]: rewriting upstream messages for the client (ids, URIs).
//! - [`forward`]: sending one request to its server and relaying the conversation back.
//! - [`aggregate`]: the merged lists and their pagination.
//! - [`own_tools`]: the proxy's own tools, called with the session as their caller.
//!
//! Routing works on parsed JSON-RPC (or, for plain named requests, on spliced bytes) and a
//! session; it knows nothing of HTTP.

pub mod aggregate;
pub mod answer;
pub mod forward;
pub mod own_tools;
pub mod relay;
pub mod target;

pub use answer::Answer;

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use crate::mcp::session::token::NO_BINDING;
use crate::mcp::session::Session;
use crate::mcp::session::ShardSessions;
use crate::orchestration;
use crate::protocol::cursor::ListKind;
use crate::protocol::jsonrpc::{self, code, Id, Kind};
use crate::protocol::version;
use crate::registry::Catalog;
use crate::shard::Shard;
use crate::upstream::table::ShardUpstreams;
use target::{Refusal, Target};

/// Opens a session for an `initialize` request and returns the answer to send.
pub fn initialize(
    shard: &Rc<Shard>,
    id: &Id,
    msg: &Value<'_>,
    opening: Option<crate::auth::Opening>,
) -> Result<(Rc<Session>, Bytes), Bytes> {
    let Some(params) = msg.get("params").filter(|p| p.is_object()) else {
        return Err(jsonrpc::error_body(
            Some(id),
            code::INVALID_PARAMS,
            "initialize needs params",
        ));
    };
    let negotiated = version::negotiate(params.get_str("protocolVersion"));
    let capabilities = params
        .get("capabilities")
        .map(|c| c.encode())
        .unwrap_or_else(|| "{}".into());
    let client_info = params
        .get("clientInfo")
        .map(|c| c.encode())
        .unwrap_or_else(|| r#"{"name":"unknown-client","version":"0"}"#.into());
    // Upstream sessions are opened with the client's own capabilities and identity, so servers
    // offer it exactly what they would offer it directly.
    let upstream_params = format!(
        r#"{{"protocolVersion":"{negotiated}","capabilities":{capabilities},"clientInfo":{client_info}}}"#
    );
    let upstream_params = Bytes::from(upstream_params);
    // Replicas are chosen now, while the balancer's view is fresh, and sealed into the id, so
    // the session keeps them across a proxy restart.
    let bindings: Vec<u8> = (0..shard.upstreams().len())
        .map(|i| shard.upstreams().get(i))
        .map(|u| {
            u.and_then(|u| u.pick_binding())
                .and_then(|r| u8::try_from(r).ok())
                .unwrap_or(NO_BINDING)
        })
        .collect();
    let principal = opening.as_ref().map_or(&[][..], |o| o.principal());
    let session_id = shard.new_session_id(negotiated, &upstream_params, &bindings, principal);
    let session = Session::new(
        shard,
        session_id,
        negotiated.to_owned(),
        upstream_params,
        bindings,
    );
    session.auth.bind(opening);
    shard.add_session(session.clone());
    let caps = server_capabilities(&shard.catalog());
    let result = format!(
        r#"{{"protocolVersion":"{negotiated}","capabilities":{caps},"serverInfo":{{"name":"mcp-proxy","version":"{}"}},"instructions":"{INSTRUCTIONS}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    log::debug!("session {} opened ({negotiated})", session.id);
    Ok((session, jsonrpc::result_body(id, result.as_bytes())))
}

/// What the proxy tells clients about its names (JSON-escaped already).
pub const INSTRUCTIONS: &str = "A gateway aggregating several MCP servers. Tool and prompt names are prefixed with their server's name and two underscores; resource URIs with the server's name and '+'.";

/// The proxy's capabilities, from what the servers behind it declare.
pub fn server_capabilities(catalog: &Catalog) -> String {
    let mut caps = String::from(
        r#"{"tools":{"listChanged":true},"prompts":{"listChanged":true},"resources":{"listChanged":true"#,
    );
    if catalog.any_declares("resources", Some("subscribe")) {
        caps.push_str(r#","subscribe":true"#);
    }
    caps.push('}');
    if catalog.any_declares("logging", None) {
        caps.push_str(r#","logging":{}"#);
    }
    if catalog.any_declares("completions", None) {
        caps.push_str(r#","completions":{}"#);
    }
    caps.push('}');
    caps
}

/// Handles one POSTed message of an established session.
pub async fn handle(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    body: Bytes,
    accepts_sse: bool,
    received: Instant,
) -> Answer {
    if let Some(answer) = spliced(shard, session, &body, accepts_sse, received) {
        return answer.await;
    }
    let mut buf = body.to_vec();
    let msg = match jsonrpc::parse(&mut buf) {
        Ok(m) => m,
        Err(e) => return Answer::Refused(jsonrpc::error_body(None, e.code(), &e.to_string())),
    };
    let kind = match jsonrpc::classify(&msg) {
        Ok(k) => k,
        Err(e) => {
            let id = msg.get("id").and_then(Id::from_value);
            return Answer::Refused(jsonrpc::error_body(id.as_ref(), e.code(), &e.to_string()));
        }
    };
    match kind {
        Kind::Request { id, method } => {
            let method = method.to_owned();
            let delivery = forward::Delivery {
                accepts_sse,
                received,
            };
            request(shard, session, id, &method, msg, delivery).await
        }
        Kind::Notification { method } => {
            let method = method.to_owned();
            forward::client_notification(session, &method, msg).await;
            Answer::Accepted
        }
        Kind::Response { id } => {
            if let Some(id) = id {
                forward::client_response(session, &id, msg).await;
            }
            Answer::Accepted
        }
    }
}

/// The common case without a tree: a plain request that names an upstream tool, prompt or
/// resource the session may use, rewritten in its bytes (`splice::request`). `None` leaves the
/// message to the full parse, which also gives every error (unknown or hidden names included)
/// and counts policy refusals: checks here must not count, or each refusal counts twice.
fn spliced<'a>(
    shard: &'a Rc<Shard>,
    session: &'a Rc<Session>,
    body: &'a [u8],
    accepts_sse: bool,
    received: Instant,
) -> Option<impl std::future::Future<Output = Answer> + 'a> {
    let field = |method: &str| target::named_field(method).map(|(field, _)| field);
    let depth = crate::protocol::depth::max_json_depth();
    let peeked = crate::protocol::splice::request(body, depth, |m| field(m).is_some())?;
    let (span, exposed) = peeked.param_str(body, field(peeked.method)?)?;
    let catalog = shard.catalog();
    let Target::Upstream(server, original) = target::target(
        session,
        &catalog,
        peeked.method,
        exposed,
        Refusal::Uncounted,
    ) else {
        return None;
    };
    let original = original.to_owned();
    Some(async move {
        let delivery = forward::Delivery {
            accepts_sse,
            received,
        };
        forward::request_spliced(session, server, body, peeked, span, &original, delivery).await
    })
}

/// Routes one parsed request of `session` (also used by the stateless bridge).
pub(crate) async fn request(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    id: Id,
    method: &str,
    mut msg: Value<'_>,
    delivery: forward::Delivery,
) -> Answer {
    let catalog = shard.catalog();
    let answer = match route(session, &catalog, method, &mut msg) {
        Route::Upstream(server) => {
            return forward::request(session, server, id, msg, delivery).await
        }
        Route::OwnTool => own_tools::call(shard, session, id, &msg, delivery.accepts_sse).await,
        Route::OwnResource => Answer::Json(orchestration::read_resource(shard, &id, &msg).await),
        Route::List(kind) => aggregate::list(shard, session, &catalog, &id, &msg, kind).await,
        Route::SetLevel => forward::set_level(session, &catalog, &id, &msg).await,
        Route::Ping => Answer::Json(jsonrpc::result_body(&id, b"{}")),
        Route::Error(code, message) => Answer::Json(jsonrpc::error_body(Some(&id), code, &message)),
    };
    // Every answer the proxy gives itself, without an upstream, is counted here.
    crate::metrics::local::answered(method, answer.outcome());
    answer
}

/// Who answers a parsed request.
enum Route {
    /// The server at this index (names in the message already rewritten to its own).
    Upstream(usize),
    /// The proxy's own tool named in `params.name`.
    OwnTool,
    /// The proxy's own resource named in `params.uri`.
    OwnResource,
    /// The merged list of this kind.
    List(ListKind),
    /// `logging/setLevel`, sent on to every server of the session.
    SetLevel,
    /// `ping`.
    Ping,
    /// The proxy refuses it with this JSON-RPC error code and message.
    Error(i32, String),
}

/// Where a parsed request of `method` goes. The proxy's own tools and resources (the `proxy`
/// namespace is reserved in the config) are found by name like any other; a client whose
/// policy hides a name gets the answer for a name that does not exist.
fn route(session: &Session, catalog: &Catalog, method: &str, msg: &mut Value<'_>) -> Route {
    let named = |found: Result<Option<usize>, String>, own: Route| match found {
        Ok(Some(server)) => Route::Upstream(server),
        Ok(None) => own,
        Err(message) => Route::Error(code::INVALID_PARAMS, message),
    };
    match method {
        "ping" => Route::Ping,
        "initialize" => Route::Error(
            code::INVALID_REQUEST,
            "the session is already initialized".into(),
        ),
        "tools/list" => Route::List(ListKind::Tools),
        "prompts/list" => Route::List(ListKind::Prompts),
        "resources/list" => Route::List(ListKind::Resources),
        "resources/templates/list" => Route::List(ListKind::ResourceTemplates),
        "logging/setLevel" => Route::SetLevel,
        "tools/call" => named(
            target::by_name(session, catalog, method, msg),
            Route::OwnTool,
        ),
        "prompts/get" | "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            named(
                target::by_name(session, catalog, method, msg),
                Route::OwnResource,
            )
        }
        "completion/complete" => {
            let found = match session.auth.hidden_reference(catalog, msg) {
                Some(message) => Err(message),
                None => target::completion_target(msg, catalog),
            };
            match found {
                Ok(server) => Route::Upstream(server),
                Err(message) => Route::Error(code::INVALID_PARAMS, message),
            }
        }
        _ => Route::Error(
            code::METHOD_NOT_FOUND,
            format!("method not found: {method}"),
        ),
    }
}
