//! What each MCP method does: answered by the proxy, merged across servers, or sent to one.
//!
//! - [`relay`]: rewriting upstream messages for the client (ids, URIs).
//! - [`forward`]: sending one request to its server and relaying the conversation back.
//! - [`aggregate`]: the merged lists and their pagination.
//!
//! Routing works on parsed JSON-RPC and a session; it knows nothing of HTTP.

pub mod aggregate;
pub mod forward;
pub mod relay;

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
use crate::shard::Shard;
use crate::upstream::table::ShardUpstreams;

/// How the transport should answer a POSTed message.
pub enum Answer {
    /// One JSON-RPC message.
    Json(Bytes),
    /// A notification or response was taken (202).
    Accepted,
    /// The body was not a valid JSON-RPC message (400 with this error).
    BadRequest(Bytes),
    /// Stream this session stream to the client (SSE).
    Stream(u64),
    /// End the exchange without a JSON-RPC message (the request was cancelled).
    Silent,
}

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
pub fn server_capabilities(catalog: &crate::registry::Catalog) -> String {
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
        Err(e) => return Answer::BadRequest(jsonrpc::error_body(None, e.code(), &e.to_string())),
    };
    let kind = match jsonrpc::classify(&msg) {
        Ok(k) => k,
        Err(e) => {
            let id = msg.get("id").and_then(Id::from_value);
            return Answer::BadRequest(jsonrpc::error_body(id.as_ref(), e.code(), &e.to_string()));
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
    let target = |method: &str| match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    };
    let depth = crate::protocol::depth::max_json_depth();
    let peeked = crate::protocol::splice::request(body, depth, |m| target(m).is_some())?;
    let (span, exposed) = peeked.param_str(body, target(peeked.method)?)?;
    let catalog = shard.catalog();
    let (server, original) = match peeked.method {
        "tools/call" if !orchestration::is_own_tool(exposed) => catalog
            .tool(exposed)
            .filter(|(s, _)| crate::auth::shows_tool(session, &catalog, *s, exposed)),
        "prompts/get" => catalog
            .prompt(exposed)
            .filter(|(s, _)| crate::auth::shows_server(session, &catalog, *s)),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe"
            if !orchestration::is_own_resource(exposed) =>
        {
            catalog
                .resource(exposed)
                .filter(|(s, _)| crate::auth::shows_server(session, &catalog, *s))
        }
        _ => None,
    }?;
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
    // The proxy's own tools and resources (the `proxy` namespace is reserved in the config).
    // A client whose policy hides them gets the answer for a name that does not exist.
    let params = msg.get("params");
    if let Some(name) = params
        .and_then(|p| p.get_str("name"))
        .filter(|n| method == "tools/call" && orchestration::is_own_tool(n))
    {
        if !crate::auth::permits_tool(session, &catalog, usize::MAX, name) {
            let message = format!("unknown tool: {name}");
            return local(
                method,
                Answer::Json(jsonrpc::error_body(
                    Some(&id),
                    code::INVALID_PARAMS,
                    &message,
                )),
            );
        }
        let answer = orchestration::call_tool(shard, session, id, &msg, delivery.accepts_sse).await;
        return local(method, answer);
    }
    if let Some(uri) = params
        .and_then(|p| p.get_str("uri"))
        .filter(|u| method == "resources/read" && orchestration::is_own_resource(u))
    {
        if !crate::auth::permits_server(session, &catalog, usize::MAX) {
            let message = format!("unknown resource: {uri}");
            return local(
                method,
                Answer::Json(jsonrpc::error_body(
                    Some(&id),
                    code::INVALID_PARAMS,
                    &message,
                )),
            );
        }
        return local(method, orchestration::read_resource(shard, &id, &msg).await);
    }
    let target = match method {
        "ping" => return local(method, Answer::Json(jsonrpc::result_body(&id, b"{}"))),
        "initialize" => {
            let answer = Answer::Json(jsonrpc::error_body(
                Some(&id),
                code::INVALID_REQUEST,
                "the session is already initialized",
            ));
            return local(method, answer);
        }
        "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
            let kind = match method {
                "tools/list" => ListKind::Tools,
                "prompts/list" => ListKind::Prompts,
                "resources/list" => ListKind::Resources,
                _ => ListKind::ResourceTemplates,
            };
            let answer = aggregate::list(shard, session, &catalog, &id, &msg, kind).await;
            return local(method, answer);
        }
        "logging/setLevel" => {
            return local(
                method,
                forward::set_level(session, &catalog, &id, &msg).await,
            )
        }
        "tools/call" => by_name(&catalog, &mut msg, "name", "tool", |n| {
            owned(catalog.tool(n))
                .filter(|(s, _)| crate::auth::permits_tool(session, &catalog, *s, n))
        }),
        "prompts/get" => by_name(&catalog, &mut msg, "name", "prompt", |n| {
            owned(catalog.prompt(n))
                .filter(|(s, _)| crate::auth::permits_server(session, &catalog, *s))
        }),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            by_name(&catalog, &mut msg, "uri", "resource", |u| {
                owned(catalog.resource(u))
                    .filter(|(s, _)| crate::auth::permits_server(session, &catalog, *s))
            })
        }
        "completion/complete" => match crate::auth::hidden_reference(session, &catalog, &msg) {
            Some(message) => Err(message),
            None => completion_target(&mut msg, &catalog),
        },
        _ => {
            let answer = Answer::Json(jsonrpc::error_body(
                Some(&id),
                code::METHOD_NOT_FOUND,
                &format!("method not found: {method}"),
            ));
            return local(method, answer);
        }
    };
    match target {
        Ok(server) => forward::request(session, server, id, msg, delivery).await,
        Err(message) => local(
            method,
            Answer::Json(jsonrpc::error_body(
                Some(&id),
                code::INVALID_PARAMS,
                &message,
            )),
        ),
    }
}

/// Counts an answer the proxy gave itself (no upstream involved) and returns it.
fn local(method: &str, answer: Answer) -> Answer {
    crate::metrics::local::answered(method, &answer);
    answer
}

/// Finds the server behind `params.{field}` and rewrites the field to the server's own name.
fn by_name(
    catalog: &crate::registry::Catalog,
    msg: &mut Value<'_>,
    field: &'static str,
    what: &str,
    lookup: impl Fn(&str) -> Option<(usize, String)>,
) -> Result<usize, String> {
    let Some(params) = msg.get_mut("params").filter(|p| p.is_object()) else {
        return Err(format!("missing params: the {what} {field} is required"));
    };
    let Some(exposed) = params.get_str(field) else {
        return Err(format!(
            "missing params.{field}: the {what} {field} is required"
        ));
    };
    let Some((server, original)) = lookup(exposed) else {
        return Err(format!(
            "unknown {what}: {exposed}{}",
            down_hint(catalog, exposed)
        ));
    };
    relay::set(params, field, Value::from(original));
    Ok(server)
}

/// `completion/complete` names a prompt or a resource inside `params.ref`.
fn completion_target(
    msg: &mut Value<'_>,
    catalog: &crate::registry::Catalog,
) -> Result<usize, String> {
    let reference = msg
        .get_mut("params")
        .and_then(|p| p.get_mut("ref"))
        .filter(|r| r.is_object());
    let Some(reference) = reference else {
        return Err("missing params.ref".into());
    };
    match reference.get_str("type") {
        Some("ref/prompt") => {
            let Some(name) = reference.get_str("name") else {
                return Err("missing params.ref.name".into());
            };
            let (server, original) = catalog
                .prompt(name)
                .ok_or_else(|| format!("unknown prompt: {name}"))?;
            let original = original.to_owned();
            relay::set(reference, "name", Value::from(original));
            Ok(server)
        }
        Some("ref/resource") => {
            let Some(uri) = reference.get_str("uri") else {
                return Err("missing params.ref.uri".into());
            };
            let (server, original) = catalog
                .resource(uri)
                .ok_or_else(|| format!("unknown resource: {uri}"))?;
            let original = original.to_owned();
            relay::set(reference, "uri", Value::from(original));
            Ok(server)
        }
        _ => Err("params.ref.type must be ref/prompt or ref/resource".into()),
    }
}

/// Why a name may be unknown: its prefix names a server that is down.
fn down_hint(catalog: &crate::registry::Catalog, exposed: &str) -> String {
    let down = catalog.servers.iter().zip(&catalog.status).find(|(s, _)| {
        !s.prefix.is_empty()
            && (exposed.starts_with(&format!("{}__", s.prefix))
                || exposed.starts_with(&format!("{}+", s.prefix)))
    });
    match down {
        Some((s, crate::registry::ServerStatus::Down(why))) if why == "draining" => format!(
            " (server {} is drained and takes no new work; `mcpctl servers enable {}` offers it again)",
            s.name, s.name
        ),
        Some((s, crate::registry::ServerStatus::Down(why))) => {
            format!(" (server {} is unavailable: {why})", s.name)
        }
        Some((s, crate::registry::ServerStatus::Pending)) => {
            format!(" (server {} has not been reached yet)", s.name)
        }
        _ => String::new(),
    }
}

fn owned(found: Option<(usize, &str)>) -> Option<(usize, String)> {
    found.map(|(server, original)| (server, original.to_owned()))
}
