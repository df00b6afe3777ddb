//! The `[[servers]]` entries: the upstream MCP servers, how each is reached, balanced and named.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::tls::{self, TlsFiles};
use super::url::UpstreamUrl;
use super::{duration, position, stdio_env, Located};
use crate::protocol::names::{is_valid_server_name, MAX_SERVER_NAME_LEN, NAME_SEPARATOR};

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
    /// Which protocol era the proxy speaks to it (`era = ...`).
    pub era: UpstreamEra,
}

/// The protocol era the proxy speaks to an upstream (`era = "auto" | "2025-11-25" |
/// "2026-07-28"`); `docs/stateless.md` says how `auto` chooses per downstream session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamEra {
    /// Per downstream session: a stateful client gets a stateful upstream session where the
    /// server issues one; a 2026-07-28 client (and discovery) the stateless era where offered.
    #[default]
    Auto,
    /// Always `initialize` and a session (2025-11-25), even if the server speaks 2026-07-28.
    Stateful,
    /// Always 2026-07-28; a server that does not answer `server/discover` with it fails.
    Stateless,
}

impl UpstreamEra {
    /// The spellings `era` accepts, in the order error messages list them.
    pub const SPELLINGS: [&'static str; 3] = ["auto", "2025-11-25", "2026-07-28"];

    /// Reads one spelling of [`Self::SPELLINGS`].
    pub fn parse(text: &str) -> Option<UpstreamEra> {
        match text {
            "auto" => Some(UpstreamEra::Auto),
            "2025-11-25" => Some(UpstreamEra::Stateful),
            "2026-07-28" => Some(UpstreamEra::Stateless),
            _ => None,
        }
    }

    /// The spelling, as the configuration writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamEra::Auto => "auto",
            UpstreamEra::Stateful => "2025-11-25",
            UpstreamEra::Stateless => "2026-07-28",
        }
    }
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

/// What the `[[servers]]` entries checked so far have claimed, so a later entry cannot take it.
#[derive(Default)]
pub(super) struct Claimed {
    /// Name -> line of its first definition, to point at both ends of a duplicate.
    names: HashMap<String, usize>,
    /// Non-empty prefix -> the server that uses it.
    prefixes: HashMap<String, String>,
}

/// Checks the `[[servers]]` entries as serde read them, in file order; `text` is the file, for
/// the line of a first definition.
pub(super) fn build(
    raw: Vec<RawServer>,
    text: &str,
    files: &dyn TlsFiles,
) -> Result<Vec<ServerConfig>, Located> {
    let mut claimed = Claimed::default();
    let mut servers = Vec::with_capacity(raw.len());
    for s in raw {
        servers.push(server(s, text, &mut claimed, files)?);
    }
    Ok(servers)
}

/// Checks one entry.
fn server(
    mut s: RawServer,
    text: &str,
    claimed: &mut Claimed,
    files: &dyn TlsFiles,
) -> Result<ServerConfig, Located> {
    let name = s.name.get_ref().clone();
    check_name(&s.name, text, claimed)?;
    let stdio_count = stdio_count(&s, &name)?;
    let replicas = http_replicas(&s, &name)?;
    let transport = match (replicas, s.command.take()) {
        (Some(replicas), None) => http_transport(&mut s, &name, replicas)?,
        (None, Some(command)) => stdio_transport(&mut s, &name, command, stdio_count)?,
        (Some(_), Some(command)) => {
            return Err((
                Some(command.span()),
                format!("server \"{name}\" has both url and command; keep url for an HTTP server or command for a stdio one"),
            ))
        }
        (None, None) => {
            return Err((
                Some(s.name.span()),
                format!("server \"{name}\" has neither url nor command; add url = \"http://...\" or command = \"...\""),
            ))
        }
    };
    check_transport_name(&s, &transport)?;
    let prefix = prefix(&s, &name, claimed)?;
    let any_https = matches!(&transport, Transport::Http { replicas, .. } if replicas.iter().any(|r| r.url.tls));
    let era = era(&s, &name, &transport)?;
    let tls = tls::upstream(&name, s.tls, any_https, files)?;
    if s.failover_threshold == 0 {
        return Err((
            Some(s.name.span()),
            format!("server \"{name}\" has failover_threshold = 0; use 1 or more"),
        ));
    }
    Ok(ServerConfig {
        prefix,
        name,
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
        era,
    })
}

/// `era`: one of the spellings; a stdio server speaks the stateful era only.
fn era(s: &RawServer, name: &str, transport: &Transport) -> Result<UpstreamEra, Located> {
    let Some(raw) = &s.era else {
        return Ok(UpstreamEra::Auto);
    };
    let Some(era) = UpstreamEra::parse(raw.get_ref()) else {
        return Err((
            Some(raw.span()),
            format!(
                "server \"{name}\": era = \"{}\" is not an era the proxy speaks upstream; write one of \"{}\" (auto: per client session)",
                raw.get_ref(),
                UpstreamEra::SPELLINGS.join("\", \"")
            ),
        ));
    };
    if era == UpstreamEra::Stateless && matches!(transport, Transport::Stdio(_)) {
        return Err((
            Some(raw.span()),
            format!("server \"{name}\" is a stdio server, which the proxy speaks to in the stateful era only; remove era or write era = \"2025-11-25\""),
        ));
    }
    Ok(era)
}

/// The name: valid, not reserved, not taken by an earlier entry.
fn check_name(name: &Spanned<String>, text: &str, claimed: &mut Claimed) -> Result<(), Located> {
    let span = name.span();
    let name = name.get_ref();
    check_server_name(name).map_err(|m| (Some(span.clone()), m))?;
    let line = position(text, span.start).line;
    if let Some(first) = claimed.names.insert(name.clone(), line) {
        return Err((
            Some(span),
            format!(
                "duplicate server name \"{name}\" (first defined at line {first}); \
                 give each [[servers]] entry a unique name"
            ),
        ));
    }
    check_not_reserved(name, "server name").map_err(|m| (Some(span), m))
}

/// `replicas = N` of a stdio server.
fn stdio_count(s: &RawServer, name: &str) -> Result<Option<usize>, Located> {
    match s.replicas.as_ref().map(|r| (r.span(), r.get_ref())) {
        Some((span, RawReplicas::Count(n))) => {
            if *n == 0 || s.command.is_none() {
                return Err((
                    Some(span),
                    format!("server \"{name}\": replicas = N (a count) is for stdio servers and must be at least 1; an HTTP server lists its copies as replicas = [{{ url = ... }}]"),
                ));
            }
            Ok(Some(*n as usize))
        }
        _ => Ok(None),
    }
}

/// The copies of an HTTP server: its `url`, or its `replicas` list; `None` for neither.
fn http_replicas(s: &RawServer, name: &str) -> Result<Option<Vec<ReplicaConfig>>, Located> {
    let list = s.replicas.as_ref().and_then(|r| match r.get_ref() {
        RawReplicas::List(l) => Some((r.span(), l)),
        RawReplicas::Count(_) => None,
    });
    match (&s.url, list) {
        (Some(_), Some((span, _))) => Err((
            Some(span),
            format!("server \"{name}\" has both url and replicas; list every copy under replicas and drop url"),
        )),
        (Some(url), None) => Ok(Some(vec![ReplicaConfig {
            url: UpstreamUrl::parse(url.get_ref()).map_err(|m| (Some(url.span()), m))?,
            weight: 1,
            drain: false,
        }])),
        (None, Some((span, list))) => {
            if list.is_empty() {
                return Err((
                    Some(span),
                    format!("server \"{name}\" has an empty replicas list; add {{ url = \"http://...\" }} entries"),
                ));
            }
            let mut replicas = Vec::with_capacity(list.len());
            for r in list {
                let url = UpstreamUrl::parse(&r.url).map_err(|m| (Some(span.clone()), m))?;
                if r.weight == Some(0) {
                    return Err((
                        Some(span.clone()),
                        format!("replica {} of \"{name}\" has weight 0; use drain = true to take it out", r.url),
                    ));
                }
                replicas.push(ReplicaConfig { url, weight: r.weight.unwrap_or(1), drain: r.drain });
            }
            Ok(Some(replicas))
        }
        (None, None) => Ok(None),
    }
}

/// An HTTP server's transport: no stdio settings, valid and distinct headers.
fn http_transport(
    s: &mut RawServer,
    name: &str,
    replicas: Vec<ReplicaConfig>,
) -> Result<Transport, Located> {
    if let Some(extra) = s
        .args
        .as_ref()
        .map(|a| a.span())
        .or(s.cwd.as_ref().map(|c| c.span()))
        .or(s.env_inherit.as_ref().map(|e| e.span()))
        .or(s.env_allow.as_ref().map(|e| e.span()))
    {
        return Err((
            Some(extra),
            format!("server \"{name}\" has a url, so it is reached over HTTP: args, env, env_inherit, env_allow and cwd belong to stdio servers (command = ...); remove them"),
        ));
    }
    let mut headers = Vec::with_capacity(s.headers.len());
    for (k, v) in std::mem::take(&mut s.headers) {
        check_header(k.get_ref(), v.get_ref()).map_err(|m| (Some(k.span()), m))?;
        // Header names are case-insensitive, so `a` and `A` would both be sent.
        if let Some((dup, _)) = headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(k.get_ref()))
        {
            return Err((
                Some(k.span()),
                format!(
                    "header \"{}\" repeats \"{dup}\" (header names ignore case); keep one",
                    k.get_ref()
                ),
            ));
        }
        headers.push((k.into_inner(), v.into_inner()));
    }
    Ok(Transport::Http { replicas, headers })
}

/// A stdio server's transport: a program to run, no headers, the environment it inherits.
fn stdio_transport(
    s: &mut RawServer,
    name: &str,
    command: Spanned<String>,
    stdio_count: Option<usize>,
) -> Result<Transport, Located> {
    if command.get_ref().trim().is_empty() {
        return Err((
            Some(command.span()),
            format!(
                "server \"{name}\" has an empty command; name the program to run, e.g. \"npx\""
            ),
        ));
    }
    if let Some((k, _)) = s.headers.iter().next() {
        return Err((
            Some(k.span()),
            format!(
                "server \"{name}\" runs a command: headers only apply to url servers; remove them"
            ),
        ));
    }
    let (env_inherit, env_allow) = stdio_env::parse(
        s.env_inherit.as_ref().map(|e| e.get_ref().as_str()),
        s.env_allow.as_ref().map_or(&[][..], |a| a.get_ref()),
    )
    .map_err(|m| {
        let at = s.env_inherit.as_ref().map(|e| e.span());
        (
            at.or(s.env_allow.as_ref().map(|a| a.span())),
            format!("server \"{name}\": {m}"),
        )
    })?;
    Ok(Transport::Stdio(StdioCommand {
        command: command.into_inner(),
        args: s.args.take().map(Spanned::into_inner).unwrap_or_default(),
        env: std::mem::take(&mut s.env).into_iter().collect(),
        env_inherit,
        env_allow,
        cwd: s
            .cwd
            .take()
            .map(|c| std::path::PathBuf::from(c.into_inner())),
        replicas: stdio_count.unwrap_or(1),
    }))
}

/// A `transport = "..."` line, when present, agrees with the url or command.
fn check_transport_name(s: &RawServer, transport: &Transport) -> Result<(), Located> {
    let Some(t) = &s.transport else {
        return Ok(());
    };
    let expected = match transport {
        Transport::Http { .. } => "http",
        Transport::Stdio(_) => "stdio",
    };
    if t.get_ref() != expected {
        return Err((
            Some(t.span()),
            format!(
                "transport \"{}\" does not match this entry, which has {}; use transport = \"{expected}\" or drop the line",
                t.get_ref(),
                if expected == "http" { "a url" } else { "a command" }
            ),
        ));
    }
    Ok(())
}

/// The prefix: the name by default, valid, not reserved, not taken by an earlier entry.
fn prefix(s: &RawServer, name: &str, claimed: &mut Claimed) -> Result<String, Located> {
    let prefix = match &s.prefix {
        None => name.to_owned(),
        Some(p) if p.get_ref().is_empty() => String::new(),
        Some(p) => {
            check_server_name(p.get_ref())
                .map_err(|m| (Some(p.span()), m.replace("server name", "prefix")))?;
            check_not_reserved(p.get_ref(), "prefix").map_err(|m| (Some(p.span()), m))?;
            p.get_ref().clone()
        }
    };
    if !prefix.is_empty() {
        if let Some(other) = claimed.prefixes.insert(prefix.clone(), name.to_owned()) {
            let span = s.prefix.as_ref().map_or(s.name.span(), |p| p.span());
            return Err((
                Some(span),
                format!(
                    "servers \"{other}\" and \"{name}\" both use the prefix \"{prefix}\"; \
                     give one of them another prefix"
                ),
            ));
        }
    }
    Ok(prefix)
}

/// Checks a server name against [`is_valid_server_name`], suggesting a fixed one.
pub(super) fn check_server_name(name: &str) -> Result<(), String> {
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
pub(super) fn check_not_reserved(name: &str, what: &str) -> Result<(), String> {
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
pub(super) fn suggest_name(name: &str) -> String {
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
pub(super) fn check_header(name: &str, value: &str) -> Result<(), String> {
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

/// One `[[servers]]` entry as serde sees it; see [`ServerConfig`] for each field's meaning.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
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
    /// See [`ServerConfig::era`]; spanned to point at a bad spelling.
    #[serde(default)]
    era: Option<Spanned<String>>,
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

/// Default upstream request timeout.
pub(super) fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
/// Default upstream connect timeout.
pub(super) fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
