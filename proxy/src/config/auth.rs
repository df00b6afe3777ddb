//! The `[auth]` table: who may use the `/mcp` endpoint, what each client sees, and its limits.
//!
//! Off by default. Clients are `[[auth.clients]]` entries, recognized by an API key (sent as
//! `Authorization: Bearer <key>`) or by the `sub` of a JWT verified against the keys of
//! `jwks_file`. Every problem is reported with its line and column, like the rest of the file.

use std::ops::Range;
use std::time::Duration;

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::Deserialize;
use toml::Spanned;

use super::oauth::{OAuthConfig, RawOAuth};

/// Longest leeway accepted for `exp`/`nbf`: more would make expiry meaningless.
const MAX_LEEWAY_SECS: u64 = 300;
/// Shortest API key accepted: shorter ones can be guessed.
const MIN_API_KEY_LEN: usize = 16;

/// Leeway on `exp`/`nbf` when none is configured.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Downstream authentication and per-client policy (`[auth]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Whether `/mcp` requires credentials.
    pub enabled: bool,
    /// Clock skew tolerated when checking `exp` and `nbf`.
    pub leeway: Duration,
    /// Accepted `iss` values of JWTs; empty accepts any.
    pub issuers: Vec<String>,
    /// Accepted `aud` values of JWTs (one must match); empty accepts any.
    pub audiences: Vec<String>,
    /// JWT verification keys read from `jwks_file`.
    pub keys: Vec<Jwk>,
    /// The known clients, in file order (a JWT goes to the first whose subjects match).
    pub clients: Vec<ClientConfig>,
    /// `[auth.oauth]`: trusted authorization servers and the proxy's canonical URL.
    pub oauth: Option<OAuthConfig>,
    /// `[[auth.upstreams]]`: the proxy's own OAuth client credentials for upstream servers,
    /// usable without `[auth.oauth]` (clients with API keys), with `upstream_ca_file`.
    pub upstreams: Vec<super::oauth::UpstreamCredentials>,
    /// PEM file of CAs trusted for `[[auth.upstreams]]` token endpoints instead of the web roots.
    pub upstream_ca_file: Option<std::path::PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            leeway: DEFAULT_LEEWAY,
            issuers: Vec::new(),
            audiences: Vec::new(),
            keys: Vec::new(),
            clients: Vec::new(),
            oauth: None,
            upstreams: Vec::new(),
            upstream_ca_file: None,
        }
    }
}

/// One verification key of the JWKS file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    /// `kid`, which a token's header may name.
    pub kid: Option<String>,
    /// The key material, typed by algorithm so a key is never used with another one.
    pub key: JwkKey,
}

/// Key material for one of the accepted algorithms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwkKey {
    /// HMAC-SHA256 secret (`kty = "oct"`).
    Hs256(Vec<u8>),
    /// RSA public key, big-endian modulus and exponent (`kty = "RSA"`).
    Rs256 {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// P-256 public point, uncompressed (`0x04 || x || y`; `kty = "EC"`).
    Es256(Vec<u8>),
}

impl JwkKey {
    /// The JWS `alg` this key verifies.
    pub fn alg(&self) -> &'static str {
        match self {
            JwkKey::Hs256(_) => "HS256",
            JwkKey::Rs256 { .. } => "RS256",
            JwkKey::Es256(_) => "ES256",
        }
    }
}

/// One `[[auth.clients]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Name in logs, metrics and errors.
    pub name: String,
    /// SHA-256 of each API key (keys are compared as digests, in constant time).
    pub api_keys: Vec<[u8; 32]>,
    /// Glob patterns on a JWT's `sub` that map the token to this client.
    pub subjects: Vec<String>,
    /// Scopes a JWT must carry (all of them) to be this client; with no `subjects`, any
    /// verified token carrying them is.
    pub scopes: Vec<String>,
    /// Glob patterns on server names this client may use (`proxy` names the proxy's own tools).
    pub servers: Vec<String>,
    /// Glob patterns on exposed tool names (`server__tool`) this client may see and call.
    pub tools: Vec<String>,
    /// (pattern on exposed tool names, scope): calling a matching tool with a token takes the
    /// scope (403 `insufficient_scope` naming it otherwise); API keys are not held to it.
    pub tool_scopes: Vec<(String, String)>,
    /// Most sessions open at once for this client, across shards.
    pub max_sessions: Option<usize>,
    /// Requests allowed per shard, as a token bucket.
    pub rate: Option<Rate>,
}

/// A token bucket: `requests` per `per`, holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per `per`.
    pub requests: u32,
    /// The refill period.
    pub per: Duration,
    /// Bucket size.
    pub burst: u32,
}

/// `[auth]` as serde sees it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(default)]
    enabled: Option<Spanned<bool>>,
    #[serde(default)]
    leeway_seconds: Option<Spanned<u64>>,
    #[serde(default)]
    issuer: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    audience: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    jwks_file: Option<Spanned<String>>,
    #[serde(default)]
    clients: Vec<RawClient>,
    #[serde(default)]
    oauth: Option<RawOAuth>,
    #[serde(default)]
    upstreams: Vec<super::oauth::RawUpstream>,
    #[serde(default)]
    upstream_ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: Spanned<String>,
    #[serde(default)]
    api_keys: Vec<Spanned<String>>,
    #[serde(default)]
    subjects: Vec<Spanned<String>>,
    #[serde(default)]
    scopes: Vec<Spanned<String>>,
    #[serde(default)]
    servers: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    tools: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    tool_scopes: Option<Spanned<std::collections::BTreeMap<String, String>>>,
    #[serde(default)]
    max_sessions: Option<Spanned<u64>>,
    #[serde(default)]
    rate_limit: Option<Spanned<String>>,
    #[serde(default)]
    burst: Option<Spanned<u32>>,
}

/// An error at a span of the configuration text.
pub type Located = (Option<Range<usize>>, String);

/// Checks `[auth]` and reads its JWKS file.
pub(super) fn build(raw: RawAuth) -> Result<AuthConfig, Located> {
    let enabled = raw.enabled.as_ref().is_some_and(|e| *e.get_ref());
    let leeway = match &raw.leeway_seconds {
        Some(l) if *l.get_ref() > MAX_LEEWAY_SECS => {
            return Err((
                Some(l.span()),
                format!("leeway_seconds = {} is too long; use at most {MAX_LEEWAY_SECS} (a minute or less is usual)", l.get_ref()),
            ))
        }
        Some(l) => Duration::from_secs(*l.get_ref()),
        None => DEFAULT_LEEWAY,
    };
    let keys = match &raw.jwks_file {
        Some(path) => read_jwks(path.get_ref()).map_err(|m| {
            (
                Some(path.span()),
                format!("jwks_file {}: {m}", path.get_ref()),
            )
        })?,
        None => Vec::new(),
    };
    let oauth = raw.oauth.map(super::oauth::build).transpose()?;
    let upstreams = super::oauth::build_upstreams(raw.upstreams, "[[auth.upstreams]]")?;
    if let Some(u) = upstreams.iter().find(|u| u.token_exchange) {
        return Err((None, format!("[[auth.upstreams]] server = \"{}\": grant = \"token_exchange\" exchanges clients' OAuth tokens; put it under [[auth.oauth.upstreams]]", u.server)));
    }
    if let Some(o) = &oauth {
        if let Some(dup) = upstreams
            .iter()
            .find(|u| o.upstreams.iter().any(|x| x.server == u.server))
        {
            return Err((None, format!("server \"{}\" has credentials in both [[auth.upstreams]] and [[auth.oauth.upstreams]]; keep one", dup.server)));
        }
    }
    let mut clients: Vec<ClientConfig> = Vec::with_capacity(raw.clients.len());
    for c in raw.clients {
        let name = c.name.get_ref();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err((
                Some(c.name.span()),
                format!("client name \"{name}\" must be 1 to 64 letters, digits, '-', '_' or '.'"),
            ));
        }
        if clients.iter().any(|o| &o.name == name) {
            return Err((Some(c.name.span()), format!("duplicate client name \"{name}\"; give each [[auth.clients]] entry a unique name")));
        }
        if c.api_keys.is_empty() && c.subjects.is_empty() && c.scopes.is_empty() {
            return Err((
                Some(c.name.span()),
                format!("client \"{name}\" has neither api_keys nor subjects nor scopes, so nobody can be it; add api_keys = [\"...\"], subjects = [\"...\"] or scopes = [\"...\"]"),
            ));
        }
        let mut api_keys = Vec::with_capacity(c.api_keys.len());
        for k in &c.api_keys {
            let digest = key_digest(k.get_ref()).map_err(|m| (Some(k.span()), m))?;
            let taken = clients
                .iter()
                .find(|o| o.api_keys.contains(&digest))
                .map(|o| o.name.clone());
            if taken.is_some() || api_keys.contains(&digest) {
                return Err((
                    Some(k.span()),
                    format!(
                        "this API key is already given to client \"{}\"; each key names one client",
                        taken.as_deref().unwrap_or(name)
                    ),
                ));
            }
            api_keys.push(digest);
        }
        if let Some(s) = c.subjects.first().or(c.scopes.first()) {
            if keys.is_empty() && oauth.is_none() {
                return Err((
                    Some(s.span()),
                    format!("client \"{name}\" is recognized by JWT subjects, but [auth] has no jwks_file or [auth.oauth] to verify tokens with; add jwks_file = \"path/to/jwks.json\" or an [auth.oauth] table"),
                ));
            }
        }
        let patterns =
            |list: Option<Vec<Spanned<String>>>, what: &str| -> Result<Vec<String>, Located> {
                let list = list.map_or_else(
                    || vec!["*".to_owned()],
                    |l| l.into_iter().map(Spanned::into_inner).collect(),
                );
                if list.iter().any(String::is_empty) {
                    return Err((
                        Some(c.name.span()),
                        format!("client \"{name}\" has an empty {what} pattern; use \"*\" for all"),
                    ));
                }
                Ok(list)
            };
        let subjects = c
            .subjects
            .iter()
            .map(|s| s.get_ref().clone())
            .collect::<Vec<_>>();
        if subjects.iter().any(String::is_empty) {
            return Err((
                Some(c.name.span()),
                format!("client \"{name}\" has an empty subject pattern"),
            ));
        }
        let scopes: Vec<String> = c.scopes.iter().map(|s| s.get_ref().clone()).collect();
        if let Some(bad) = c.scopes.iter().find(|s| {
            s.get_ref().is_empty()
                || s.get_ref()
                    .contains(|ch: char| ch.is_whitespace() || ch == '"')
        }) {
            return Err((
                Some(bad.span()),
                format!("client \"{name}\" has scope {:?}; a scope is one non-empty word without spaces or quotes", bad.get_ref()),
            ));
        }
        let servers = patterns(c.servers, "servers")?;
        let tools = patterns(c.tools, "tools")?;
        let mut tool_scopes = Vec::new();
        if let Some(t) = c.tool_scopes {
            let span = t.span();
            for (pattern, scope) in t.into_inner() {
                if pattern.is_empty()
                    || scope.is_empty()
                    || scope.contains(|ch: char| ch.is_whitespace() || ch == '"')
                {
                    return Err((
                        Some(span),
                        format!("client \"{name}\" has tool_scopes {pattern:?} = {scope:?}; write a tool pattern (e.g. \"billing__*\") and one scope word (e.g. \"billing:write\")"),
                    ));
                }
                tool_scopes.push((pattern, scope));
            }
        }
        let max_sessions = match c.max_sessions {
            Some(m) if *m.get_ref() == 0 => {
                return Err((Some(m.span()), "max_sessions = 0 would refuse every session; use 1 or more, or drop the line for no limit".into()))
            }
            Some(m) => Some(usize::try_from(*m.get_ref()).unwrap_or(usize::MAX)),
            None => None,
        };
        let rate = match (&c.rate_limit, &c.burst) {
            (Some(r), burst) => {
                let (requests, per) = parse_rate(r.get_ref()).map_err(|m| (Some(r.span()), m))?;
                let burst = match burst {
                    Some(b) if *b.get_ref() == 0 => {
                        return Err((
                            Some(b.span()),
                            "burst = 0 would refuse every request; use 1 or more".into(),
                        ))
                    }
                    Some(b) => *b.get_ref(),
                    None => requests,
                };
                Some(Rate {
                    requests,
                    per,
                    burst,
                })
            }
            (None, Some(b)) => {
                return Err((
                    Some(b.span()),
                    format!(
                        "client \"{name}\" has burst but no rate_limit; add rate_limit = \"10/s\""
                    ),
                ))
            }
            (None, None) => None,
        };
        clients.push(ClientConfig {
            name: name.clone(),
            api_keys,
            subjects,
            scopes,
            servers,
            tools,
            tool_scopes,
            max_sessions,
            rate,
        });
    }
    if enabled && clients.is_empty() {
        let span = raw.enabled.as_ref().map(Spanned::span);
        return Err((span, "[auth] is enabled but has no [[auth.clients]] entry, so every request would be refused; add one with api_keys or subjects".into()));
    }
    Ok(AuthConfig {
        enabled,
        leeway,
        issuers: raw
            .issuer
            .map(|i| i.into_inner().into_vec())
            .unwrap_or_default(),
        audiences: raw
            .audience
            .map(|a| a.into_inner().into_vec())
            .unwrap_or_default(),
        keys,
        clients,
        oauth,
        upstreams,
        upstream_ca_file: raw.upstream_ca_file.map(std::path::PathBuf::from),
    })
}

/// SHA-256 of an API key given in the clear, or the digest given as `sha256:<64 hex>`.
fn key_digest(key: &str) -> Result<[u8; 32], String> {
    if let Some(hex) = key.strip_prefix("sha256:") {
        let mut out = [0u8; 32];
        if hex.len() != 64 {
            return Err(
                "a sha256: API key digest is 64 hex digits (e.g. from `printf %s KEY | sha256sum`)"
                    .into(),
            );
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = hex
                .get(i * 2..i * 2 + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a sha256: API key digest is 64 hex digits (e.g. from `printf %s KEY | sha256sum`)")?;
        }
        return Ok(out);
    }
    if key.len() < MIN_API_KEY_LEN {
        return Err(format!(
            "API key is {} characters; use at least {MIN_API_KEY_LEN} random ones (e.g. `openssl rand -hex 32`)",
            key.len()
        ));
    }
    if key.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(
            "API keys are visible ASCII without spaces (they travel in an HTTP header)".into(),
        );
    }
    Ok(sha256(key.as_bytes()))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `"N/s"`, `"N/m"` or `"N/h"`.
fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let hint =
        "write rate_limit as requests per second, minute or hour, e.g. \"10/s\" or \"600/m\"";
    let (n, unit) = text
        .split_once('/')
        .ok_or_else(|| format!("invalid rate_limit \"{text}\"; {hint}"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("invalid rate_limit \"{text}\"; {hint}"))?;
    if n == 0 {
        return Err(format!("rate_limit \"{text}\" allows nothing; {hint}"));
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(format!("invalid rate_limit \"{text}\"; {hint}")),
    };
    Ok((n, per))
}

/// Reads the verification keys of a JWKS file (RFC 7517).
fn read_jwks(path: &str) -> Result<Vec<Jwk>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot be read: {e}"))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("is not JSON: {e}"))?;
    let mut keys = Vec::new();
    for key in jwks_entries(&doc)? {
        keys.push(key?);
    }
    if keys.is_empty() {
        return Err("has no keys; add at least one".into());
    }
    Ok(keys)
}

/// Each key of a JWKS document (RFC 7517), read or refused with what is wrong with it: a file
/// the operator wrote is refused whole for one bad key, a set fetched from an authorization
/// server keeps the keys the proxy can use (it may also publish encryption or other keys).
pub fn jwks_entries(doc: &serde_json::Value) -> Result<Vec<Result<Jwk, String>>, String> {
    let list = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("is not a JWKS: it needs {\"keys\": [...]}")?;
    Ok(list
        .iter()
        .enumerate()
        .map(|(i, k)| jwk_entry(i, k))
        .collect())
}

fn jwk_entry(i: usize, k: &serde_json::Value) -> Result<Jwk, String> {
    let kid = k.get("kid").and_then(|v| v.as_str()).map(str::to_owned);
    let which = match &kid {
        Some(kid) => format!("key {i} (kid {kid})"),
        None => format!("key {i}"),
    };
    let key = parse_jwk(k).map_err(|m| format!("{which}: {m}"))?;
    if let Some(alg) = k.get("alg").and_then(|v| v.as_str()) {
        if alg != key.alg() {
            return Err(format!(
                "{which}: alg {alg} does not fit its kty; this key verifies {}",
                key.alg()
            ));
        }
    }
    if k.get("use")
        .and_then(|v| v.as_str())
        .is_some_and(|u| u != "sig")
    {
        return Err(format!(
            "{which}: use is not \"sig\"; only signature keys verify tokens"
        ));
    }
    Ok(Jwk { kid, key })
}

fn parse_jwk(k: &serde_json::Value) -> Result<JwkKey, String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let text = k
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("missing \"{name}\""))?;
        URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .or_else(|_| URL_SAFE.decode(text))
            .map_err(|_| format!("\"{name}\" is not base64url"))
    };
    match k.get("kty").and_then(|v| v.as_str()) {
        Some("oct") => {
            let secret = field("k")?;
            // RFC 7518 3.2: an HS256 key must be at least as long as the hash.
            if secret.len() < 32 {
                return Err(format!(
                    "HS256 secret is {} bytes; use at least 32",
                    secret.len()
                ));
            }
            Ok(JwkKey::Hs256(secret))
        }
        Some("RSA") => {
            let n = field("n")?;
            let e = field("e")?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!(
                    "RSA key of about {bits} bits; RS256 needs at least 2048"
                ));
            }
            Ok(JwkKey::Rs256 { n, e })
        }
        Some("EC") => {
            if k.get("crv").and_then(|v| v.as_str()) != Some("P-256") {
                return Err("EC keys must be on curve P-256 (ES256)".into());
            }
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates x and y are 32 bytes each".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok(JwkKey::Es256(point))
        }
        Some(other) => Err(format!(
            "kty {other} is not supported; use RSA (RS256), EC P-256 (ES256) or oct (HS256)"
        )),
        None => Err("missing \"kty\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(text: &str) -> (Option<usize>, String) {
        match Config::from_toml_str(text, "config.toml") {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => (e.line(), e.to_string()),
        }
    }

    #[test]
    fn off_by_default() {
        let c = Config::from_toml_str("", "config.toml").expect("valid");
        assert!(!c.auth.enabled);
        assert!(c.auth.clients.is_empty());
    }

    #[test]
    fn clients_parse_with_defaults() {
        let c = Config::from_toml_str(
            "[auth]\nenabled = true\n[[auth.clients]]\nname = \"a\"\napi_keys = [\"0123456789abcdef0123\"]\nrate_limit = \"5/s\"\nmax_sessions = 2\n",
            "config.toml",
        )
        .expect("valid");
        let a = &c.auth.clients[0];
        assert_eq!(a.servers, vec!["*"]);
        assert_eq!(a.tools, vec!["*"]);
        assert_eq!(a.max_sessions, Some(2));
        let rate = a.rate.expect("rate");
        assert_eq!((rate.requests, rate.burst), (5, 5));
        assert_eq!(a.api_keys[0], super::sha256(b"0123456789abcdef0123"));
        assert_eq!(c.auth.leeway.as_secs(), 30);
    }

    #[test]
    fn the_example_config_documents_auth() {
        let text = include_str!("../../../docs/example-config.toml");
        let c = Config::from_toml_str(text, "example-config.toml").expect("valid");
        assert!(!c.auth.enabled, "the example must not lock anyone out");
        let ci = &c.auth.clients[0];
        assert_eq!(
            ci.api_keys[0],
            super::sha256(b"change-me-to-a-long-random-key-0001")
        );
        assert_eq!(ci.servers, vec!["everything", "mem"]);
        assert_eq!(ci.max_sessions, Some(4));
        assert_eq!(ci.rate.map(|r| (r.requests, r.burst)), Some((20, 40)));
    }

    #[test]
    fn problems_are_located() {
        let (line, msg) = error("[auth]\nenabled = true\n");
        assert_eq!(line, Some(2), "{msg}");
        assert!(msg.contains("no [[auth.clients]]"), "{msg}");
        let (line, msg) = error("[auth]\n[[auth.clients]]\nname = \"a\"\napi_keys = [\"short\"]\n");
        assert_eq!(line, Some(4), "{msg}");
        assert!(msg.contains("at least 16"), "{msg}");
        let (line, msg) = error("[auth]\n[[auth.clients]]\nname = \"a\"\nsubjects = [\"alice\"]\n");
        assert_eq!(line, Some(4), "{msg}");
        assert!(msg.contains("jwks_file"), "{msg}");
        let (line, msg) = error("[auth]\n[[auth.clients]]\nname = \"a\"\napi_keys = [\"0123456789abcdef0123\"]\nrate_limit = \"fast\"\n");
        assert_eq!(line, Some(5), "{msg}");
        assert!(msg.contains("10/s"), "{msg}");
        let (line, msg) = error("[auth]\njwks_file = \"/nonexistent/jwks.json\"\n");
        assert_eq!(line, Some(2), "{msg}");
        assert!(msg.contains("cannot be read"), "{msg}");
        let (line, msg) = error("[auth]\n[[auth.clients]]\nname = \"a\"\napi_keys = [\"0123456789abcdef0123\"]\n[[auth.clients]]\nname = \"b\"\napi_keys = [\"0123456789abcdef0123\"]\n");
        assert_eq!(line, Some(7), "{msg}");
        assert!(msg.contains("already given to client \"a\""), "{msg}");
        let (line, msg) = error("[auth]\nleeway_seconds = 3600\n");
        assert_eq!(line, Some(2), "{msg}");
        let (_, msg) = error("[auth]\n[[auth.clients]]\nname = \"a\"\napi_keys = [\"0123456789abcdef0123\"]\ncolour = 1\n");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn jwks_keys_are_checked() {
        let dir = std::env::temp_dir().join(format!("mcp-proxy-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"keys":[{"kty":"oct","kid":"h","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}"#).expect("write");
        let c = Config::from_toml_str(
            &format!("[auth]\njwks_file = \"{}\"\n", good.display()),
            "c",
        )
        .expect("valid");
        assert_eq!(c.auth.keys.len(), 1);
        assert_eq!(c.auth.keys[0].key.alg(), "HS256");
        let weak = dir.join("weak.json");
        std::fs::write(&weak, r#"{"keys":[{"kty":"oct","k":"c2hvcnQ"}]}"#).expect("write");
        let (_, msg) = error(&format!("[auth]\njwks_file = \"{}\"\n", weak.display()));
        assert!(msg.contains("at least 32"), "{msg}");
        let okp = dir.join("okp.json");
        std::fs::write(&okp, r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"}]}"#)
            .expect("write");
        let (_, msg) = error(&format!("[auth]\njwks_file = \"{}\"\n", okp.display()));
        assert!(msg.contains("kty OKP is not supported"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
