//! The control thread that fetches the trusted issuers' metadata and keys, off the shards.
//!
//! One OS thread ("oauth-keys") with a small blocking HTTPS client ([`super::http`]), started
//! the first time an `[auth.oauth]` (or `[[auth.upstreams]]`) is installed. It wakes when a
//! key set is due (its cache lifetime, at most `refresh_seconds`), when a reload changed the
//! issuers, and when a shard saw a token naming a `kid` it does not know: that last kind is
//! honoured at most once per `kid_refresh_seconds` per issuer, so forged `kid`s cannot make the
//! proxy hammer the issuer. A fetch that fails keeps the keys in use and is tried again after
//! `kid_refresh_seconds`. New key sets reach the shards like a reload ([`super::keys`]); a
//! request refused for an unknown `kid` is parked until the refresh it asked for is in force
//! (at most 2 s), then checked again, so the first token signed with a rotated-in key passes.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::auth::{jwks_entries, AuthConfig, Jwk, JwkKey};
use crate::config::oauth::OAuthConfig;

use super::keys::{self, IssuerKeys, IssuerStatus};

pub(super) enum Nudge {
    /// `[auth]` was installed or reloaded: look at the issuers again.
    Config,
    /// A token of this trusted issuer named a `kid` none of its keys has; the sender is
    /// dropped once the refresh it asked for is in force (or was not done: too soon).
    UnknownKid(String, flume::Sender<()>),
    /// A client's token, verified, for exchanges ([`super::exchange`]).
    Subject {
        principal: [u8; 32],
        token: String,
        expires: u64,
    },
    /// A request waits for a client's token exchanged for a server.
    Exchange {
        principal: [u8; 32],
        server: String,
        reply: flume::Sender<Result<(), String>>,
    },
}

static NUDGE: OnceLock<SyncSender<Nudge>> = OnceLock::new();
/// Rounds completed, for [`wait_first_fetch`].
static ROUNDS: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// Tells the fetch thread about a newly installed `[auth]`, starting it the first time one has
/// an `[auth.oauth]`. Never blocks (a reload runs on shard 0).
pub fn follow(config: &AuthConfig) {
    if config.oauth.is_none() && config.upstreams.is_empty() && NUDGE.get().is_none() {
        return;
    }
    let _ = sender().try_send(Nudge::Config);
}

/// Sends the thread `nudge` when it runs; dropped when it has many waiting.
pub(super) fn nudge(nudge: Nudge) {
    let _ = try_nudge(nudge);
}

/// [`nudge`], giving it back when it could not be sent.
pub(super) fn try_nudge(nudge: Nudge) -> Result<(), Nudge> {
    match NUDGE.get() {
        Some(tx) => tx.try_send(nudge).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(n)
            | std::sync::mpsc::TrySendError::Disconnected(n) => n,
        }),
        None => Err(nudge),
    }
}

/// Asks for `issuer`'s keys to be fetched again because a token named an unknown `kid`;
/// dropped when the thread already has many requests waiting. The refused request can wait
/// for that refresh ([`take_key_wait`]).
pub fn unknown_kid(issuer: &str) {
    thread_local! {
        static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
        static PENDING: std::cell::RefCell<Option<flume::Receiver<()>>> =
            const { std::cell::RefCell::new(None) };
    }
    // At most one request a second from each shard: a flood of forged kids costs the shard a
    // clock read each, not a message to the thread (whose channel takes a lock). The requests
    // in between wait for the refresh already asked for.
    let now = Instant::now();
    let wait = if LAST.get().is_some_and(|t| now < t + Duration::from_secs(1)) {
        PENDING.with(|p| p.borrow().clone().filter(|rx| !rx.is_disconnected()))
    } else {
        LAST.set(Some(now));
        let (tx, rx) = flume::bounded(1);
        let sent = try_nudge(Nudge::UnknownKid(issuer.to_owned(), tx)).is_ok();
        let rx = sent.then_some(rx);
        PENDING.with(|p| p.borrow_mut().clone_from(&rx));
        rx
    };
    KEY_WAIT.with(|w| *w.borrow_mut() = wait);
}

thread_local! {
    /// The key refresh the last refusal on this shard asked for (or joined).
    static KEY_WAIT: std::cell::RefCell<Option<flume::Receiver<()>>> =
        const { std::cell::RefCell::new(None) };
}

/// Longest a request whose token names an unknown `kid` waits for the keys to be fetched.
const KEY_WAIT_LIMIT: Duration = Duration::from_secs(2);

/// When the credentials just refused on this shard named a `kid` the issuer may have rotated
/// in, the wait for the refresh that asked for: it ends when the new keys are in force, the
/// thread declined (asked too recently), or after 2 s. The request's future is parked on it;
/// the shard serves others meanwhile.
pub fn take_key_wait() -> Option<impl std::future::Future<Output = ()>> {
    let rx = KEY_WAIT.with(|w| w.borrow_mut().take())?;
    Some(async move {
        let _ = glommio::timer::timeout(KEY_WAIT_LIMIT, async {
            let _ = rx.recv_async().await;
            Ok(())
        })
        .await;
    })
}

/// Waits until the first round of fetches ended (or `timeout`), so the proxy starts serving
/// with the keys it could get; returns at once without `[auth.oauth]`.
pub fn wait_first_fetch(config: &AuthConfig, timeout: Duration) {
    if config.oauth.is_none() && config.upstreams.is_empty() {
        return;
    }
    let (lock, done) = &ROUNDS;
    let rounds = lock.lock().unwrap_or_else(|p| p.into_inner());
    let _ = done.wait_timeout_while(rounds, timeout, |r| *r == 0);
}

fn sender() -> &'static SyncSender<Nudge> {
    NUDGE.get_or_init(|| {
        let (tx, rx) = sync_channel(256);
        crate::upstream::credentials::serve_exchanges(super::exchange::request);
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
    /// Requests waiting for a refresh their token's unknown `kid` asked for.
    waiters: Vec<flume::Sender<()>>,
}

fn run(rx: Receiver<Nudge>) {
    let mut issuers: HashMap<String, Issuer> = HashMap::new();
    let mut tokens: HashMap<String, super::upstream_tokens::Held> = HashMap::new();
    let mut published_tokens: Option<HashMap<String, String>> = None;
    let mut agent: Option<(Option<std::path::PathBuf>, ureq::Agent)> = None;
    let mut published: Option<Vec<IssuerKeys>> = None;
    let mut exchanges = super::exchange::Exchanges::default();
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
                let exchanged = exchanges.round(&oauth, agent);
                keys.min(upstream)
                    .min(exchanged)
                    .max(Duration::from_millis(10))
            }
            None => Duration::from_secs(3600),
        };
        {
            let (lock, done) = &ROUNDS;
            *lock.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            done.notify_all();
        }
        match rx.recv_timeout(wait) {
            Ok(Nudge::UnknownKid(issuer, waiter)) => {
                if let Some(i) = issuers.get_mut(&issuer) {
                    i.kid_wanted = true;
                    i.waiters.push(waiter);
                }
            }
            Ok(Nudge::Subject {
                principal,
                token,
                expires,
            }) => exchanges.subject(principal, token, expires),
            Ok(Nudge::Exchange {
                principal,
                server,
                reply,
            }) => exchanges.want(principal, server, reply),
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
    let mut answered: Vec<flume::Sender<()>> = Vec::new();
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
            waiters: Vec::new(),
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
        // Waiters are answered after the keys are published (below): fetched now, or not to
        // be fetched within their wait because the last fetch was too recent.
        if due || kid_at > now + KEY_WAIT_LIMIT {
            answered.append(&mut issuer.waiters);
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
    drop(answered);
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

pub(super) fn unix_now() -> u64 {
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
