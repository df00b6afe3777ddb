//! The admin HTTP listener: operational endpoints, served by shard 0 on `[proxy] admin_listen`.
//!
//! # Routes
//! - `GET /metrics`: Prometheus text exposition of every `mcp_proxy_*` metric.
//! - `GET /stats`: exact latency quantiles (JSON), merged across shards ([`stats`]).
//! - `GET /healthz`: liveness, with each upstream server's discovery state (JSON).
//! - `GET /readyz`: readiness: 200 once every configured server was tried, 503 before.
//! - `/api/v1/...`: the admin API ([`api`], bearer token; the running configuration in
//!   [`config_view`]), whose changes to the live registry
//!   go through [`servers`]; per-replica routes (which ask every shard) are in [`replicas`].
//!   `/metrics`, `/stats`, `/healthz` and `/readyz` stay open for scrapers and probes.
//!
//! Every route first checks `Host` and `Origin` ([`host`]), so a web page cannot read any of
//! them by DNS rebinding.
//!
//! The router is one `match` on method and path ([`route`]); new endpoints are new arms.
//!
//! Scrapes must not slow client requests down, even a scraper in a tight loop:
//! - admin work runs in its own low-share task queue on shard 0, and yields that queue after
//!   every response (glommio would otherwise let a busy queue run for its whole 100 ms
//!   preemption slice while client requests wait);
//! - a rendered `/metrics` body is reused for [`METRICS_MAX_AGE`], so scraping faster than
//!   that costs a write, not a render.

pub mod api;
pub mod cluster;
pub mod config_view;
pub mod host;
pub mod replicas;
pub mod servers;
pub mod stats;
pub mod workflows;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::net::TcpStream;
use glommio::{Latency, Shares};

use crate::http::{Limits, Method, Request, ServerConn};
use crate::registry::ServerStatus;
use crate::shard::Shard;

/// An admin response.
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: Bytes::from(body),
        }
    }
}

/// Serves the admin routes on `listener` (bound by the runtime on `[proxy] admin_listen`)
/// from this shard (shard 0), forever.
pub fn start(shard: &Rc<Shard>, listener: glommio::net::TcpListener) -> std::io::Result<()> {
    let queue =
        glommio::executor().create_task_queue(Shares::Static(100), Latency::NotImportant, "admin");
    let shard = shard.clone();
    let accept = async move {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let task = serve_connection(shard.clone(), stream);
                    match glommio::spawn_local_into(task, queue) {
                        Ok(task) => {
                            task.detach();
                        }
                        Err(e) => log::warn!("admin: cannot serve a connection: {e}"),
                    }
                }
                Err(e) => {
                    log::warn!("admin: accept failed: {e}");
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    let upkeep = async {
        // Drains the recorder's histogram samples even when nobody scrapes.
        loop {
            glommio::timer::sleep(crate::metrics::UPKEEP_EVERY).await;
            if let Some(h) = crate::metrics::handle() {
                h.run_upkeep();
            }
        }
    };
    let spawned = glommio::spawn_local_into(accept, queue)
        .and_then(|a| glommio::spawn_local_into(upkeep, queue).map(|u| (a, u)));
    match spawned {
        Ok((a, u)) => {
            a.detach();
            u.detach();
            Ok(())
        }
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

async fn serve_connection(shard: Rc<Shard>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let mut conn = ServerConn::new(stream);
    loop {
        let request = match conn.read_request(&limits).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                log::debug!("admin: bad request: {e}");
                return;
            }
        };
        let response = match (
            host::refusal(&shard.config.proxy, &request),
            &shard.config.proxy.admin_token,
        ) {
            (Some(refused), _) => refused,
            (None, Some(token)) if request.path().starts_with(api::PREFIX) => {
                match replicas::route(&shard, token, &request).await {
                    Some(response) => response,
                    None => api::handle(&shard, token, &request).await,
                }
            }
            (None, _) => route(&shard, &request),
        };

        let headers = [("Content-Type", response.content_type)];
        let written = conn
            .write_response(
                response.status,
                &headers,
                &response.body,
                request.keep_alive,
            )
            .await;
        if written.is_err() || !request.keep_alive {
            return;
        }
        glommio::executor().yield_task_queue_now().await;
    }
}

/// What the admin listener answers to `request`.
pub fn route(shard: &Shard, request: &Request) -> Response {
    let path = request.path();
    if request.method != Method::Get {
        return Response::json(405, r#"{"error":"method not allowed: use GET"}"#.into());
    }
    match path {
        "/metrics" => metrics_response(shard),
        "/stats" => {
            let registry = shard.registry();
            let live = registry.live().map(|(i, e)| (i, e.config.name.as_str()));
            Response::json(200, stats::render_servers(live))
        }
        "/healthz" => Response::json(200, health(shard)),
        "/readyz" => readiness(shard),
        _ => Response::json(
            404,
            r#"{"error":"not found: try /metrics, /stats, /healthz or /readyz"}"#.into(),
        ),
    }
}

/// How long a rendered `/metrics` body is served again (Prometheus scrapes every few seconds).
pub const METRICS_MAX_AGE: Duration = Duration::from_millis(100);
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

thread_local! {
    /// The last `/metrics` rendering and when it was made.
    static RENDERED: RefCell<Option<(Instant, Bytes)>> = const { RefCell::new(None) };
}

/// `/metrics`, rendered at most once per [`METRICS_MAX_AGE`].
fn metrics_response(shard: &Shard) -> Response {
    let body = RENDERED.with(|cache| {
        let mut cache = cache.borrow_mut();
        match cache.as_ref() {
            Some((at, body)) if at.elapsed() < METRICS_MAX_AGE => body.clone(),
            _ => {
                // Series of removed servers and replicas are left out: nothing pages for
                // what no longer exists.
                let registry = shard.registry();
                let live = crate::metrics::exposition::LiveSeries::of(
                    registry.live().map(|(_, e)| &e.config),
                );
                let text = crate::metrics::render(&live);
                let body = Bytes::from(text);
                *cache = Some((Instant::now(), body.clone()));
                body
            }
        }
    });
    Response {
        status: 200,
        content_type: METRICS_TYPE,
        body,
    }
}

/// `/readyz`: 200 once the catalog is built, every live server tried at least once (up or
/// down, but no longer pending); 503 before, naming the servers still being tried. A load
/// balancer or Kubernetes sends traffic only then, so the first clients see every tool.
fn readiness(shard: &Shard) -> Response {
    let catalog = shard.catalog();
    let registry = shard.registry();
    let waiting: Vec<String> = registry
        .live()
        .filter(|(i, _)| matches!(catalog.status.get(*i), Some(ServerStatus::Pending) | None))
        .map(|(_, e)| stats::json_str(&e.config.name))
        .collect();
    if waiting.is_empty() {
        Response::json(
            200,
            format!(r#"{{"ready":true,"servers":{}}}"#, registry.live().count()),
        )
    } else {
        Response::json(
            503,
            format!(r#"{{"ready":false,"waiting_for":[{}]}}"#, waiting.join(",")),
        )
    }
}

/// `{"status":"ok","shards":N,"servers":{"name":"up"|"down"|"pending"}}`.
fn health(shard: &Shard) -> String {
    let catalog = shard.catalog();
    let registry = shard.registry();
    let servers: Vec<String> = registry
        .entries
        .iter()
        .zip(catalog.status.iter())
        .filter(|(e, _)| e.state != crate::registry::servers::ServerState::Removed)
        .map(|(e, status)| {
            let s = &e.config;
            let state = match status {
                ServerStatus::Pending => "pending",
                ServerStatus::Up(_) => "up",
                ServerStatus::Down(_) => "down",
            };
            format!("{}:\"{state}\"", stats::json_str(&s.name))
        })
        .collect();
    format!(
        r#"{{"status":"ok","shards":{},"servers":{{{}}}}}"#,
        shard.nr_shards,
        servers.join(",")
    )
}
