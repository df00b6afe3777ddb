//! The `[proxy]` table: the proxy's own listener, sessions, admin listener and logs.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::logging::{self, LogFormat};
use super::{address, admin_host, admin_token, duration, session_key, Located};

/// Settings of the proxy itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Address the `/mcp` endpoint listens on.
    pub listen: SocketAddr,
    /// Number of shards (executor threads); 0 means one per core.
    pub shards: usize,
    /// Extra allowed `Origin` values, lower-cased; loopback origins are always allowed.
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted from a client, in bytes.
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Time after which an unused downstream session expires.
    pub session_idle_timeout: Duration,
    /// Items per page of aggregated lists; 0 means no paging.
    pub page_size: usize,
    /// Where the proxy keeps state across restarts (the live registry, saved workflows);
    /// none keeps it in memory.
    pub state_dir: Option<std::path::PathBuf>,
    /// Which tools `tools/list` shows: every upstream tool, or only the proxy's own.
    pub tool_exposure: ToolExposure,
    /// Whether MCP clients may change the fleet (`proxy__balance_load` strategy and weights);
    /// off by default, since any client of the proxy could otherwise retune every server.
    pub allow_fleet_changes: bool,
    /// How long an idle shard keeps polling for work before it sleeps in the kernel (Seastar's
    /// idle poll): trades CPU on an otherwise idle core for fewer wake-ups under steady load.
    pub idle_poll: Duration,
    /// Key (64 hex digits) sealing session ids, so sessions survive restarts and move between
    /// proxy instances; `MCP_PROXY_SESSION_KEY` in the environment also sets it.
    pub session_key: Option<String>,
    /// Age after which a session id is refused even if its session could be restored.
    pub session_max_age: Duration,
    /// Address of the admin endpoints (`/metrics`, `/stats`, `/healthz`); `None`: not served.
    pub admin_listen: Option<SocketAddr>,
    /// `Host` names (lower-cased, port optional) the admin listener answers besides loopback
    /// names and IP addresses; see `admin::host`.
    pub admin_allowed_hosts: Vec<String>,
    /// How logs are written.
    pub log_format: LogFormat,
    /// Log filter such as `info` or `warn,mcp_proxy::mcp::routing=debug`; `None`: `info`.
    pub log_level: Option<String>,
    /// Bearer token of the admin API (`admin_token`, the file `admin_token_file` names, or
    /// `MCP_PROXY_ADMIN_TOKEN`); `None`: one is generated at start into a file only this user reads.
    pub admin_token: Option<String>,
    /// The file this configuration was read from (set by the binary, not by the file), so a
    /// reload (SIGHUP, admin API) can read it again.
    pub config_path: Option<std::path::PathBuf>,
}

/// Which tools `tools/list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolExposure {
    /// The proxy's own tools and every upstream tool.
    #[default]
    All,
    /// Only the proxy's own tools; upstream tools are found with search and called generically.
    Search,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: default_listen(),
            shards: 0,
            allowed_origins: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            max_header_bytes: default_max_header_bytes(),
            header_read_timeout: default_header_read_timeout(),
            idle_timeout: default_idle_timeout(),
            session_idle_timeout: default_session_idle_timeout(),
            page_size: default_page_size(),
            state_dir: None,
            tool_exposure: ToolExposure::All,
            allow_fleet_changes: false,
            idle_poll: Duration::ZERO,
            session_key: None,
            session_max_age: default_session_max_age(),
            admin_listen: Some(default_admin_listen()),
            admin_allowed_hosts: Vec::new(),
            log_format: LogFormat::default(),
            log_level: None,
            admin_token: None,
            config_path: None,
        }
    }
}

impl ProxyConfig {
    /// Whether a request with this `Origin` header value may be served.
    ///
    /// Loopback origins are always allowed because local tools (inspectors, desktop clients)
    /// use them on arbitrary ports; every other origin must be listed, which is what stops a web
    /// page from driving a local proxy (DNS rebinding).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        is_loopback_origin(origin)
            || self
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// Whether `origin` is `http(s)://localhost|127.0.0.1|[::1]` with an optional port.
pub fn is_loopback_origin(origin: &str) -> bool {
    let lower = origin.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
    else {
        return false;
    };
    let host_end = if rest.starts_with('[') {
        rest.find(']').map_or(rest.len(), |i| i + 1)
    } else {
        rest.find(':').unwrap_or(rest.len())
    };
    let (host, port) = rest.split_at(host_end);
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok && matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// Checks an allowed origin and returns it lower-cased for comparison.
fn check_origin(origin: &str) -> Result<String, String> {
    let lower = origin.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(['/', '?', '#', ' ']) => Ok(lower),
        _ => Err(format!(
            "allowed origin \"{origin}\" is not an origin; write scheme and host only, \
             e.g. \"https://app.example.com\" (no path, no trailing '/')"
        )),
    }
}

/// Checks `[proxy]` as serde read it.
pub(super) fn build(raw: RawProxy) -> Result<ProxyConfig, Located> {
    let (admin_listen, log_format, log_level) =
        observability(&raw).map_err(|(span, m)| (Some(span), m))?;
    let mut allowed_origins = Vec::with_capacity(raw.allowed_origins.len());
    for o in raw.allowed_origins {
        let value = check_origin(o.get_ref()).map_err(|m| (Some(o.span()), m))?;
        allowed_origins.push(value);
    }
    let mut admin_allowed_hosts = Vec::with_capacity(raw.admin_allowed_hosts.len());
    for h in raw.admin_allowed_hosts {
        let value = admin_host::check_allowed_host(h.get_ref()).map_err(|m| (Some(h.span()), m))?;
        admin_allowed_hosts.push(value);
    }
    Ok(ProxyConfig {
        admin_listen,
        admin_allowed_hosts,
        log_format,
        log_level,
        listen: raw.listen,
        shards: raw.shards,
        allowed_origins,
        max_body_bytes: raw.max_body_bytes,
        max_header_bytes: raw.max_header_bytes,
        header_read_timeout: raw.header_read_timeout,
        idle_timeout: raw.idle_timeout,
        session_idle_timeout: raw.session_idle_timeout,
        page_size: raw.page_size,
        state_dir: raw.state_dir.map(std::path::PathBuf::from),
        tool_exposure: raw.tool_exposure,
        allow_fleet_changes: raw.allow_fleet_changes,
        idle_poll: raw.idle_poll,
        session_key: match raw.session_key {
            Some(k) => {
                session_key::key_bytes(k.get_ref()).map_err(|e| (Some(k.span()), e.to_string()))?;
                Some(k.into_inner())
            }
            None => None,
        },
        session_max_age: raw.session_max_age,
        admin_token: admin_token_of(raw.admin_token, raw.admin_token_file)?,
        config_path: None,
    })
}

/// The admin token from `admin_token`, or read from the file `admin_token_file` names (a
/// mounted secret such as `/run/secrets/mcp-proxy-admin-token`, surrounding whitespace
/// removed); naming both is refused, since one would silently lose.
fn admin_token_of(
    token: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
) -> Result<Option<String>, Located> {
    let token = token.filter(|t| !t.get_ref().is_empty());
    match (token, file) {
        (Some(_), Some(f)) => Err((
            Some(f.span()),
            "admin_token and admin_token_file are both set; keep one (the file keeps the \
             token out of the configuration)"
                .into(),
        )),
        (Some(t), None) => {
            admin_token::check(t.get_ref(), "admin_token").map_err(|m| (Some(t.span()), m))?;
            Ok(Some(t.into_inner()))
        }
        (None, Some(f)) => {
            let path = f.get_ref();
            let text = std::fs::read_to_string(path).map_err(|e| {
                (
                    Some(f.span()),
                    format!(
                        "admin_token_file \"{path}\" cannot be read ({e}); write the path of a \
                         file holding the token, e.g. made with `openssl rand -hex 32 > {path}`"
                    ),
                )
            })?;
            let value = text.trim();
            admin_token::check(value, &format!("the token in admin_token_file \"{path}\""))
                .map_err(|m| (Some(f.span()), m))?;
            Ok(Some(value.to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// `[proxy]` as serde sees it; see [`ProxyConfig`] for each field's meaning.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    /// See [`ProxyConfig::listen`].
    #[serde(
        default = "default_listen",
        deserialize_with = "address::deserialize_listen"
    )]
    listen: SocketAddr,
    /// See [`ProxyConfig::shards`].
    #[serde(default)]
    shards: usize,
    /// See [`ProxyConfig::allowed_origins`].
    #[serde(default)]
    allowed_origins: Vec<Spanned<String>>,
    /// See [`ProxyConfig::max_body_bytes`].
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    /// See [`ProxyConfig::max_header_bytes`].
    #[serde(default = "default_max_header_bytes")]
    max_header_bytes: usize,
    /// See [`ProxyConfig::header_read_timeout`].
    #[serde(
        default = "default_header_read_timeout",
        deserialize_with = "duration::deserialize"
    )]
    header_read_timeout: Duration,
    /// See [`ProxyConfig::idle_timeout`].
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "duration::deserialize"
    )]
    idle_timeout: Duration,
    /// See [`ProxyConfig::session_idle_timeout`].
    #[serde(
        default = "default_session_idle_timeout",
        deserialize_with = "duration::deserialize"
    )]
    session_idle_timeout: Duration,
    /// See [`ProxyConfig::page_size`].
    #[serde(default = "default_page_size")]
    page_size: usize,
    /// See [`ProxyConfig::state_dir`].
    #[serde(default)]
    state_dir: Option<String>,
    /// See [`ProxyConfig::tool_exposure`].
    #[serde(default)]
    tool_exposure: ToolExposure,
    /// See [`ProxyConfig::allow_fleet_changes`].
    #[serde(default)]
    allow_fleet_changes: bool,
    /// See [`ProxyConfig::idle_poll`].
    #[serde(default, deserialize_with = "duration::deserialize")]
    idle_poll: Duration,
    /// See [`ProxyConfig::session_key`]; spanned to point at a malformed key.
    #[serde(default)]
    session_key: Option<Spanned<String>>,
    /// See [`ProxyConfig::session_max_age`].
    #[serde(
        default = "default_session_max_age",
        deserialize_with = "duration::deserialize"
    )]
    session_max_age: Duration,
    /// See [`ProxyConfig::admin_listen`]: an address, or `"off"`.
    #[serde(default)]
    admin_listen: Option<Spanned<String>>,
    /// See [`ProxyConfig::admin_allowed_hosts`].
    #[serde(default)]
    admin_allowed_hosts: Vec<Spanned<String>>,
    /// See [`ProxyConfig::log_format`]: `"text"`, `"json"` or `"logfmt"`.
    #[serde(default)]
    log_format: Option<Spanned<String>>,
    /// See [`ProxyConfig::log_level`].
    #[serde(default)]
    log_level: Option<Spanned<String>>,
    /// See [`ProxyConfig::admin_token`].
    #[serde(default)]
    admin_token: Option<Spanned<String>>,
    /// A file holding the admin token (read at start and at each reload); see
    /// [`ProxyConfig::admin_token`].
    #[serde(default)]
    admin_token_file: Option<Spanned<String>>,
}

impl Default for RawProxy {
    fn default() -> Self {
        let d = ProxyConfig::default();
        RawProxy {
            listen: d.listen,
            shards: d.shards,
            allowed_origins: Vec::new(),
            max_body_bytes: d.max_body_bytes,
            max_header_bytes: d.max_header_bytes,
            header_read_timeout: d.header_read_timeout,
            idle_timeout: d.idle_timeout,
            session_idle_timeout: d.session_idle_timeout,
            page_size: d.page_size,
            state_dir: None,
            tool_exposure: d.tool_exposure,
            allow_fleet_changes: d.allow_fleet_changes,
            idle_poll: d.idle_poll,
            session_key: None,
            session_max_age: d.session_max_age,
            admin_listen: None,
            admin_allowed_hosts: Vec::new(),
            log_format: None,
            log_level: None,
            admin_token: None,
            admin_token_file: None,
        }
    }
}

/// The admin listener and log settings of `[proxy]`, checked; errors carry the value's span.
#[allow(clippy::type_complexity)]
fn observability(
    raw: &RawProxy,
) -> Result<(Option<SocketAddr>, LogFormat, Option<String>), (Range<usize>, String)> {
    let admin_listen = match &raw.admin_listen {
        None => Some(default_admin_listen()),
        Some(a) if a.get_ref() == "off" => None,
        Some(a) => Some(address::parse(a.get_ref(), "admin_listen").map_err(|m| {
            (
                a.span(),
                format!("{m} (port 0 picks a free port), or \"off\""),
            )
        })?),
    };
    let log_format = match &raw.log_format {
        None => LogFormat::default(),
        Some(f) => f.get_ref().parse().map_err(|m| (f.span(), m))?,
    };
    let log_level = match &raw.log_level {
        None => None,
        Some(l) => {
            logging::check_filter(l.get_ref()).map_err(|m| (l.span(), m))?;
            Some(l.get_ref().clone())
        }
    };
    Ok((admin_listen, log_format, log_level))
}

/// Default admin address: loopback only; Prometheus scrapes it from the same host or network.
/// Port 8085 sits beside the client port (8080) and outside both Prometheus's own ports
/// (9090 server, 9091 Pushgateway, 9093 Alertmanager) and the 9100-9999 range its exporters use,
/// so the proxy and a Prometheus run side by side as shipped.
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8085))
}
/// Default listen address: loopback only, so a fresh install is not reachable from outside.
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
/// Default request body limit: 4 MiB.
fn default_max_body_bytes() -> usize {
    4 * 1024 * 1024
}
/// Default request head limit: 16 KiB.
fn default_max_header_bytes() -> usize {
    16 * 1024
}
/// Default time to receive a request head.
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
/// Default keep-alive idle time.
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
/// Default downstream session expiry.
fn default_session_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_session_idle_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
/// Default items per page.
fn default_page_size() -> usize {
    100
}
