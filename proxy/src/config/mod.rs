//! The TOML configuration, its defaults and its validation.
//!
//! # How to use
//! [`Config::load`] a file (or [`Config::from_toml_str`] a string) once at start-up; every
//! error names the file, the line and column, the problem and how to fix it, so an operator
//! never has to guess. `docs/example-config.toml` shows every setting.
//!
//! Parsing happens in two steps: serde reads raw structs that keep the source spans of the
//! values we validate ([`toml::Spanned`]), then [`Config::from_toml_str`] checks what serde
//! cannot (name rules, duplicates, URLs, headers) and points at the offending value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::protocol::names::{is_valid_server_name, MAX_SERVER_NAME_LEN, NAME_SEPARATOR};
use logging::LogFormat;

pub mod address;
pub mod admin_host;
pub mod admin_token;
pub mod auth;
mod hints;
pub mod limits;
pub mod logging;
mod mcp_servers;
pub mod restart;
pub mod session_key;
pub mod stdio_env;
pub mod tls;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Settings of the proxy itself (the `[proxy]` table).
    pub proxy: ProxyConfig,
    /// The upstream MCP servers (the `[[servers]]` entries), in file order.
    pub servers: Vec<ServerConfig>,
    /// Client authentication, policy and limits (the `[auth]` table); off by default.
    pub auth: auth::AuthConfig,
    /// TLS on the client-facing listener (`[tls]`); none serves plain HTTP.
    pub tls: Option<tls::ListenerTls>,
    /// Request, connection and stream bounds (`[limits]`).
    pub limits: limits::LimitsConfig,
}

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
    /// Bearer token of the admin API (`MCP_PROXY_ADMIN_TOKEN` also sets it); `None`: one is
    /// generated at start and printed.
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

/// One upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Unique name, used in logs, errors and the admin API.
    pub name: String,
    /// What exposed names start with: `{prefix}__tool`, `{prefix}+uri`. Defaults to the name;
    /// empty exposes the server's own names, for servers whose names cannot collide.
    pub prefix: String,
    /// How the server is reached.
    pub transport: Transport,
    /// How its replicas share the work and when one is taken out.
    pub balance: BalanceConfig,
    /// Limit on one upstream request, from sending it to the end of its response.
    pub timeout: Duration,
    /// Limit on establishing one upstream connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Free-form labels that capability search and `discover_servers` match on.
    pub tags: Vec<String>,
    /// TLS settings of its `https://` replicas (`tls = { ... }`); none: web roots, no client cert.
    pub tls: Option<tls::UpstreamTls>,
}

/// How an upstream server is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP.
    Http {
        /// The copies of the server (one for a plain `url`).
        replicas: Vec<ReplicaConfig>,
        /// Extra headers sent with every upstream request, sorted by name.
        headers: Vec<(String, String)>,
    },
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout.
    Stdio(StdioCommand),
}

/// One copy of an HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Where its endpoint is.
    pub url: UpstreamUrl,
    /// Share of new work under the `weighted` strategy (and a tie-breaker elsewhere).
    pub weight: u32,
    /// Draining: no new sessions; sessions already bound to it finish there.
    pub drain: bool,
}

/// How work is spread over a server's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Power of two choices over latency scaled by requests in flight (per shard).
    #[default]
    LeastLatency,
    /// Each replica in turn.
    RoundRobin,
    /// In proportion to the weights.
    Weighted,
    /// Uniformly at random.
    Random,
}

/// Balancing and health settings of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceConfig {
    /// How replicas are chosen.
    pub strategy: Strategy,
    /// The server keeps no session state: balance every request, bind nothing.
    pub stateless: bool,
    /// Time between active health checks (`ping`) of each replica.
    pub health_check_interval: Duration,
    /// Consecutive failed checks or requests after which a replica is taken out.
    pub failover_threshold: u32,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            strategy: Strategy::default(),
            stateless: false,
            health_check_interval: Duration::from_secs(5),
            failover_threshold: 3,
        }
    }
}

/// The program a stdio server runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioCommand {
    /// The program (a path, or a name looked up in PATH).
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables set for it (over what it inherits), sorted by name.
    pub env: Vec<(String, String)>,
    /// Which of the proxy's variables it inherits (`env_inherit`); see [`stdio_env`].
    pub env_inherit: stdio_env::EnvInherit,
    /// More of the proxy's variables it inherits (`env_allow`: names, or prefixes ending in `*`).
    pub env_allow: Vec<String>,
    /// Working directory; the proxy's own when absent.
    pub cwd: Option<std::path::PathBuf>,
    /// How many copies of the child run (`replicas = N`); each downstream session is bound to one.
    pub replicas: usize,
}

impl ServerConfig {
    /// The HTTP endpoint, for servers reached over HTTP.
    pub fn http_url(&self) -> Option<&UpstreamUrl> {
        match &self.transport {
            Transport::Http { replicas, .. } => replicas.first().map(|r| &r.url),
            Transport::Stdio(_) => None,
        }
    }

    /// Extra upstream headers (none for stdio servers).
    pub fn headers(&self) -> &[(String, String)] {
        match &self.transport {
            Transport::Http { headers, .. } => headers,
            Transport::Stdio(_) => &[],
        }
    }
}

/// An upstream `http://` or `https://` URL, split for the HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Whether to speak TLS (`https`).
    pub tls: bool,
    /// Host to connect to: a name or an IP address, IPv6 without brackets.
    pub host: String,
    /// Port to connect to; 80 or 443 when the URL has none.
    pub port: u16,
    /// Path and query for the request line; `/` when the URL has none.
    pub path: String,
    /// `host[:port]` as written in the URL, for the `Host` header.
    pub authority: String,
}

impl UpstreamUrl {
    /// Parses an upstream URL; the error says what is wrong, to be wrapped with a location.
    pub fn parse(url: &str) -> Result<UpstreamUrl, String> {
        if let Some(bad) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "url \"{url}\" contains {bad:?}; percent-encode it (space is %20)"
            ));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "url \"{url}\" has no scheme; write it as http://host:port/path or https://..."
            ));
        };
        let tls = if scheme.eq_ignore_ascii_case("http") {
            false
        } else if scheme.eq_ignore_ascii_case("https") {
            true
        } else {
            return Err(format!(
                "url \"{url}\" has unsupported scheme \"{scheme}\"; use http:// or https://"
            ));
        };
        if url.contains('#') {
            return Err(format!(
                "url \"{url}\" has a fragment (#...), which is never sent; remove it"
            ));
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(format!(
                "url \"{url}\" has credentials before '@'; remove them and set \
                 headers = {{ Authorization = \"...\" }} instead"
            ));
        }
        let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((v6, after)) = bracketed.split_once(']') else {
                return Err(format!("url \"{url}\" has an unclosed '[' in its host"));
            };
            if v6.parse::<Ipv6Addr>().is_err() {
                return Err(format!(
                    "url \"{url}\" has an invalid IPv6 address \"{v6}\"; e.g. http://[::1]:3000/mcp"
                ));
            }
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => {
                    return Err(format!(
                        "url \"{url}\" has unexpected text \"{after}\" after the IPv6 address"
                    ))
                }
            };
            (v6, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!(
                "url \"{url}\" has no host; e.g. http://127.0.0.1:3001/mcp"
            ));
        }
        if !authority.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(format!(
                "url \"{url}\" has an invalid host \"{host}\"; use a DNS name or an IP address"
            ));
        }
        let port = match port_text {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                        "url \"{url}\" has an invalid port \"{p}\"; use a number from 1 to 65535"
                    ))
                }
            },
        };
        let path = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            // A query without a path is valid in a URL but not in a request line.
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(UpstreamUrl {
            tls,
            host: host.to_owned(),
            port,
            path,
            authority: authority.to_owned(),
        })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

/// Where in the configuration text an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// A configuration that cannot be used. The proxy refuses to start; nothing here is retryable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file that was asked for.
        path: String,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The text is not valid TOML, does not fit the schema, or breaks a rule.
    #[error("{origin}{}: {message}", at(.position))]
    Invalid {
        /// The file name (or other origin) the text came from.
        origin: String,
        /// Where the problem is, when known.
        position: Option<Position>,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ConfigError {
    /// The 1-based line of the problem, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { position, .. } => position.map(|p| p.line),
            ConfigError::Io { .. } => None,
        }
    }
}

/// `:line:column` for an error message, or nothing.
fn at(position: &Option<Position>) -> String {
    position.map_or_else(String::new, |p| format!(":{}:{}", p.line, p.column))
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: origin.clone(),
            source,
        })?;
        // Desktop clients keep their servers in JSON (`mcpServers`); take such a file as it is.
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            || text.trim_start().starts_with('{');
        if is_json {
            return mcp_servers::from_json(&text, &origin);
        }
        Config::from_toml_str(&text, &origin)
    }

    /// Parses and validates configuration text; `origin` names it (a file name) in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |span: Option<Range<usize>>, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            position: span.map(|s| position(text, s.start)),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span();
            let mut message = e.message().trim_end().to_owned();
            let offset = span.as_ref().map(|s| s.start);
            if message.starts_with("unknown field") {
                message = hints::unknown_field(&message, text, offset);
            } else if message.starts_with("invalid type") {
                message = hints::invalid_type(&message, text, offset);
            }
            message.push_str(toml_hint(&message));
            invalid(span, message)
        })?;

        let (admin_listen, log_format, log_level) =
            observability(&raw.proxy).map_err(|(span, m)| invalid(Some(span), m))?;
        let mut allowed_origins = Vec::with_capacity(raw.proxy.allowed_origins.len());
        for o in raw.proxy.allowed_origins {
            let value = check_origin(o.get_ref()).map_err(|m| invalid(Some(o.span()), m))?;
            allowed_origins.push(value);
        }
        let mut admin_allowed_hosts = Vec::with_capacity(raw.proxy.admin_allowed_hosts.len());
        for h in raw.proxy.admin_allowed_hosts {
            let value = admin_host::check_allowed_host(h.get_ref())
                .map_err(|m| invalid(Some(h.span()), m))?;
            admin_allowed_hosts.push(value);
        }
        let proxy = ProxyConfig {
            admin_listen,
            admin_allowed_hosts,
            log_format,
            log_level,
            listen: raw.proxy.listen,
            shards: raw.proxy.shards,
            allowed_origins,
            max_body_bytes: raw.proxy.max_body_bytes,
            max_header_bytes: raw.proxy.max_header_bytes,
            header_read_timeout: raw.proxy.header_read_timeout,
            idle_timeout: raw.proxy.idle_timeout,
            session_idle_timeout: raw.proxy.session_idle_timeout,
            page_size: raw.proxy.page_size,
            state_dir: raw.proxy.state_dir.map(std::path::PathBuf::from),
            tool_exposure: raw.proxy.tool_exposure,
            allow_fleet_changes: raw.proxy.allow_fleet_changes,
            idle_poll: raw.proxy.idle_poll,
            session_key: match raw.proxy.session_key {
                Some(k) => {
                    session_key::key_bytes(k.get_ref())
                        .map_err(|e| invalid(Some(k.span()), e.to_string()))?;
                    Some(k.into_inner())
                }
                None => None,
            },
            session_max_age: raw.proxy.session_max_age,
            admin_token: match raw.proxy.admin_token.filter(|t| !t.get_ref().is_empty()) {
                Some(t) => {
                    admin_token::check(t.get_ref(), "admin_token")
                        .map_err(|m| invalid(Some(t.span()), m))?;
                    Some(t.into_inner())
                }
                None => None,
            },
            config_path: None,
        };

        let mut servers = Vec::with_capacity(raw.servers.len());
        // Name -> line of its first definition, to point at both ends of a duplicate.
        let mut seen: HashMap<String, usize> = HashMap::new();
        // Non-empty prefix -> the server that uses it.
        let mut prefixes: HashMap<String, String> = HashMap::new();
        for s in raw.servers {
            let name = s.name.get_ref();
            check_server_name(name).map_err(|m| invalid(Some(s.name.span()), m))?;
            let line = position(text, s.name.span().start).line;
            if let Some(first) = seen.insert(name.clone(), line) {
                return Err(invalid(
                    Some(s.name.span()),
                    format!(
                        "duplicate server name \"{name}\" (first defined at line {first}); \
                         give each [[servers]] entry a unique name"
                    ),
                ));
            }
            check_not_reserved(name, "server name").map_err(|m| invalid(Some(s.name.span()), m))?;
            let stdio_count = match s.replicas.as_ref().map(|r| (r.span(), r.get_ref())) {
                Some((span, RawReplicas::Count(n))) => {
                    if *n == 0 || s.command.is_none() {
                        return Err(invalid(
                            Some(span),
                            format!("server \"{name}\": replicas = N (a count) is for stdio servers and must be at least 1; an HTTP server lists its copies as replicas = [{{ url = ... }}]"),
                        ));
                    }
                    Some(*n as usize)
                }
                _ => None,
            };
            let list = s.replicas.as_ref().and_then(|r| match r.get_ref() {
                RawReplicas::List(l) => Some((r.span(), l)),
                RawReplicas::Count(_) => None,
            });
            let url_or_replicas = match (&s.url, list) {
                (Some(_), Some((span, _))) => {
                    return Err(invalid(
                        Some(span),
                        format!("server \"{name}\" has both url and replicas; list every copy under replicas and drop url"),
                    ))
                }
                (Some(url), None) => Some(vec![ReplicaConfig {
                    url: UpstreamUrl::parse(url.get_ref()).map_err(|m| invalid(Some(url.span()), m))?,
                    weight: 1,
                    drain: false,
                }]),
                (None, Some((span, list))) => {
                    if list.is_empty() {
                        return Err(invalid(
                            Some(span),
                            format!("server \"{name}\" has an empty replicas list; add {{ url = \"http://...\" }} entries"),
                        ));
                    }
                    let mut replicas = Vec::with_capacity(list.len());
                    for r in list {
                        let url = UpstreamUrl::parse(&r.url).map_err(|m| invalid(Some(span.clone()), m))?;
                        if r.weight == Some(0) {
                            return Err(invalid(
                                Some(span.clone()),
                                format!("replica {} of \"{name}\" has weight 0; use drain = true to take it out", r.url),
                            ));
                        }
                        replicas.push(ReplicaConfig { url, weight: r.weight.unwrap_or(1), drain: r.drain });
                    }
                    Some(replicas)
                }
                (None, None) => None,
            };
            let transport = match (url_or_replicas, &s.command) {
                (Some(replicas), None) => {
                    if let Some(extra) = s
                        .args
                        .as_ref()
                        .map(|a| a.span())
                        .or(s.cwd.as_ref().map(|c| c.span()))
                        .or(s.env_inherit.as_ref().map(|e| e.span()))
                        .or(s.env_allow.as_ref().map(|e| e.span()))
                    {
                        return Err(invalid(
                            Some(extra),
                            format!("server \"{name}\" has a url, so it is reached over HTTP: args, env, env_inherit, env_allow and cwd belong to stdio servers (command = ...); remove them"),
                        ));
                    }
                    let mut headers = Vec::with_capacity(s.headers.len());
                    for (k, v) in s.headers {
                        check_header(k.get_ref(), v.get_ref()).map_err(|m| invalid(Some(k.span()), m))?;
                        // Header names are case-insensitive, so `a` and `A` would both be sent.
                        if let Some((dup, _)) = headers
                            .iter()
                            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(k.get_ref()))
                        {
                            return Err(invalid(
                                Some(k.span()),
                                format!(
                                    "header \"{}\" repeats \"{dup}\" (header names ignore case); keep one",
                                    k.get_ref()
                                ),
                            ));
                        }
                        headers.push((k.into_inner(), v.into_inner()));
                    }
                    Transport::Http { replicas, headers }
                }
                (None, Some(command)) => {
                    if command.get_ref().trim().is_empty() {
                        return Err(invalid(
                            Some(command.span()),
                            format!("server \"{name}\" has an empty command; name the program to run, e.g. \"npx\""),
                        ));
                    }
                    if let Some((k, _)) = s.headers.iter().next() {
                        return Err(invalid(
                            Some(k.span()),
                            format!("server \"{name}\" runs a command: headers only apply to url servers; remove them"),
                        ));
                    }
                    let (env_inherit, env_allow) = stdio_env::parse(
                        s.env_inherit.as_ref().map(|e| e.get_ref().as_str()),
                        s.env_allow.as_ref().map_or(&[][..], |a| a.get_ref()),
                    )
                    .map_err(|m| {
                        let at = s.env_inherit.as_ref().map(|e| e.span());
                        invalid(at.or(s.env_allow.as_ref().map(|a| a.span())), format!("server \"{name}\": {m}"))
                    })?;
                    Transport::Stdio(StdioCommand {
                        command: command.get_ref().clone(),
                        args: s.args.map(Spanned::into_inner).unwrap_or_default(),
                        env: s.env.into_iter().collect(),
                        env_inherit,
                        env_allow,
                        cwd: s.cwd.map(|c| std::path::PathBuf::from(c.into_inner())),
                        replicas: stdio_count.unwrap_or(1),
                    })
                }
                (Some(_), Some(command)) => {
                    return Err(invalid(
                        Some(command.span()),
                        format!("server \"{name}\" has both url and command; keep url for an HTTP server or command for a stdio one"),
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        Some(s.name.span()),
                        format!("server \"{name}\" has neither url nor command; add url = \"http://...\" or command = \"...\""),
                    ))
                }
            };
            if let Some(t) = &s.transport {
                let expected = match transport {
                    Transport::Http { .. } => "http",
                    Transport::Stdio(_) => "stdio",
                };
                if t.get_ref() != expected {
                    return Err(invalid(
                        Some(t.span()),
                        format!(
                            "transport \"{}\" does not match this entry, which has {}; use transport = \"{expected}\" or drop the line",
                            t.get_ref(),
                            if expected == "http" { "a url" } else { "a command" }
                        ),
                    ));
                }
            }
            let prefix = match &s.prefix {
                None => name.clone(),
                Some(p) if p.get_ref().is_empty() => String::new(),
                Some(p) => {
                    check_server_name(p.get_ref())
                        .map_err(|m| invalid(Some(p.span()), m.replace("server name", "prefix")))?;
                    check_not_reserved(p.get_ref(), "prefix")
                        .map_err(|m| invalid(Some(p.span()), m))?;
                    p.get_ref().clone()
                }
            };
            if !prefix.is_empty() {
                if let Some(other) = prefixes.insert(prefix.clone(), name.clone()) {
                    let span = s.prefix.as_ref().map_or(s.name.span(), |p| p.span());
                    return Err(invalid(
                        Some(span),
                        format!(
                            "servers \"{other}\" and \"{name}\" both use the prefix \"{prefix}\"; \
                             give one of them another prefix"
                        ),
                    ));
                }
            }
            let any_https = matches!(&transport, Transport::Http { replicas, .. } if replicas.iter().any(|r| r.url.tls));
            let tls =
                tls::upstream(name, s.tls, any_https).map_err(|(span, m)| invalid(span, m))?;
            if s.failover_threshold == 0 {
                return Err(invalid(
                    Some(s.name.span()),
                    format!("server \"{name}\" has failover_threshold = 0; use 1 or more"),
                ));
            }
            servers.push(ServerConfig {
                prefix,
                name: s.name.into_inner(),
                transport,
                balance: BalanceConfig {
                    strategy: s.strategy,
                    stateless: s.stateless,
                    health_check_interval: s.health_check_interval,
                    failover_threshold: s.failover_threshold,
                },
                timeout: s.timeout,
                connect_timeout: s.connect_timeout,
                tags: s.tags,
                tls,
            });
        }
        let auth = auth::build(raw.auth).map_err(|(span, m)| invalid(span, m))?;
        let tls = tls::listener(raw.tls).map_err(|(span, m)| invalid(span, m))?;
        let limits = limits::check(raw.limits).map_err(|(span, m)| invalid(Some(span), m))?;
        Ok(Config {
            proxy,
            servers,
            auth,
            tls,
            limits,
        })
    }
}

/// A fix for the toml/serde messages that only state the problem.
fn toml_hint(message: &str) -> &'static str {
    if message.starts_with("missing field") {
        "; add it to this table (every [[servers]] entry needs a name, and a url or a command)"
    } else if message.starts_with("invalid socket address") {
        "; write an IP address and a port, e.g. \"127.0.0.1:8080\" or \"[::]:8080\""
    } else {
        ""
    }
}

/// Line and column (1-based, columns in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> Position {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    // Count characters, not bytes, so the column matches what an editor shows; a span that is
    // not on a char boundary (never expected) falls back to bytes.
    let column = text
        .get(line_start..offset)
        .map_or(offset - line_start, |s| s.chars().count())
        + 1;
    Position { line, column }
}

/// Checks a server name against [`is_valid_server_name`], suggesting a fixed one.
fn check_server_name(name: &str) -> Result<(), String> {
    if is_valid_server_name(name) {
        return Ok(());
    }
    let suggestion = suggest_name(name);
    let problem = if name.is_empty() {
        "server name is empty".to_owned()
    } else if name.len() > MAX_SERVER_NAME_LEN {
        format!("server name \"{name}\" is longer than {MAX_SERVER_NAME_LEN} characters")
    } else if name.contains(NAME_SEPARATOR) {
        format!("server name \"{name}\" contains \"__\", which separates server and tool names")
    } else {
        format!("server name \"{name}\" may only contain letters, digits, '-' and '_'")
    };
    Err(format!("{problem}; rename it, e.g. \"{suggestion}\""))
}

/// Refuses the name the proxy's own tools live under, so no server's names can collide with them.
pub(crate) fn check_not_reserved(name: &str, what: &str) -> Result<(), String> {
    if name.eq_ignore_ascii_case(RESERVED_SERVER_NAME) {
        return Err(format!(
            "{what} \"{name}\" is reserved for the proxy's own tools ({RESERVED_SERVER_NAME}__search_tools, ...); \
             rename it, e.g. \"{name}-upstream\""
        ));
    }
    Ok(())
}

/// The namespace of the proxy's own tools: no server may be named or prefixed so.
pub const RESERVED_SERVER_NAME: &str = "proxy";

/// A valid server name close to `name`.
fn suggest_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '-'
        };
        // Collapse "__" as it is built, so the result never contains the separator.
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
        if out.len() == MAX_SERVER_NAME_LEN {
            break;
        }
    }
    if out.is_empty() {
        out.push_str("server");
    }
    out
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

/// Headers the proxy sets itself; letting the config override them would break framing or
/// sessions.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "mcp-session-id",
];

/// Checks one extra upstream header.
fn check_header(name: &str, value: &str) -> Result<(), String> {
    // RFC 9110 token characters.
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!(
            "header name \"{name}\" is not a valid HTTP header name; use letters, digits and '-'"
        ));
    }
    if RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(format!(
            "header \"{name}\" is set by the proxy itself; remove it from headers"
        ));
    }
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(format!(
            "header \"{name}\" has a control character (such as a newline) in its value; remove it"
        ));
    }
    Ok(())
}

/// The file as serde sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The `[proxy]` table.
    #[serde(default)]
    proxy: RawProxy,
    /// The `[[servers]]` entries.
    #[serde(default)]
    servers: Vec<RawServer>,
    /// The `[auth]` table.
    #[serde(default)]
    auth: auth::RawAuth,
    /// The `[tls]` table.
    #[serde(default)]
    tls: Option<Spanned<tls::RawListenerTls>>,
    /// The `[limits]` table.
    #[serde(default)]
    limits: limits::RawLimits,
}

/// `[proxy]` as serde sees it; see [`ProxyConfig`] for each field's meaning.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
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
        }
    }
}

/// One `[[servers]]` entry as serde sees it; see [`ServerConfig`] for each field's meaning.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    /// See [`ServerConfig::name`]; spanned to point at it in errors.
    name: Spanned<String>,
    /// `http` or `stdio`; inferred from url/command when absent.
    #[serde(default)]
    transport: Option<Spanned<String>>,
    /// The HTTP endpoint; spanned to point at it in errors.
    #[serde(default)]
    url: Option<Spanned<String>>,
    /// The program of a stdio server.
    #[serde(default)]
    command: Option<Spanned<String>>,
    /// Its arguments.
    #[serde(default)]
    args: Option<Spanned<Vec<String>>>,
    /// Environment variables for it.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Which of the proxy's variables it inherits: `base`, `all` or `none`.
    #[serde(default)]
    env_inherit: Option<Spanned<String>>,
    /// More of the proxy's variables it inherits.
    #[serde(default)]
    env_allow: Option<Spanned<Vec<String>>>,
    /// Its working directory.
    #[serde(default)]
    cwd: Option<Spanned<String>>,
    /// See [`ServerConfig::headers`]; spanned to point at a bad one.
    #[serde(default)]
    headers: BTreeMap<Spanned<String>, Spanned<String>>,
    /// See [`ServerConfig::timeout`].
    #[serde(
        default = "default_timeout",
        deserialize_with = "duration::deserialize"
    )]
    timeout: Duration,
    /// See [`ServerConfig::connect_timeout`].
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "duration::deserialize"
    )]
    connect_timeout: Duration,
    /// See [`ServerConfig::prefix`]; spanned to point at a clash.
    #[serde(default)]
    prefix: Option<Spanned<String>>,
    /// See [`ServerConfig::tags`].
    #[serde(default)]
    tags: Vec<String>,
    /// See [`Transport::Http`]: several copies of one HTTP server (a list of URLs), or of a
    /// stdio server (a count).
    #[serde(default)]
    replicas: Option<Spanned<RawReplicas>>,
    /// See [`BalanceConfig::strategy`].
    #[serde(default)]
    strategy: Strategy,
    /// See [`BalanceConfig::stateless`].
    #[serde(default)]
    stateless: bool,
    /// See [`BalanceConfig::health_check_interval`].
    #[serde(
        default = "default_health_check_interval",
        deserialize_with = "duration::deserialize"
    )]
    health_check_interval: Duration,
    /// See [`BalanceConfig::failover_threshold`].
    #[serde(default = "default_failover_threshold")]
    failover_threshold: u32,
    /// See [`ServerConfig::tls`].
    #[serde(default)]
    tls: Option<Spanned<tls::RawUpstreamTls>>,
}

/// `replicas`: a list of HTTP endpoints, or a number of stdio children.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawReplicas {
    Count(u32),
    List(Vec<RawReplica>),
}

/// One `replicas` entry as serde sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplica {
    url: String,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    drain: bool,
}

fn default_health_check_interval() -> Duration {
    BalanceConfig::default().health_check_interval
}

fn default_failover_threshold() -> u32 {
    BalanceConfig::default().failover_threshold
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
/// Default upstream request timeout.
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
/// Default upstream connect timeout.
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Durations written as `"200us"`, `"250ms"`, `"10s"`, `"5m"`, `"1h"` or an integer number of seconds.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};

    /// Parses `"<integer><unit>"` with unit `us`, `ms`, `s`, `m` or `h`; zero is refused because
    /// every duration here is a timeout or a wait, and a zero timeout would fail every request.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let hint = "use a whole number followed by us, ms, s, m or h, e.g. \"10s\"";
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration \"{text}\"; {hint}"))?;
        let micros = match unit {
            "us" => Some(n),
            "ms" => n.checked_mul(1_000),
            "s" => n.checked_mul(1_000_000),
            "m" => n.checked_mul(60_000_000),
            "h" => n.checked_mul(3_600_000_000),
            _ => return Err(format!("invalid duration \"{text}\"; {hint}")),
        }
        .ok_or_else(|| format!("duration \"{text}\" is too large"))?;
        if micros == 0 {
            return Err(format!(
                "duration \"{text}\" is zero; use a positive value, e.g. \"10s\""
            ));
        }
        Ok(Duration::from_micros(micros))
    }

    /// Serde `deserialize_with` for a string or integer-seconds duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    /// Accepts the two spellings of a duration.
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"250ms\", \"10s\", \"5m\", \"1h\" or whole seconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            match u64::try_from(v) {
                Ok(secs) => self.visit_u64(secs),
                Err(_) => Err(E::custom(format!(
                    "duration {v} is negative; use a positive number of seconds"
                ))),
            }
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            if v == 0 {
                return Err(E::custom(
                    "duration 0 is zero; use a positive value, e.g. 10 or \"10s\"",
                ));
            }
            Ok(Duration::from_secs(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` as `config.toml`, expecting an error; returns its line and message.
    fn error(text: &str) -> (Option<usize>, String) {
        match Config::from_toml_str(text, "config.toml") {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => (e.line(), e.to_string()),
        }
    }

    /// Asserts `text` fails at `line` with a message containing `fragment`.
    fn assert_error(text: &str, line: usize, fragment: &str) {
        let (l, msg) = error(text);
        assert_eq!(l, Some(line), "wrong line in: {msg}");
        assert!(msg.contains(fragment), "{msg:?} lacks {fragment:?}");
        assert!(
            msg.starts_with(&format!("config.toml:{line}:")),
            "no location: {msg}"
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml_str("", "config.toml").expect("valid");
        assert_eq!(c, Config::default());
        assert_eq!(c.proxy.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.proxy.max_body_bytes, 4_194_304);
        assert_eq!(c.proxy.max_header_bytes, 16_384);
        assert_eq!(c.proxy.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.proxy.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.proxy.session_idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.proxy.page_size, 100);
        assert!(c.servers.is_empty());
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../../docs/example-config.toml");
        let c = Config::from_toml_str(text, "example-config.toml").expect("valid");
        assert_eq!(c.servers.len(), 4);
        let search = &c.servers[3];
        assert!(matches!(&search.transport, Transport::Http { replicas, .. }
            if replicas.len() == 3 && replicas[1].weight == 2 && replicas[2].drain));
        assert_eq!(search.balance.failover_threshold, 3);
        let memory = &c.servers[2];
        assert_eq!(memory.prefix, "mem");
        assert!(
            matches!(&memory.transport, Transport::Stdio(cmd) if cmd.command == "npx" && cmd.args.len() == 2)
        );
        let s = &c.servers[0];
        assert_eq!(s.name, "everything");
        assert_eq!(s.http_url().map(|u| u.port), Some(3001));
        assert_eq!(s.timeout, Duration::from_secs(60));
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        let r = &c.servers[1];
        assert!(r.http_url().is_some_and(|u| u.tls && u.port == 443));
        assert_eq!(r.timeout, Duration::from_secs(120));
        assert_eq!(
            r.headers(),
            &[("Authorization".to_owned(), "Bearer change-me".to_owned())]
        );
    }

    #[test]
    fn server_defaults_and_integer_durations() {
        let c = Config::from_toml_str(
            "[proxy]\nidle_timeout = 5\n[[servers]]\nname = \"a\"\nurl = \"http://h/\"\n",
            "config.toml",
        )
        .expect("valid");
        assert_eq!(c.proxy.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.servers[0].timeout, Duration::from_secs(60));
        assert_eq!(c.servers[0].connect_timeout, Duration::from_secs(5));
        assert!(c.servers[0].headers().is_empty());
    }

    #[test]
    fn durations() {
        assert_eq!(duration::parse("200us"), Ok(Duration::from_micros(200)));
        assert_eq!(duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration::parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration::parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration::parse("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "10sec", "0s", "0ms"] {
            assert!(duration::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(duration::parse("99999999999999999999h").is_err());
        assert!(duration::parse("9999999999999999h").is_err());
    }

    #[test]
    fn bad_durations_are_located() {
        assert_error(
            "[proxy]\nlisten = \"127.0.0.1:1\"\nidle_timeout = \"10x\"\n",
            3,
            "invalid duration \"10x\"",
        );
        assert_error("[proxy]\nidle_timeout = -3\n", 2, "negative");
        assert_error("[proxy]\nidle_timeout = 0\n", 2, "zero");
        assert_error("[proxy]\nidle_timeout = true\n", 2, "duration");
    }

    #[test]
    fn unknown_field_names_table() {
        let (line, msg) = error("# comment\n\n[proxy]\nlsiten = \"127.0.0.1:1\"\n");
        assert_eq!(line, Some(4));
        assert!(
            msg.starts_with("config.toml:4:1: unknown field `lsiten` in [proxy]"),
            "{msg}"
        );
        assert!(msg.contains("listen"), "{msg}");
        assert_error(
            "[[servers]]\nname = \"a\"\nurl = \"http://h\"\nheader = {}\n",
            4,
            "unknown field `header` in [[servers]]",
        );
        assert_error("[proxi]\n", 1, "unknown table `proxi`");
    }

    #[test]
    fn syntax_and_type_errors_are_located() {
        assert_error("[proxy]\nshards = \n", 2, "");
        assert_error("[proxy]\nshards = \"two\"\n", 2, "");
        assert_error(
            "[proxy]\n\nlisten = \"localhost\"\n",
            3,
            "config.toml:3:10: listen \"localhost\" has no port; write an IP address and a port",
        );
        assert_error(
            "[[servers]]\nname = \"a\"\n",
            2,
            "server \"a\" has neither url nor command",
        );
    }

    #[test]
    fn bad_server_names() {
        assert_error(
            "[[servers]]\nurl = \"http://h\"\n\n\n\n\nname = \"a b\"\n",
            7,
            "config.toml:7:8: server name \"a b\" may only contain letters, digits, '-' and '_'; \
             rename it, e.g. \"a-b\"",
        );
        assert_error(
            "[[servers]]\nname = \"a__b\"\nurl = \"http://h\"\n",
            2,
            "separates server and tool names; rename it, e.g. \"a_b\"",
        );
        assert_error(
            "[[servers]]\nname = \"\"\nurl = \"http://h\"\n",
            2,
            "empty; rename it, e.g. \"server\"",
        );
        let long = "x".repeat(33);
        assert_error(
            &format!("[[servers]]\nname = \"{long}\"\nurl = \"http://h\"\n"),
            2,
            "longer than 32",
        );
    }

    #[test]
    fn the_proxy_namespace_is_reserved() {
        assert_error(
            "[[servers]]\nname = \"proxy\"\nurl = \"http://h\"\n",
            2,
            "server name \"proxy\" is reserved for the proxy's own tools",
        );
        assert_error(
            "[[servers]]\nname = \"p\"\nprefix = \"Proxy\"\nurl = \"http://h\"\n",
            3,
            "prefix \"Proxy\" is reserved",
        );
    }

    #[test]
    fn orchestration_settings() {
        let c = Config::from_toml_str(
            "[proxy]\nstate_dir = \"/var/lib/p\"\ntool_exposure = \"search\"\n\
             [[servers]]\nname = \"a\"\nurl = \"http://h\"\ntags = [\"math\", \"demo\"]\n",
            "config.toml",
        )
        .expect("valid");
        assert_eq!(c.proxy.tool_exposure, ToolExposure::Search);
        assert_eq!(c.proxy.state_dir.as_deref(), Some(Path::new("/var/lib/p")));
        assert_eq!(c.servers[0].tags, vec!["math", "demo"]);
        assert_eq!(Config::default().proxy.tool_exposure, ToolExposure::All);
        let (_, msg) = error("[proxy]\ntool_exposure = \"some\"\n");
        assert!(msg.contains("unknown variant"), "{msg}");
    }

    #[test]
    fn duplicate_server_names() {
        let text = "[proxy]\n\n[[servers]]\nname = \"everything\"\nurl = \"http://a\"\n\n\
                    [[servers]]\nname = \"other\"\nurl = \"http://b\"\n\n\
                    [[servers]]\nname = \"everything\"\nurl = \"http://c\"\n";
        assert_error(
            text,
            12,
            "config.toml:12:8: duplicate server name \"everything\" (first defined at line 4); \
             give each [[servers]] entry a unique name",
        );
    }

    #[test]
    fn bad_urls_are_located() {
        assert_error(
            "[[servers]]\nname = \"a\"\nurl = \"ftp://h/x\"\n",
            3,
            "config.toml:3:7: url \"ftp://h/x\" has unsupported scheme \"ftp\"",
        );
        assert_error(
            "[[servers]]\nname = \"a\"\nurl = \"http:///x\"\n",
            3,
            "has no host",
        );
    }

    #[test]
    fn bad_headers_are_located() {
        assert_error(
            "[[servers]]\nname = \"a\"\nurl = \"http://h\"\nheaders = { Host = \"x\" }\n",
            4,
            "set by the proxy itself",
        );
        assert_error(
            "[[servers]]\nname = \"a\"\nurl = \"http://h\"\nheaders = { \"a b\" = \"x\" }\n",
            4,
            "not a valid HTTP header name",
        );
        assert_error(
            "[[servers]]\nname = \"a\"\nurl = \"http://h\"\n[servers.headers]\nX-A = \"x\\ny\"\n",
            5,
            "control character",
        );
        assert_error(
            "[[servers]]\nname = \"a\"\nurl = \"http://h\"\n[servers.headers]\nX-A = \"1\"\nx-a = \"2\"\n",
            6,
            "header \"x-a\" repeats \"X-A\"",
        );
    }

    #[test]
    fn origins() {
        let c = Config::from_toml_str(
            "[proxy]\nallowed_origins = [\"https://App.example.com\"]\n",
            "config.toml",
        )
        .expect("valid");
        let p = &c.proxy;
        assert!(p.origin_allowed("https://app.example.com"));
        assert!(!p.origin_allowed("https://app.example.com.evil.net"));
        assert!(!p.origin_allowed("http://app.example.com"));
        assert!(p.origin_allowed("http://localhost:6274"));
        assert!(p.origin_allowed("https://127.0.0.1"));
        assert!(p.origin_allowed("http://[::1]:3000"));
        assert!(!p.origin_allowed("http://localhost.evil.net"));
        assert!(!p.origin_allowed("http://localhost:"));
        assert!(!p.origin_allowed("http://localhost:80/x"));
        assert!(!p.origin_allowed("null"));
        assert_error(
            "[proxy]\nallowed_origins = [\n  \"https://a.example.com/\",\n]\n",
            3,
            "no trailing '/'",
        );
    }

    #[test]
    fn url_parsing() {
        let u = UpstreamUrl::parse("http://127.0.0.1:3001/mcp").expect("valid");
        assert_eq!(
            u,
            UpstreamUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 3001,
                path: "/mcp".into(),
                authority: "127.0.0.1:3001".into(),
            }
        );
        let u = UpstreamUrl::parse("https://example.com").expect("valid");
        assert!(u.tls);
        assert_eq!(
            (u.port, u.path.as_str(), u.authority.as_str()),
            (443, "/", "example.com")
        );
        let u = UpstreamUrl::parse("HTTP://Example.com?x=1").expect("valid");
        assert!(!u.tls);
        assert_eq!((u.port, u.path.as_str()), (80, "/?x=1"));
        let u = UpstreamUrl::parse("http://[::1]:3000/mcp").expect("valid");
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 3000);
        assert_eq!(u.authority, "[::1]:3000");
        assert_eq!(u.to_string(), "http://[::1]:3000/mcp");
        let u = UpstreamUrl::parse("https://[2001:db8::1]/").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("2001:db8::1", 443));
    }

    #[test]
    fn url_rejections() {
        for (bad, fragment) in [
            ("ftp://h/", "unsupported scheme"),
            ("h:80/mcp", "no scheme"),
            ("http://", "no host"),
            ("http://:80/", "no host"),
            ("http://h:/", "invalid port"),
            ("http://h:0/", "invalid port"),
            ("http://h:65536/", "invalid port"),
            ("http://h:+80/", "invalid port"),
            ("http://[::1/", "unclosed"),
            ("http://[zz]/", "invalid IPv6"),
            ("http://[::1]x/", "unexpected text"),
            ("http://u:p@h/", "credentials"),
            ("http://h/a b", "percent-encode"),
            ("http://h/#top", "fragment"),
            ("http://h%41/", "invalid host"),
        ] {
            match UpstreamUrl::parse(bad) {
                Ok(u) => panic!("{bad:?} accepted as {u:?}"),
                Err(m) => assert!(m.contains(fragment), "{bad:?}: {m}"),
            }
        }
    }

    #[test]
    fn positions_count_characters() {
        let text = "a\néé=x\n";
        assert_eq!(position(text, 0), Position { line: 1, column: 1 });
        assert_eq!(position(text, 2), Position { line: 2, column: 1 });
        assert_eq!(position(text, 6), Position { line: 2, column: 3 });
        assert_eq!(position(text, 999), Position { line: 3, column: 1 });
    }

    #[test]
    fn name_suggestions_are_valid() {
        for name in ["a b", "a__b", "", "ü", &"x".repeat(40), "a___b!"] {
            assert!(is_valid_server_name(&suggest_name(name)), "{name:?}");
        }
    }

    #[test]
    fn load_reports_missing_file() {
        let err = Config::load(Path::new("/nonexistent/mcp-proxy.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/mcp-proxy.toml"));
    }

    #[test]
    fn observability_settings() {
        let c = Config::from_toml_str("", "c.toml").expect("valid");
        assert_eq!(
            c.proxy.admin_listen,
            Some("127.0.0.1:8085".parse().expect("addr"))
        );
        assert_eq!(c.proxy.log_format, LogFormat::Text);
        let c = Config::from_toml_str(
            "[proxy]\nadmin_listen = \"off\"\nlog_format = \"json\"\nlog_level = \"warn,mcp_proxy=debug\"\n",
            "c.toml",
        )
        .expect("valid");
        assert_eq!(c.proxy.admin_listen, None);
        assert_eq!(c.proxy.log_format, LogFormat::Json);
        assert_eq!(c.proxy.log_level.as_deref(), Some("warn,mcp_proxy=debug"));
        assert_error(
            "[proxy]\nadmin_listen = \"9090\"\n",
            2,
            "admin_listen \"9090\"",
        );
        assert_error("[proxy]\n\nlog_format = \"xml\"\n", 3, "\"logfmt\"");
        assert_error("[proxy]\nlog_level = \"loud\"\n", 2, "invalid log level");
    }
}
