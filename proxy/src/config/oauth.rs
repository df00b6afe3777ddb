//! `[auth.oauth]`: the proxy as an OAuth 2.1 protected resource (the MCP authorization spec).
//!
//! It names the authorization servers whose tokens the proxy accepts (by issuer URL; their
//! metadata and keys are fetched, see `auth::oauth`), the proxy's canonical URL (the
//! `resource` of its Protected Resource Metadata and the audience its tokens must carry), and
//! how often keys are fetched again.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::auth::Located;
use super::url::UpstreamUrl;

/// How long fetched keys are kept at most when the issuer says nothing shorter.
const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
/// Shortest time between two fetches of one issuer's keys for an unknown `kid`.
const DEFAULT_KID_REFRESH: Duration = Duration::from_secs(30);

/// `[auth.oauth]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    /// The canonical URL of the `/mcp` endpoint as clients reach it (behind any balancer), with
    /// no trailing slash: the `resource` of the metadata and the audience tokens must carry.
    pub public_url: String,
    /// Issuer URLs of the trusted authorization servers, exactly as their tokens' `iss`.
    pub issuers: Vec<String>,
    /// Audiences accepted besides `public_url`.
    pub audiences: Vec<String>,
    /// `scopes_supported` of the metadata: the scopes basic use needs.
    pub scopes_supported: Vec<String>,
    /// PEM file of CAs trusted for the issuers instead of the built-in web roots.
    pub ca_file: Option<PathBuf>,
    /// Longest time fetched keys are used before they are fetched again.
    pub refresh: Duration,
    /// Shortest time between two fetches of one issuer's keys when a token names an unknown
    /// `kid` (so forged `kid`s cannot make the proxy hammer the issuer); also the pause before
    /// a failed fetch (keys or an upstream's token) is tried again.
    pub kid_refresh: Duration,
    /// Servers the proxy gets its own token for (client credentials), instead of ever passing
    /// a client's token on.
    pub upstreams: Vec<UpstreamCredentials>,
}

/// `[[auth.oauth.upstreams]]`: the proxy's own OAuth client for one upstream server.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamCredentials {
    /// The `[[servers]]` name whose requests carry the token.
    pub server: String,
    /// The authorization server's token endpoint.
    pub token_url: String,
    /// The proxy's client id there.
    pub client_id: String,
    /// Its secret (sent as `client_secret_post`; never logged).
    pub client_secret: String,
    /// `scope` to ask for, if any.
    pub scope: Option<String>,
    /// `resource` (RFC 8707) to ask for: the upstream's canonical URL.
    pub resource: Option<String>,
    /// `grant = "token_exchange"`: requests made for a client carry the client's token
    /// exchanged (RFC 8693) for one meant for this upstream, with the client as its subject;
    /// only the proxy's own requests (discovery, health) carry the client credentials token.
    pub token_exchange: bool,
}

impl OAuthConfig {
    /// What the fetch thread runs on for `[[auth.upstreams]]` without `[auth.oauth]`: no
    /// issuers, the default lifetimes. Never installed as `[auth.oauth]` (no metadata, no
    /// challenge points to it).
    pub fn for_upstreams(upstreams: Vec<UpstreamCredentials>, ca_file: Option<PathBuf>) -> Self {
        OAuthConfig {
            public_url: String::new(),
            issuers: Vec::new(),
            audiences: Vec::new(),
            scopes_supported: Vec::new(),
            ca_file,
            refresh: DEFAULT_REFRESH,
            kid_refresh: DEFAULT_KID_REFRESH,
            upstreams,
        }
    }

    /// Where the Protected Resource Metadata is (RFC 9728 section 3.1: the well-known name
    /// inserted between the host and the path of the resource).
    pub fn metadata_url(&self) -> String {
        let (origin, path) = split_origin(&self.public_url);
        format!("{origin}/.well-known/oauth-protected-resource{path}")
    }

    /// The path of [`metadata_url`](Self::metadata_url), which the endpoint serves.
    pub fn metadata_path(&self) -> String {
        let (_, path) = split_origin(&self.public_url);
        format!("/.well-known/oauth-protected-resource{path}")
    }

    /// Whether `aud` is one this proxy accepts (its canonical URL, compared with the scheme
    /// and host in any case and without a trailing slash, or a configured audience).
    pub fn accepts_audience(&self, aud: &str) -> bool {
        same_resource(aud, &self.public_url) || self.audiences.iter().any(|a| a == aud)
    }
}

/// Checks `[[auth.oauth.upstreams]]` or `[[auth.upstreams]]` (named `table` in errors).
pub(super) fn build_upstreams(
    raw: Vec<RawUpstream>,
    table: &str,
) -> Result<Vec<UpstreamCredentials>, Located> {
    let mut upstreams: Vec<UpstreamCredentials> = Vec::new();
    for u in raw {
        let url = UpstreamUrl::parse(u.token_url.get_ref())
            .map_err(|m| (Some(u.token_url.span()), format!("token_url: {m}")))?;
        let loopback = matches!(url.host.as_str(), "127.0.0.1" | "::1" | "localhost");
        if !url.tls && !loopback {
            return Err((
                Some(u.token_url.span()),
                format!(
                    "token_url \"{}\" is not https; the client secret must travel over TLS",
                    u.token_url.get_ref()
                ),
            ));
        }
        if upstreams.iter().any(|o| &o.server == u.server.get_ref()) {
            return Err((
                Some(u.server.span()),
                format!(
                    "server \"{}\" already has {table} credentials; keep one entry",
                    u.server.get_ref()
                ),
            ));
        }
        let token_exchange = match &u.grant {
            None => false,
            Some(g) => match g.get_ref().as_str() {
                "client_credentials" => false,
                "token_exchange" => true,
                other => {
                    return Err((
                        Some(g.span()),
                        format!("grant = \"{other}\" is not known; use \"client_credentials\" (the proxy's own token) or \"token_exchange\" (the client's token exchanged for this upstream)"),
                    ))
                }
            },
        };
        if token_exchange && u.resource.is_none() {
            return Err((
                Some(u.server.span()),
                format!("server \"{}\": grant = \"token_exchange\" needs resource = the upstream's URL (the audience of the exchanged token)", u.server.get_ref()),
            ));
        }
        upstreams.push(UpstreamCredentials {
            token_exchange,
            server: u.server.into_inner(),
            token_url: u.token_url.into_inner(),
            client_id: u.client_id,
            client_secret: u.client_secret,
            scope: u.scope,
            resource: u.resource,
        });
    }
    Ok(upstreams)
}

/// Checks that each `[[auth.oauth.upstreams]]` entry names an HTTP server of `servers` that
/// does not already send its own `Authorization` header (two credentials: which one would the
/// upstream see?).
pub(super) fn check_upstreams(
    upstreams: &[UpstreamCredentials],
    servers: &[super::servers::ServerConfig],
) -> Result<(), String> {
    for u in upstreams {
        let Some(server) = servers.iter().find(|s| s.name == u.server) else {
            let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "[[auth.oauth.upstreams]] server = \"{}\": no [[servers]] entry has that name (servers: {}); write the name of the server these credentials are for",
                u.server,
                names.join(", ")
            ));
        };
        if server
            .headers()
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            return Err(format!(
                "server \"{}\" has both a static Authorization header and [[auth.oauth.upstreams]] credentials; keep one (remove the header to use OAuth)",
                u.server
            ));
        }
        if matches!(server.transport, super::servers::Transport::Stdio(_)) {
            return Err(format!(
                "[[auth.oauth.upstreams]] server = \"{}\" is a stdio server; OAuth credentials are for servers reached over HTTP",
                u.server
            ));
        }
    }
    Ok(())
}

/// `scheme://authority` and the path (empty, or starting with `/`) of an absolute URL.
fn split_origin(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    (&url[..path_start], &url[path_start..])
}

/// RFC 8707 resource comparison: scheme and host case-insensitive, one trailing slash ignored.
fn same_resource(a: &str, b: &str) -> bool {
    let (oa, pa) = split_origin(a);
    let (ob, pb) = split_origin(b);
    oa.eq_ignore_ascii_case(ob) && pa.trim_end_matches('/') == pb.trim_end_matches('/')
}

impl std::fmt::Debug for UpstreamCredentials {
    // The secret stays out of every log and error that prints a configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCredentials")
            .field("server", &self.server)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scope", &self.scope)
            .field("resource", &self.resource)
            .field("token_exchange", &self.token_exchange)
            .finish()
    }
}

/// `[auth.oauth]` as serde sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth {
    public_url: Spanned<String>,
    issuers: Spanned<Vec<String>>,
    #[serde(default)]
    audience: Vec<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
    #[serde(default)]
    ca_file: Option<Spanned<String>>,
    #[serde(default)]
    refresh_seconds: Option<Spanned<u64>>,
    #[serde(default)]
    kid_refresh_seconds: Option<Spanned<u64>>,
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    server: Spanned<String>,
    token_url: Spanned<String>,
    client_id: String,
    client_secret: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    grant: Option<Spanned<String>>,
}

/// Checks `[auth.oauth]`.
pub(super) fn build(raw: RawOAuth) -> Result<OAuthConfig, Located> {
    let public_url = raw.public_url.get_ref();
    let parsed = UpstreamUrl::parse(public_url).map_err(|m| {
        (
            Some(raw.public_url.span()),
            format!("public_url: {m} (the URL clients use for /mcp, e.g. \"https://mcp.example.com/mcp\")"),
        )
    })?;
    if parsed.path.contains('?') {
        return Err((
            Some(raw.public_url.span()),
            format!("public_url \"{public_url}\" has a query; the canonical URL of an MCP server has none"),
        ));
    }
    if raw.issuers.get_ref().is_empty() {
        return Err((
            Some(raw.issuers.span()),
            "issuers is empty; name the authorization server(s) whose tokens to accept, e.g. issuers = [\"https://login.example.com\"]".into(),
        ));
    }
    for issuer in raw.issuers.get_ref() {
        let url = UpstreamUrl::parse(issuer)
            .map_err(|m| (Some(raw.issuers.span()), format!("issuer: {m}")))?;
        // RFC 8414 section 2: the issuer is an https URL. Loopback http is let through for
        // an authorization server on the same machine.
        let loopback = matches!(url.host.as_str(), "127.0.0.1" | "::1" | "localhost");
        if !url.tls && !loopback {
            return Err((
                Some(raw.issuers.span()),
                format!("issuer \"{issuer}\" is not https; tokens and keys must come over TLS (use ca_file for a private CA)"),
            ));
        }
    }
    let seconds = |v: &Option<Spanned<u64>>, name: &str, default: Duration, min: u64| match v {
        Some(s) if *s.get_ref() < min => Err((
            Some(s.span()),
            format!("{name} = {} is too short; use at least {min}", s.get_ref()),
        )),
        Some(s) => Ok(Duration::from_secs(*s.get_ref())),
        None => Ok(default),
    };
    let upstreams = build_upstreams(raw.upstreams, "[[auth.oauth.upstreams]]")?;
    Ok(OAuthConfig {
        upstreams,
        public_url: public_url.trim_end_matches('/').to_owned(),
        issuers: raw.issuers.into_inner(),
        audiences: raw.audience,
        scopes_supported: raw.scopes_supported,
        ca_file: raw.ca_file.map(|c| PathBuf::from(c.into_inner())),
        refresh: seconds(&raw.refresh_seconds, "refresh_seconds", DEFAULT_REFRESH, 1)?,
        kid_refresh: seconds(
            &raw.kid_refresh_seconds,
            "kid_refresh_seconds",
            DEFAULT_KID_REFRESH,
            1,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const CLIENT: &str = "[[auth.clients]]\nname = \"users\"\nsubjects = [\"*\"]\n";

    #[test]
    fn metadata_lives_at_the_well_known_name_inserted_before_the_path() {
        let c = Config::from_toml_str(
            &format!("[auth]\nenabled = true\n[auth.oauth]\npublic_url = \"https://MCP.example.com/mcp/\"\nissuers = [\"https://login.example.com\"]\n{CLIENT}"),
            "t.toml",
        )
        .expect("valid");
        let o = c.auth.oauth.expect("oauth");
        assert_eq!(o.public_url, "https://MCP.example.com/mcp");
        assert_eq!(
            o.metadata_url(),
            "https://MCP.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            o.metadata_path(),
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert!(o.accepts_audience("https://mcp.example.com/mcp"));
        assert!(o.accepts_audience("HTTPS://mcp.example.com/mcp/"));
        assert!(!o.accepts_audience("https://mcp.example.com/other"));
        assert!(!o.accepts_audience("https://evil.example.com/mcp"));
        assert_eq!(o.kid_refresh.as_secs(), 30);
    }

    #[test]
    fn mistakes_are_located() {
        let err = |text: &str| match Config::from_toml_str(text, "t.toml") {
            Ok(_) => panic!("accepted {text}"),
            Err(e) => (e.line(), e.to_string()),
        };
        let (line, m) = err(
            "[auth]\n[auth.oauth]\npublic_url = \"mcp.example.com\"\nissuers = [\"https://a\"]\n",
        );
        assert_eq!(line, Some(3), "{m}");
        assert!(m.contains("public_url"), "{m}");
        let (line, m) = err("[auth]\n[auth.oauth]\npublic_url = \"https://m/mcp\"\nissuers = [\"http://login.example.com\"]\n");
        assert_eq!(line, Some(4), "{m}");
        assert!(m.contains("not https"), "{m}");
        let (_, m) = err("[auth]\n[auth.oauth]\npublic_url = \"https://m/mcp\"\nissuers = []\n");
        assert!(m.contains("issuers is empty"), "{m}");
        // Subjects need a way to verify tokens: jwks_file or [auth.oauth].
        let ok = Config::from_toml_str(
            &format!("[auth]\nenabled = true\n[auth.oauth]\npublic_url = \"https://m/mcp\"\nissuers = [\"https://127.0.0.1:1\"]\n{CLIENT}"),
            "t.toml",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn upstream_credentials_must_name_a_server_without_its_own_authorization() {
        let err = |servers: &str, grant: &str| {
            let text = format!(
                "[auth]\nenabled = true\n[auth.oauth]\npublic_url = \"https://m/mcp\"\nissuers = [\"https://127.0.0.1:1\"]\n[[auth.oauth.upstreams]]\nserver = \"up\"\ntoken_url = \"https://127.0.0.1:1/token\"\nclient_id = \"c\"\nclient_secret = \"s\"\nresource = \"https://up/mcp\"\n{grant}\n{CLIENT}{servers}"
            );
            Config::from_toml_str(&text, "t.toml")
                .map(drop)
                .map_err(|e| e.to_string())
        };
        let m = err(
            "[[servers]]\nname = \"other\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
            "",
        )
        .unwrap_err();
        assert!(
            m.contains("server = \"up\": no [[servers]] entry") && m.contains("other"),
            "{m}"
        );
        let m = err("[[servers]]\nname = \"up\"\nurl = \"http://127.0.0.1:9/mcp\"\nheaders = { Authorization = \"Bearer x\" }\n", "").unwrap_err();
        assert!(m.contains("both a static Authorization header"), "{m}");
        let m = err(
            "[[servers]]\nname = \"up\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
            "grant = \"password\"",
        )
        .unwrap_err();
        assert!(m.contains("token_exchange"), "{m}");
        let ok = err(
            "[[servers]]\nname = \"up\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
            "grant = \"token_exchange\"",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }
}
