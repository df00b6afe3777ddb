//! The control thread that fetches the trusted issuers' metadata and keys, off the shards.
//!
//! One OS thread ("oauth-keys") with a small blocking HTTPS client ([`super::http`]), started the first time an `[auth.oauth]` is installed. It wakes when a key
//! set is due (its cache lifetime, at most `refresh_seconds`), when a reload changed the
//! issuers, and when a shard saw a token naming a `kid` it does not know: that last kind is
//! honoured at most once per `kid_refresh_seconds` per issuer, so forged `kid`s cannot make the
//! proxy hammer the issuer. A fetch that fails keeps the keys in use and is tried again after
//! `kid_refresh_seconds`. New key sets reach the shards like a reload ([`super::keys`]).

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::auth::{jwks_entries, AuthConfig, Jwk, JwkKey};
use crate::config::oauth::OAuthConfig;

use super::keys::{self, IssuerKeys, IssuerStatus};

enum Nudge {
    /// `[auth]` was installed or reloaded: look at the issuers again.
    Config,
    /// A token of this trusted issuer named a `kid` none of its keys has.
    UnknownKid(String),
}

static NUDGE: OnceLock<SyncSender<Nudge>> = OnceLock::new();
/// Rounds completed, for [`wait_first_fetch`].
static ROUNDS: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// Tells the fetch thread about a newly installed `[auth]`, starting it the first time one has
/// an `[auth.oauth]`. Never blocks (a reload runs on shard 0).
pub fn follow(config: &AuthConfig) {
    if config.oauth.is_none() && NUDGE.get().is_none() {
        return;
    }
    let _ = sender().try_send(Nudge::Config);
}

/// Asks for `issuer`'s keys to be fetched again because a token named an unknown `kid`;
/// dropped when the thread already has many requests waiting.
pub fn unknown_kid(issuer: &str) {
    thread_local! {
        static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    // At most one request a second from each shard: a flood of forged kids costs the shard a
    // clock read each, not a message to the thread (whose channel takes a lock).
    let now = Instant::now();
    if LAST.get().is_some_and(|t| now < t + Duration::from_secs(1)) {
        return;
    }
    LAST.set(Some(now));
    if let Some(tx) = NUDGE.get() {
        let _ = tx.try_send(Nudge::UnknownKid(issuer.to_owned()));
    }
}

/// Waits until the first round of fetches ended (or `timeout`), so the proxy starts serving
/// with the keys it could get; returns at once without `[auth.oauth]`.
pub fn wait_first_fetch(config: &AuthConfig, timeout: Duration) {
    if config.oauth.is_none() {
        return;
    }
    let (lock, done) = &ROUNDS;
    let rounds = lock.lock().unwrap_or_else(|p| p.into_inner());
    let _ = done.wait_timeout_while(rounds, timeout, |r| *r == 0);
}

fn sender() -> &'static SyncSender<Nudge> {
    NUDGE.get_or_init(|| {
        let (tx, rx) = sync_channel(64);
        if let Err(e) = std::thread::Builder::new()
            .name("oauth-keys".into())
            .spawn(move || run(rx))
        {
            log::error!("[auth.oauth]: cannot start the key fetch thread: {e}");
        }
        tx
    })
}

/// What the thread knows of one issuer.
struct Issuer {
    keys: Vec<Jwk>,
    status: IssuerStatus,
    next_due: Instant,
    kid_wanted: bool,
    last_attempt: Option<Instant>,
}

fn run(rx: Receiver<Nudge>) {
    let mut issuers: HashMap<String, Issuer> = HashMap::new();
    let mut tokens: HashMap<String, super::upstream_tokens::Held> = HashMap::new();
    let mut published_tokens: Option<HashMap<String, String>> = None;
    let mut agent: Option<(Option<std::path::PathBuf>, ureq::Agent)> = None;
    let mut published: Option<Vec<IssuerKeys>> = None;
    loop {
        let wait = match super::super::running::oauth() {
            Some(oauth) => {
                let ca = oauth.ca_file.clone();
                if agent.as_ref().is_none_or(|(c, _)| *c != ca) {
                    agent = make_agent(&oauth).map(|a| (ca, a));
                }
                let agent = agent.as_ref().map(|(_, a)| a);
                let keys = round(&oauth, agent, &mut issuers, &mut published);
                let upstream = super::upstream_tokens::round(
                    &oauth,
                    agent,
                    &mut tokens,
                    &mut published_tokens,
                );
                keys.min(upstream).max(Duration::from_millis(10))
            }
            None => Duration::from_secs(3600),
        };
        {
            let (lock, done) = &ROUNDS;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            done.notify_all();
        }
        match rx.recv_timeout(wait) {
            Ok(Nudge::UnknownKid(issuer)) => {
                if let Some(i) = issuers.get_mut(&issuer) {
                    i.kid_wanted = true;
                }
            }
            Ok(Nudge::Config) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn make_agent(oauth: &OAuthConfig) -> Option<ureq::Agent> {
    match super::http::agent(oauth.ca_file.as_deref()) {
        Ok(agent) => Some(agent),
        Err(e) => {
            log::error!("[auth.oauth] {e}; the issuers' keys cannot be fetched");
            None
        }
    }
}

/// Fetches what is due; returns how long to sleep before the next thing is due.
fn round(
    oauth: &OAuthConfig,
    agent: Option<&ureq::Agent>,
    issuers: &mut HashMap<String, Issuer>,
    published: &mut Option<Vec<IssuerKeys>>,
) -> Duration {
    issuers.retain(|name, _| oauth.issuers.contains(name));
    let now = Instant::now();
    let mut next = now + oauth.refresh;
    for name in &oauth.issuers {
        let issuer = issuers.entry(name.clone()).or_insert_with(|| Issuer {
            keys: Vec::new(),
            status: IssuerStatus {
                issuer: name.clone(),
                ..IssuerStatus::default()
            },
            next_due: now,
            kid_wanted: false,
            last_attempt: None,
        });
        let kid_at = issuer.last_attempt.map_or(now, |t| t + oauth.kid_refresh);
        let due = now >= issuer.next_due || (issuer.kid_wanted && now >= kid_at);
        if due {
            issuer.kid_wanted = false;
            issuer.last_attempt = Some(now);
            issuer.status.last_attempt = Some(unix_now());
            let result = match agent {
                Some(agent) => fetch(agent, name),
                None => Err("ca_file cannot be used (see the log at start)".into()),
            };
            let outcome = if result.is_ok() { "ok" } else { "failed" };
            metrics::counter!(
                crate::metrics::names::OAUTH_KEY_FETCHES,
                "issuer" => name.clone(),
                "outcome" => outcome
            )
            .increment(1);
            match result {
                Ok(fetched) => {
                    if issuer.keys != fetched.keys {
                        log::info!(
                            "[auth.oauth] {name}: {} key(s) in use from {}",
                            fetched.keys.len(),
                            fetched.jwks_uri
                        );
                    }
                    issuer.status.kids = fetched
                        .keys
                        .iter()
                        .map(|k| k.kid.clone().unwrap_or_else(|| "-".into()))
                        .collect();
                    issuer.keys = fetched.keys;
                    issuer.status.jwks_uri = Some(fetched.jwks_uri);
                    issuer.status.last_refresh = issuer.status.last_attempt;
                    issuer.status.last_error = None;
                    issuer.status.refreshes += 1;
                    let lifetime = fetched
                        .max_age
                        .unwrap_or(oauth.refresh)
                        .clamp(oauth.kid_refresh.min(oauth.refresh), oauth.refresh);
                    issuer.next_due = now + lifetime;
                }
                Err(e) => {
                    log::warn!(
                        "[auth.oauth] {name}: keys not refreshed, {} kept: {e}",
                        issuer.keys.len()
                    );
                    issuer.status.last_error = Some(e);
                    issuer.status.failures += 1;
                    issuer.next_due = now + oauth.kid_refresh;
                }
            }
        }
        next = next.min(issuer.next_due);
        if issuer.kid_wanted {
            next = next.min(issuer.last_attempt.map_or(now, |t| t + oauth.kid_refresh));
        }
    }
    let keys: Vec<IssuerKeys> = oauth
        .issuers
        .iter()
        .filter_map(|name| {
            issuers.get(name).map(|i| IssuerKeys {
                issuer: name.clone(),
                keys: i.keys.clone(),
            })
        })
        .collect();
    if published.as_ref() != Some(&keys) {
        keys::publish(keys.clone());
        *published = Some(keys);
    }
    keys::set_status(
        oauth
            .issuers
            .iter()
            .filter_map(|n| issuers.get(n).map(|i| i.status.clone()))
            .collect(),
    );
    next.saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10))
}

/// One issuer's keys as fetched.
struct Fetched {
    jwks_uri: String,
    keys: Vec<Jwk>,
    max_age: Option<Duration>,
}

/// Reads `issuer`'s metadata, then its JWKS.
fn fetch(agent: &ureq::Agent, issuer: &str) -> Result<Fetched, String> {
    let metadata = discover(agent, issuer)?;
    let jwks_uri = metadata
        .get("jwks_uri")
        .and_then(|v| v.as_str())
        .ok_or("its metadata has no jwks_uri")?
        .to_owned();
    let reply = super::http::get_json(agent, &jwks_uri)?;
    let max_age = reply.cache_control.as_deref().and_then(max_age);
    let doc = reply.doc;
    let mut keys = Vec::new();
    for entry in jwks_entries(&doc).map_err(|m| format!("{jwks_uri} {m}"))? {
        match entry {
            // A published set is public: a symmetric key in it would let anyone sign.
            Ok(Jwk {
                key: JwkKey::Hs256(_),
                ..
            }) => log::warn!("[auth.oauth] {issuer}: a symmetric key in a public JWKS is ignored"),
            Ok(key) => keys.push(key),
            Err(m) => log::debug!("[auth.oauth] {issuer}: {m}; not used"),
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "{jwks_uri} has no key the proxy can verify with (RSA 2048+ for RS256, EC P-256 for ES256)"
        ));
    }
    Ok(Fetched {
        jwks_uri,
        keys,
        max_age,
    })
}

/// Authorization server metadata: RFC 8414 first, then OpenID Connect discovery; its `issuer`
/// must be the one configured (RFC 8414 section 3.3), or it speaks for another server.
fn discover(agent: &ureq::Agent, issuer: &str) -> Result<serde_json::Value, String> {
    let base = issuer.trim_end_matches('/');
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let path_at = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let (origin, path) = base.split_at(path_at);
    let urls = [
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{base}/.well-known/openid-configuration"),
    ];
    let mut errors = Vec::new();
    for url in &urls {
        match super::http::get_json(agent, url) {
            Ok(reply) => {
                let doc = reply.doc;
                let named = doc.get("issuer").and_then(|v| v.as_str()).unwrap_or("");
                if named != issuer {
                    return Err(format!(
                        "{url} names issuer {named:?}, not {issuer:?}; write the issuer exactly as its metadata does"
                    ));
                }
                return Ok(doc);
            }
            Err(e) => errors.push(e),
        }
    }
    Err(errors.join("; "))
}

/// `max-age` of a `Cache-Control` value.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|d| {
        let (name, secs) = d.trim().split_once('=')?;
        name.eq_ignore_ascii_case("max-age")
            .then(|| secs.trim().trim_matches('"').parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_lifetime_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("Max-Age=\"5\""), Some(Duration::from_secs(5)));
    }
}
