//! The admin API: JSON under `/api/v1/`, behind a bearer token (see `docs/admin-api.md`).
//!
//! One `match` on method and path segments ([`handle`]); each arm builds its answer from the
//! shard's registry and catalog (shard 0 owns both, so nothing is asked of other shards).
//! Answers are built with `serde_json`: this is not the hot path, and it keeps escaping right.

use std::rc::Rc;

use serde_json::{json, Value};
use simd_json::prelude::*;

use super::{servers, stats, Response};
use crate::http::{Method, Request};
use crate::orchestration::ShardOrchestration;
use crate::protocol::cursor::ListKind;
use crate::registry::servers::{Entry, RegistryError, ServerState};
use crate::registry::ServerStatus;
use crate::shard::Shard;
use crate::upstream::table::ShardUpstreams;

/// Path prefix of every API route.
pub const PREFIX: &str = "/api/v1/";

/// Whether `token` matches the configured one, in time independent of where they differ
/// (the length may leak; the token's bytes do not).
pub fn token_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of `request`, if it sent one.
fn bearer(request: &Request) -> Option<&str> {
    let value = request.header("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A JSON answer.
pub(crate) fn answer(status: u16, body: Value) -> Response {
    Response::json(status, body.to_string())
}

/// An error answer: `{"error": message, "kind": kind}`.
pub(crate) fn error(status: u16, kind: &str, message: impl std::fmt::Display) -> Response {
    answer(status, json!({"error": message.to_string(), "kind": kind}))
}

/// The answer to a refused registry change or lookup.
pub(crate) fn registry_error(e: &RegistryError) -> Response {
    match e {
        RegistryError::NotFound { known, .. } => answer(
            404,
            json!({"error": e.to_string(), "kind": "not_found", "known": known}),
        ),
        RegistryError::NoReplica { count, .. } => answer(
            404,
            json!({"error": e.to_string(), "kind": "not_found", "replicas": count}),
        ),
        RegistryError::Conflict(_) => error(409, "conflict", e),
        RegistryError::InvalidSpec(_) | RegistryError::NotApplicable(_) => error(400, "invalid", e),
        RegistryError::State { .. } => error(500, "state", e),
        RegistryError::Shared(_) => error(503, "etcd_unavailable", e),
        // etcd answered; what it holds needs an operator, so not 503 (which invites a retry).
        RegistryError::SharedUnreadable(_) => error(500, "shared_registry_unreadable", e),
    }
}

/// The 401 answer when `request` does not carry the admin `token`.
pub(crate) fn refuse_unauthorized(token: &str, request: &Request) -> Option<Response> {
    match bearer(request) {
        Some(t) if token_matches(token, t) => None,
        Some(_) => Some(error(
            401,
            "unauthorized",
            "wrong admin token: use the one in the file mcp-proxy names at start \
             (`mcp-proxy admin token: in FILE`) or set in [proxy] admin_token",
        )),
        None => Some(error(
            401,
            "unauthorized",
            "missing token: send Authorization: Bearer <admin token>",
        )),
    }
}

/// Answers an API request (any path under [`PREFIX`]).
pub async fn handle(shard: &Rc<Shard>, token: &str, request: &Request) -> Response {
    if let Some(refused) = refuse_unauthorized(token, request) {
        return refused;
    }
    let path = request
        .path()
        .trim_start_matches(PREFIX)
        .trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    let query = request.query().unwrap_or("");
    let method = match &request.method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Other(m) => m.as_str(),
        _ => "OTHER",
    };
    match (method, segments.as_slice()) {
        ("GET", ["version"]) => answer(
            200,
            json!({"name": "mcp-proxy", "version": env!("CARGO_PKG_VERSION")}),
        ),
        ("GET", ["servers"]) => {
            let reg = shard.registry();
            let list: Vec<Value> = reg
                .live()
                .map(|(i, e)| server_json(shard, i, e, false))
                .collect();
            answer(200, json!({"version": reg.version, "servers": list}))
        }
        ("GET", ["servers", name]) => match shard.registry().get(name) {
            Ok((i, e)) => answer(200, server_json(shard, i, e, true)),
            Err(e) => registry_error(&e),
        },
        ("POST", ["servers"]) => match parse_body(request) {
            Ok(spec) => changed(shard, servers::add(shard, &spec).await, 201),
            Err(r) => r,
        },
        ("PUT", ["servers", name]) => match parse_body(request) {
            Ok(spec) => changed(shard, servers::update(shard, name, &spec).await, 200),
            Err(r) => r,
        },
        ("PATCH", ["servers", name]) => match parse_body(request) {
            Ok(fields) => match servers::patched_spec(shard, name, &fields) {
                Ok(spec) => changed(shard, servers::update(shard, name, &spec).await, 200),
                Err(e) => registry_error(&e),
            },
            Err(r) => r,
        },
        ("DELETE", ["servers", name]) => {
            let before = shard
                .registry()
                .get(name)
                .map(|(i, e)| server_json(shard, i, e, false));
            match (
                before,
                servers::set_state(shard, name, ServerState::Removed).await,
            ) {
                (Ok(mut v), Ok(_)) => {
                    v["state"] = "removed".into();
                    answer(200, v)
                }
                (Err(e), _) | (_, Err(e)) => registry_error(&e),
            }
        }
        ("POST", ["servers", name, "drain"]) => changed(
            shard,
            servers::set_state(shard, name, ServerState::Draining).await,
            200,
        ),
        ("POST", ["servers", name, "enable"]) => changed(
            shard,
            servers::set_state(shard, name, ServerState::Active).await,
            200,
        ),
        ("GET", ["tools"]) => items(shard, ListKind::Tools, "name", query),
        ("GET", ["prompts"]) => items(shard, ListKind::Prompts, "name", query),
        ("GET", ["resources"]) => items(shard, ListKind::Resources, "uri", query),
        ("GET", ["route"]) => match param(query, "tool") {
            Some(tool) => route(shard, &tool),
            None => error(400, "invalid", "name the tool: /api/v1/route?tool=NAME"),
        },
        ("GET", ["health"]) => answer(200, health(shard)),
        ("GET", ["stats"]) => answer(200, stats_json(shard)),
        ("GET", ["sessions"]) => {
            let counts = crate::metrics::session_counts();
            let total: usize = counts.iter().sum();
            answer(200, json!({"total": total, "per_shard": counts}))
        }
        ("GET", ["shards"]) => answer(200, shards(shard)),
        ("GET", ["auth", "issuers"]) => {
            answer(200, json!({"issuers": crate::auth::oauth::keys::status()}))
        }
        ("GET", ["cluster"]) => super::cluster::answer(),
        ("POST", ["reload"]) => match servers::reload(shard) {
            Ok(done) => answer(
                200,
                json!({
                    "reloaded": true,
                    "changes": done.servers,
                    "auth": done.auth,
                    "limits": done.limits,
                    "proxy_limits": done.proxy_limits,
                    "log_level": done.log_level,
                    "not_applied_until_restart": done.restart,
                }),
            ),
            Err(servers::ReloadError::Registry(e)) => registry_error(&e),
            Err(e) => error(400, "reload", e),
        },
        ("GET", ["config"]) => match super::config_view::running(shard) {
            Ok(v) => answer(200, v),
            Err(e) => error(500, "config", e),
        },
        ("GET", ["log-level"]) => {
            answer(200, json!({"level": crate::metrics::log_filter::current()}))
        }
        ("PUT", ["log-level"]) => match parse_body(request) {
            Ok(body) => set_log_level(&body),
            Err(r) => r,
        },
        (_, ["workflows", rest @ ..]) => {
            super::workflows::handle(shard, method, rest, request).await
        }
        (
            _,
            ["servers" | "tools" | "prompts" | "resources" | "route" | "health" | "stats"
            | "sessions" | "shards" | "reload" | "version" | "log-level" | "config" | "cluster", ..],
        ) => error(
            405,
            "method",
            format!("{method} is not allowed on {}", request.path()),
        ),
        _ => error(
            404,
            "not_found",
            "no such route; see docs/admin-api.md (servers, tools, prompts, resources, route, \
             health, stats, sessions, shards, reload, version, log-level, config, workflows, cluster)",
        ),
    }
}

/// `PUT /api/v1/log-level` with `{"level": FILTER}`: every thread logs with FILTER from now on
/// (until a restart, or a reload of a file whose `[proxy] log_level` changed).
fn set_log_level(body: &Value) -> Response {
    let Some(level) = body.get("level").and_then(Value::as_str) else {
        return error(
            400,
            "invalid",
            r#"send {"level": "debug"} (a level, or module=level pairs such as "info,mcp_proxy::mcp::routing=debug")"#,
        );
    };
    let before = crate::metrics::log_filter::current();
    match crate::metrics::log_filter::set(level) {
        Ok(()) => {
            log::info!("log level now {} (was {before})", level.trim());
            answer(200, json!({"level": level.trim(), "previous": before}))
        }
        Err(e) => error(400, "invalid", e),
    }
}

/// The answer to a change: the server as it now is.
fn changed(shard: &Rc<Shard>, outcome: Result<usize, RegistryError>, status: u16) -> Response {
    match outcome {
        Ok(index) => {
            let reg = shard.registry();
            match reg.entries.get(index) {
                Some(e) => answer(status, server_json(shard, index, e, false)),
                None => error(500, "internal", "the server vanished"),
            }
        }
        Err(e) => registry_error(&e),
    }
}

fn parse_body(request: &Request) -> Result<Value, Response> {
    serde_json::from_slice(&request.body).map_err(|e| {
        error(
            400,
            "invalid",
            format!(
                r#"the body is not JSON ({e}); send {{"name":"x","url":"http://host:port/mcp"}}"#
            ),
        )
    })
}

/// Value of query parameter `key`, percent-decoded.
fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Discovery state of a server: its status word, why it is down, and its item counts.
pub(crate) type Status = (&'static str, Option<String>, Option<[usize; 4]>);

pub(crate) fn status_of(shard: &Shard, index: usize) -> Status {
    let catalog = shard.catalog();
    match catalog.status.get(index) {
        Some(ServerStatus::Up(l)) => (
            "up",
            None,
            Some([
                l.tools.len(),
                l.prompts.len(),
                l.resources.len(),
                l.templates.len(),
            ]),
        ),
        // A drained server is down on purpose: its status says so rather than `down`.
        Some(ServerStatus::Down(why)) if why == "draining" => ("draining", None, None),
        Some(ServerStatus::Down(why)) => ("down", Some(why.clone()), None),
        Some(ServerStatus::Pending) | None => ("pending", None, None),
    }
}

/// A server as the API shows it; `detail` adds its items and its description.
fn server_json(shard: &Shard, index: usize, e: &Entry, detail: bool) -> Value {
    let (status, why, counts) = status_of(shard, index);
    let c = &e.config;
    let mut v = json!({
        "index": index,
        "name": c.name,
        "prefix": c.prefix,
        "origin": e.origin,
        "state": e.state.label(),
        "status": status,
        "timeout_ms": c.timeout.as_millis() as u64,
        "era": c.era.as_str(),
    });
    match &c.transport {
        crate::config::Transport::Http { replicas, .. } => {
            v["transport"] = "http".into();
            v["url"] = c.http_url().map(|u| u.to_string()).into();
            v["replicas"] = replicas
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    json!({"url": r.url.to_string(), "weight": r.weight, "drain": e.replica_drained(i)})
                })
                .collect::<Vec<_>>()
                .into();
        }
        crate::config::Transport::Stdio(cmd) => {
            v["transport"] = "stdio".into();
            v["command"] = cmd.command.clone().into();
            v["args"] = cmd.args.clone().into();
        }
    }
    if let Some(why) = why {
        v["error"] = why.into();
    }
    if let Some(n) = counts {
        v["tools"] = n[0].into();
        v["prompts"] = n[1].into();
        v["resources"] = n[2].into();
        v["templates"] = n[3].into();
    }
    if detail {
        let catalog = shard.catalog();
        let names: Vec<Value> = catalog
            .items(ListKind::Tools)
            .iter()
            .filter(|it| it.server == index)
            .map(|it| json!({"name": field(&it.json, "name"), "original": it.original}))
            .collect();
        v["tool_list"] = names.into();
        if let Some(ServerStatus::Up(l)) = catalog.status.get(index) {
            v["server_info"] = serde_json::from_slice::<Value>(&l.init_result)
                .ok()
                .and_then(|r| r.get("serverInfo").cloned())
                .unwrap_or(Value::Null);
        }
    }
    v
}

/// A string field of an item's JSON.
fn field(json: &[u8], key: &str) -> Option<String> {
    let mut buf = json.to_vec();
    let v = simd_json::to_borrowed_value(&mut buf).ok()?;
    v.get_str(key).map(str::to_owned)
}

/// A catalog list, filtered by `?q=` (case-insensitive substring of name or description).
fn items(shard: &Shard, kind: ListKind, key: &str, query: &str) -> Response {
    let needle = param(query, "q").map(|q| q.to_lowercase());
    let catalog = shard.catalog();
    // The proxy's own tools and resources come first, as clients see them in their lists.
    let own: &[crate::registry::catalog::Item] = match kind {
        ListKind::Tools => shard.orchestration().tool_items(),
        ListKind::Resources => shard.orchestration().resource_items(),
        _ => &[],
    };
    let list: Vec<Value> = own
        .iter()
        .chain(catalog.items(kind))
        .filter_map(|it| {
            let mut v: Value = serde_json::from_slice(&it.json).ok()?;
            let exposed = v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
            let description = v.get("description").and_then(Value::as_str).unwrap_or("");
            if let Some(n) = &needle {
                if !exposed.to_lowercase().contains(n) && !description.to_lowercase().contains(n) {
                    return None;
                }
            }
            // The proxy's own items belong to no server: they are in its reserved namespace.
            let server = catalog
                .servers
                .get(it.server)
                .map_or_else(|| "proxy".to_owned(), |s| s.name.clone());
            let obj = v.as_object_mut()?;
            obj.insert("server".into(), server.into());
            obj.insert("original".into(), it.original.clone().into());
            // Schemas make lists unreadable at a glance; `servers show` has the details.
            obj.remove("inputSchema");
            obj.remove("outputSchema");
            Some(v)
        })
        .collect();
    answer(200, json!({"count": list.len(), "items": list}))
}

/// Which server would serve `tool`, and why.
fn route(shard: &Shard, tool: &str) -> Response {
    let catalog = shard.catalog();
    let reg = shard.registry();
    let Some((index, original)) = catalog.tool(tool) else {
        let lower = tool.to_lowercase();
        let similar: Vec<String> = catalog
            .items(ListKind::Tools)
            .iter()
            .filter_map(|it| field(&it.json, "name"))
            .filter(|n| n.to_lowercase().contains(&lower) || lower.contains(&n.to_lowercase()))
            .take(10)
            .collect();
        return answer(
            404,
            json!({"error": format!("no tool is exposed as \"{tool}\"; `mcpctl tools search` lists what is"),
                   "kind": "not_found", "similar": similar}),
        );
    };
    let Some(entry) = reg.entries.get(index) else {
        return error(500, "internal", "the catalog names an unknown server");
    };
    let c = &entry.config;
    let replica = c.http_url().map(|u| u.to_string());
    let why = if c.prefix.is_empty() {
        format!(
            "server {} exposes its tools without a prefix and lists \"{original}\"",
            c.name
        )
    } else {
        format!(
            "\"{tool}\" is prefix \"{}\" (server {}) + its tool \"{original}\"",
            c.prefix, c.name
        )
    };
    answer(
        200,
        json!({
            "tool": tool,
            "server": c.name,
            "index": index,
            "original": original,
            "transport": if replica.is_some() { "http" } else { "stdio" },
            "replica": replica,
            "state": entry.state.label(),
            "why": why,
        }),
    )
}

/// `{"status":"ok"|"degraded","servers":{name:{"status","state","error"}}}`.
fn health(shard: &Shard) -> Value {
    let reg = shard.registry();
    let mut servers = serde_json::Map::new();
    let mut all_up = true;
    for (i, e) in reg.live() {
        let (mut status, mut why, _) = status_of(shard, i);
        // Discovery lists a server once and then waits to be told of changes; the active
        // checks (this shard's) are what notice a server that went away meanwhile.
        let checks = shard.upstreams().get(i).and_then(|u| match &*u {
            crate::upstream::Upstream::Http(c) => {
                let healthy = c.balancer.stats.iter().filter(|s| s.healthy.get()).count();
                Some((healthy, c.replica_count()))
            }
            _ => None,
        });
        if let Some((0, total)) = checks {
            if status == "up" && total > 0 {
                status = "down";
                why = Some(format!(
                    "health checks fail on every replica ({total}); `mcpctl servers replicas {}` shows each",
                    e.config.name
                ));
            }
        }
        all_up &= status == "up" || e.state == ServerState::Draining;
        let mut v = json!({"status": status, "state": e.state.label(), "error": why});
        if let Some((healthy, total)) = checks {
            v["replicas"] = json!({"healthy": healthy, "total": total});
        }
        servers.insert(e.config.name.clone(), v);
    }
    json!({
        "status": if all_up { "ok" } else { "degraded" },
        "shards": shard.nr_shards,
        "servers": servers,
    })
}

/// `/stats` (latency quantiles) plus per-server request and error counts from the metrics.
fn stats_json(shard: &Shard) -> Value {
    let reg = shard.registry();
    let live = reg.live().map(|(i, e)| (i, e.config.name.as_str()));
    let mut v: Value = serde_json::from_str(&stats::render_servers(live)).unwrap_or(Value::Null);
    let counts = crate::metrics::request_counts::per_server();
    if let Some(servers) = v.get_mut("servers").and_then(Value::as_object_mut) {
        for (name, s) in servers.iter_mut() {
            let (requests, errors) = counts.get(name).copied().unwrap_or_default();
            s["requests"] = requests.into();
            s["errors"] = errors.into();
        }
    }
    if let Some(obj) = v.as_object_mut() {
        let (requests, errors) = crate::metrics::request_counts::answered_locally();
        obj.insert(
            "proxy".into(),
            json!({ "requests": requests, "errors": errors }),
        );
    }
    v
}

fn shards(shard: &Shard) -> Value {
    let sessions = crate::metrics::session_counts();
    let (_, per_shard) = crate::metrics::latency::merged();
    let list: Vec<Value> = (0..shard.nr_shards)
        .map(|i| {
            json!({
                "shard": i,
                "sessions": sessions.get(i).copied().unwrap_or(0),
                "requests": per_shard.get(i).copied().unwrap_or(0),
                "owns": if i == 0 { vec!["admin", "discovery", "registry", "stdio children"] } else { vec![] },
            })
        })
        .collect();
    json!({"count": shard.nr_shards, "shards": list})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches("abc123", "abc123"));
        assert!(!token_matches("abc123", "abc124"));
        assert!(!token_matches("abc123", "abc12"));
        assert!(!token_matches("abc123", ""));
    }

    #[test]
    fn the_admin_listener_is_loopback_by_default() {
        let config = crate::config::Config::default();
        let listen = config.proxy.admin_listen.expect("on by default");
        assert!(listen.ip().is_loopback(), "{listen}");
        assert!(config.proxy.listen.ip().is_loopback());
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(param("q=echo%20x&tool=a", "q").as_deref(), Some("echo x"));
        assert_eq!(
            param("tool=alpha__echo", "tool").as_deref(),
            Some("alpha__echo")
        );
        assert_eq!(param("q=%zz", "q").as_deref(), Some("%zz"));
        assert_eq!(param("q=a%", "q").as_deref(), Some("a%"));
        assert_eq!(param("x=1", "q"), None);
    }
}
