//! The TOML configuration, its defaults and its validation.
//!
//! # How to use
//! [`Config::load`] a file (or [`Config::from_toml_str`] a string) once at start-up; every
//! error names the file, the line and column, the problem and how to fix it, so an operator
//! never has to guess. `docs/example-config.toml` shows every setting.
//!
//! Parsing happens in two steps: serde reads raw structs that keep the source spans of the
//! values we validate ([`toml::Spanned`]), then [`Config::from_toml_str_checked`] checks what
//! serde cannot (name rules, duplicates, URLs, headers) and points at the offending value, one
//! table at a time. The files TLS settings name are checked by the TLS layer through
//! [`tls::TlsFiles`]; this module builds nothing from them.
//!
//! - [`proxy`]: `[proxy]`; [`servers`]: `[[servers]]` ([`url`]: their URLs, [`stdio_env`]: what
//!   a child inherits); [`auth`]: `[auth]`; [`tls`]: `[tls]` and a server's `tls`;
//!   [`limits`]: `[limits]`.
//! - [`duration`], [`address`], [`logging`], [`admin_host`], [`admin_token`], [`session_key`]:
//!   the values settings are written in.
//! - [`restart`]: what a reload cannot apply; [`reloadable`]: a value a reload replaces while
//!   shards read it.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;

pub mod address;
pub mod admin_host;
pub mod admin_token;
pub mod auth;
pub mod cluster;
pub mod duration;
mod hints;
pub mod limits;
pub mod logging;
mod mcp_servers;
pub mod oauth;
pub mod proxy;
pub mod reloadable;
pub mod restart;
pub mod servers;
pub mod session_key;
pub mod stdio_env;
pub mod tls;
pub mod url;

pub use proxy::{is_loopback_origin, ProxyConfig, ToolExposure};
pub use servers::{
    BalanceConfig, ReplicaConfig, ServerConfig, StdioCommand, Strategy, Transport, UpstreamEra,
    RESERVED_SERVER_NAME,
};
pub use url::UpstreamUrl;

/// An error message and the span of the value it is about, when known.
pub(crate) type Located = (Option<Range<usize>>, String);

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
    /// Membership of a fleet sharing its registry in etcd (`[cluster]`); `None`: one instance.
    pub cluster: Option<cluster::ClusterConfig>,
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
    /// Reads and validates the configuration file at `path`; `files` checks the files TLS
    /// settings name (the TLS layer's `tls::RustlsFiles`).
    pub fn load(path: &Path, files: &dyn tls::TlsFiles) -> Result<Config, ConfigError> {
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
        Config::from_toml_str_checked(&text, &origin, files)
    }

    /// Parses and validates configuration text without reading the files it names; `origin`
    /// names it (a file name) in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str_checked(text, origin, &tls::FilesNotRead)
    }

    /// Parses and validates configuration text, `files` checking the files TLS settings name;
    /// `origin` names the text (a file name) in errors.
    pub fn from_toml_str_checked(
        text: &str,
        origin: &str,
        files: &dyn tls::TlsFiles,
    ) -> Result<Config, ConfigError> {
        let locate = |(span, message): Located| ConfigError::Invalid {
            origin: origin.to_owned(),
            position: span.map(|s| position(text, s.start)),
            message,
        };
        let raw = raw(text).map_err(locate)?;
        let proxy = proxy::build(raw.proxy).map_err(locate)?;
        let servers = servers::build(raw.servers, text, files).map_err(locate)?;
        let auth = auth::build(raw.auth).map_err(locate)?;
        if let Some(o) = &auth.oauth {
            oauth::check_upstreams(&o.upstreams, &servers).map_err(|m| locate((None, m)))?;
        }
        oauth::check_upstreams(&auth.upstreams, &servers).map_err(|m| locate((None, m)))?;
        let tls = tls::listener(raw.tls, files).map_err(locate)?;
        let limits = limits::check(raw.limits).map_err(|(span, m)| locate((Some(span), m)))?;
        let cluster = raw
            .cluster
            .map(cluster::check)
            .transpose()
            .map_err(locate)?;
        Ok(Config {
            proxy,
            servers,
            auth,
            tls,
            limits,
            cluster,
        })
    }
}

/// The text as serde reads it; its errors carry a fix where toml's message only states the
/// problem.
fn raw(text: &str) -> Result<RawConfig, Located> {
    toml::from_str(text).map_err(|e| {
        let span = e.span();
        let mut message = e.message().trim_end().to_owned();
        let offset = span.as_ref().map(|s| s.start);
        if message.starts_with("unknown field") {
            message = hints::unknown_field(&message, text, offset);
        } else if message.starts_with("invalid type") {
            message = hints::invalid_type(&message, text, offset);
        }
        message.push_str(toml_hint(&message));
        (span, message)
    })
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

/// The file as serde sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The `[proxy]` table.
    #[serde(default)]
    proxy: proxy::RawProxy,
    /// The `[[servers]]` entries.
    #[serde(default)]
    servers: Vec<servers::RawServer>,
    /// The `[auth]` table.
    #[serde(default)]
    auth: auth::RawAuth,
    /// The `[tls]` table.
    #[serde(default)]
    tls: Option<toml::Spanned<tls::RawListenerTls>>,
    /// The `[limits]` table.
    #[serde(default)]
    limits: limits::RawLimits,
    /// The `[cluster]` table.
    #[serde(default)]
    cluster: Option<cluster::RawCluster>,
}

#[cfg(test)]
mod tests;
