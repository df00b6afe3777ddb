//! Who is calling `/mcp`, what they may see and call, and how much (see `docs/auth.md`).
//!
//! - [`gate`] runs where a request arrives: it authenticates the bearer (API key or JWT),
//!   maps it to a configured client and takes a token from that client's bucket on this
//!   shard. Buckets are thread-local (one shard per thread): no lock, no mesh message.
//! - [`SessionAuth`] is kept by each session: a digest of the identity that opened it (also
//!   sealed into the session id, so a restored session keeps it) and the client's policy.
//!   A request with other credentials is refused ([`admit`]).
//! - [`Policy`] filters lists and refuses calls of what the client may not see; a hidden tool
//!   is answered exactly like a tool that does not exist, so a client cannot probe for names.
//! - Sessions per client are counted in process-wide atomics touched only at session open
//!   and close.
//! - The running `[auth]` is one process-wide slot with a generation number, like the TLS
//!   listener's: a reload swaps it, and each shard keeps its own copy, refreshed when one
//!   atomic load shows a new generation, so the hot path takes no lock. Sessions name their
//!   client, not an index, so a reload that reorders clients keeps each session's client.
//!
//! With `[auth]` off, every function here is a no-op and sessions carry no identity.

pub mod jwt;
mod revoke;

pub use revoke::{stream_deadline, Opened};

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::config::auth::{sha256, AuthConfig, ClientConfig, Rate};
use crate::endpoint::http::Reply;
use crate::http::Request;
use crate::mcp::session::Session;
use crate::protocol::jsonrpc::code;

/// Name of the proxy's own namespace in `servers` patterns.
pub const PROXY_SERVER: &str = "proxy";

/// An authenticated caller: which client, and a digest of exactly who (key or token subject).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The `[[auth.clients]]` entry's name (a name, not an index: it survives a reload that
    /// reorders clients, and a request forwarded to a shard that already has a newer `[auth]`).
    pub client: String,
    /// SHA-256 of the principal (`api-key:{key digest}` or `jwt:{iss}\0{sub}`).
    pub principal: [u8; 32],
    /// The credential's `exp` (seconds since the epoch); `None` for an API key, which does
    /// not expire. Streams opened with it end when it does ([`stream_end`]). Non-zero so the
    /// option costs no tag: the identity rides in every forwarded request.
    pub expires: Option<NonZeroU64>,
}

// ---- the running [auth]: a process-wide slot, a generation, a copy per shard ----

/// One generation of `[auth]` and the session counters of its clients.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    generation: u64,
    /// The configuration this generation was built from.
    pub config: AuthConfig,
    /// Open sessions per client (same order as `config.clients`); shared with every earlier
    /// generation that had a client of the same name, so a reload keeps the counts.
    sessions: Vec<Arc<AtomicUsize>>,
}

impl Auth {
    /// The index of client `name` in this generation.
    fn find(&self, name: &str) -> Option<usize> {
        self.config.clients.iter().position(|c| c.name == name)
    }
}

static CURRENT: RwLock<Option<Arc<Auth>>> = RwLock::new(None);
/// Bumped on every install, so shards notice a new `[auth]` with one atomic load.
static GENERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This shard's copy of the running `[auth]`.
    static LOCAL: RefCell<Rc<Auth>> = RefCell::new(Rc::new(Auth::default()));
}

/// Installs `config` as the running `[auth]`; counters of clients that keep their name carry over.
pub fn install(config: AuthConfig) {
    let mut slot = match CURRENT.write() {
        Ok(slot) => slot,
        // A panic while holding the lock cannot leave a half-written Option; take it back.
        Err(poisoned) => poisoned.into_inner(),
    };
    let old = slot.clone();
    let sessions = config
        .clients
        .iter()
        .map(|c| {
            old.as_ref()
                .and_then(|o| o.find(&c.name).map(|i| o.sessions[i].clone()))
                .unwrap_or_default()
        })
        .collect();
    let generation = GENERATION.load(Ordering::Acquire) + 1;
    *slot = Some(Arc::new(Auth {
        generation,
        config,
        sessions,
    }));
    GENERATION.store(generation, Ordering::Release);
}

fn running() -> Arc<Auth> {
    CURRENT
        .read()
        .ok()
        .and_then(|c| c.clone())
        .unwrap_or_default()
}

/// Installs the `[auth]` of a re-read configuration; returns whether anything changed.
///
/// One that turns auth on or off is not installed at all, and the running `[auth]` (mode,
/// clients, keys) stays whole until a restart (`config::restart` names it): turning auth off
/// live would open `/mcp` to anyone holding a session id, and turning it on would strand the
/// open sessions, which have no owner to match their requests against. Keeping the running one
/// whole, rather than applying the rest of the new `[auth]`, means a reload never leaves auth
/// half switched.
pub fn reload(config: &AuthConfig) -> bool {
    let running = running();
    if running.config.enabled != config.enabled || running.config == *config {
        return false;
    }
    install(config.clone());
    log::info!(
        "reload: [auth] applied ({} client(s), {} JWKS key(s))",
        config.clients.len(),
        config.keys.len()
    );
    true
}

/// This shard's copy of the running `[auth]`, refreshed when a reload happened.
pub fn current() -> Rc<Auth> {
    let generation = GENERATION.load(Ordering::Acquire);
    LOCAL.with(|cell| {
        let mut local = cell.borrow_mut();
        if local.generation != generation {
            let next = CURRENT.read().ok().and_then(|c| c.clone());
            if let Some(next) = next {
                // A copy per shard, so the hot path never touches a refcount shared by cores.
                let next = Rc::new(Auth::clone(&next));
                refresh_shard_state(&local, &next);
                *local = next;
            }
        }
        local.clone()
    })
}

/// Moves this shard's buckets to the new client order and forgets remembered tokens (their
/// key, issuer or subject may be gone).
fn refresh_shard_state(old: &Auth, next: &Auth) {
    VERIFIED.with(|v| v.borrow_mut().clear());
    BUCKETS.with(|b| {
        let mut buckets = b.borrow_mut();
        let mut moved: Vec<Option<Bucket>> = next.config.clients.iter().map(|_| None).collect();
        for (i, c) in old.config.clients.iter().enumerate() {
            if let (Some(j), Some(bucket)) = (next.find(&c.name), buckets.get_mut(i)) {
                moved[j] = bucket.take();
            }
        }
        *buckets = moved;
    });
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No credentials.
    Missing,
    /// Credentials that do not authenticate (401); `reason` is the metric label.
    Invalid {
        /// Metric label.
        reason: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Authenticated but not allowed (403).
    Forbidden {
        /// The client, when known.
        client: Option<String>,
        /// Metric label.
        reason: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Over the client's rate (429).
    RateLimited {
        /// The client.
        client: String,
        /// When a token will be there.
        retry_after: Duration,
    },
    /// The client has as many sessions as it may (429).
    TooManySessions {
        /// The client.
        client: String,
        /// Its limit.
        max: usize,
    },
}

impl Denial {
    /// The HTTP answer, counted in `mcp_proxy_auth_denied_total`.
    pub fn reply(self) -> Reply {
        let (client, reason) = match &self {
            Denial::Missing => (None, "missing"),
            Denial::Invalid { reason, .. } => (None, *reason),
            Denial::Forbidden { client, reason, .. } => (client.clone(), *reason),
            Denial::RateLimited { client, .. } => (Some(client.clone()), "rate_limited"),
            Denial::TooManySessions { client, .. } => (Some(client.clone()), "too_many_sessions"),
        };
        count_denial(client.as_deref(), reason);
        let error_body = |message: &str| {
            crate::protocol::jsonrpc::error_body(None, code::INVALID_REQUEST, message)
        };
        let full = |status, headers: Vec<(&'static str, String)>, message: &str| {
            let mut headers = headers;
            headers.push(("Content-Type", "application/json".into()));
            Reply::Full {
                status,
                headers,
                body: error_body(message),
            }
        };
        match self {
            Denial::Missing => full(
                401,
                vec![("WWW-Authenticate", r#"Bearer realm="mcp-proxy""#.into())],
                "missing credentials: send Authorization: Bearer <API key or JWT>",
            ),
            Denial::Invalid { message, .. } => full(
                401,
                vec![("WWW-Authenticate", format!(r#"Bearer realm="mcp-proxy", error="invalid_token", error_description="{}""#, message.replace(['"', '\\'], "'")))],
                &message,
            ),
            Denial::Forbidden { message, .. } => full(
                403,
                vec![("WWW-Authenticate", r#"Bearer realm="mcp-proxy", error="insufficient_scope""#.into())],
                &message,
            ),
            Denial::RateLimited { client, retry_after } => {
                // Retry-After is whole seconds; round up so a client that waits gets a token.
                let secs = retry_after.as_millis().div_ceil(1000).max(1);
                full(
                    429,
                    vec![("Retry-After", secs.to_string())],
                    &format!("rate limit of client \"{client}\" exceeded; retry after {secs} s or ask for a higher rate_limit"),
                )
            }
            Denial::TooManySessions { client, max } => full(
                429,
                Vec::new(),
                &format!("client \"{client}\" already has {max} open sessions (max_sessions = {max}); end one with DELETE or ask for a higher limit"),
            ),
        }
    }
}

/// Authenticates `request` and takes a token from its client's bucket on this shard.
/// `Ok(None)` when `[auth]` is off.
pub fn gate(request: &Request) -> Result<Option<Identity>, Reply> {
    let auth = current();
    if !auth.config.enabled {
        return Ok(None);
    }
    let (index, identity) =
        authenticate_indexed(&auth.config, request.header("authorization"), unix_now())
            .map_err(Denial::reply)?;
    let client = &auth.config.clients[index];
    if let Some(rate) = &client.rate {
        if let Err(retry_after) = take_token(index, rate, Instant::now()) {
            return Err(Denial::RateLimited {
                client: client.name.clone(),
                retry_after,
            }
            .reply());
        }
    }
    Ok(Some(identity))
}

/// Maps an `Authorization` header value to a client.
pub fn authenticate(auth: &AuthConfig, header: Option<&str>, now: u64) -> Result<Identity, Denial> {
    authenticate_indexed(auth, header, now).map(|(_, id)| id)
}

/// [`authenticate`], with the client's index in `auth`.
fn authenticate_indexed(
    auth: &AuthConfig,
    header: Option<&str>,
    now: u64,
) -> Result<(usize, Identity), Denial> {
    let Some(value) = header.map(str::trim).filter(|v| !v.is_empty()) else {
        return Err(Denial::Missing);
    };
    let token =
        match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(Denial::Invalid {
                reason: "invalid",
                message:
                    "unsupported authorization scheme: send Authorization: Bearer <API key or JWT>"
                        .into(),
            }),
        };
    // Every key is compared as a digest, each comparison in constant time and all of them
    // done, so neither a key's bytes nor which client holds it leaks through timing.
    let digest = sha256(token.as_bytes());
    let mut found: Option<(usize, usize)> = None;
    for (c, client) in auth.clients.iter().enumerate() {
        for (k, key) in client.api_keys.iter().enumerate() {
            if same(key, &digest) && found.is_none() {
                found = Some((c, k));
            }
        }
    }
    if let Some((c, k)) = found {
        // The principal is the key itself (by digest), not its position: a reload that adds,
        // removes or moves other keys leaves the sessions opened with this one theirs.
        let mut principal = b"api-key:".to_vec();
        principal.extend_from_slice(&auth.clients[c].api_keys[k]);
        return Ok((
            c,
            Identity {
                client: auth.clients[c].name.clone(),
                principal: sha256(&principal),
                expires: None,
            },
        ));
    }
    if token.bytes().filter(|b| *b == b'.').count() != 2 || auth.keys.is_empty() {
        return Err(Denial::Invalid {
            reason: "invalid",
            message: "unknown API key: check the key, or ask the proxy's operator for one".into(),
        });
    }
    // A client sends the same token with every request, and a signature check costs up to a
    // few hundred microseconds (ES256): each shard remembers the tokens it verified, keyed by
    // the digest of the whole token, until they expire.
    if let Some(id) = cached(&digest, now, auth.leeway.as_secs()) {
        if let Some(c) = auth.clients.iter().position(|c| c.name == id.client) {
            return Ok((c, id));
        }
    }
    let verified = jwt::verify(auth, token, now).map_err(|e| Denial::Invalid {
        reason: e.reason(),
        message: e.to_string(),
    })?;
    let Some(client) = auth
        .clients
        .iter()
        .position(|c| c.subjects.iter().any(|p| glob(p, &verified.subject)))
    else {
        return Err(Denial::Forbidden {
            client: None,
            reason: "forbidden",
            message: format!(
                "token subject \"{}\" is valid but not allowed here; ask the operator to add it to an [[auth.clients]] entry's subjects",
                verified.subject
            ),
        });
    };
    let identity = Identity {
        client: auth.clients[client].name.clone(),
        principal: sha256(format!("jwt:{}\0{}", verified.issuer, verified.subject).as_bytes()),
        // An exp of 0 never verifies; were one to, its streams would end at once.
        expires: Some(NonZeroU64::new(verified.expires).unwrap_or(NonZeroU64::MIN)),
    };
    remember(digest, verified.expires, &identity);
    Ok((client, identity))
}

/// Verified tokens remembered per shard; past this many, the memory starts afresh.
const VERIFIED_KEPT: usize = 4096;

thread_local! {
    /// Token digest -> (its `exp`, the identity it proved), on this shard.
    static VERIFIED: RefCell<HashMap<[u8; 32], (u64, Identity)>> = RefCell::new(HashMap::new());
}

fn cached(digest: &[u8; 32], now: u64, leeway: u64) -> Option<Identity> {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        match v.get(digest) {
            Some((exp, id)) if now <= exp.saturating_add(leeway) => Some(id.clone()),
            Some(_) => {
                // Expired: verifying again gives the client its "expired" message.
                v.remove(digest);
                None
            }
            None => None,
        }
    })
}

fn remember(digest: [u8; 32], expires: u64, identity: &Identity) {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        if v.len() >= VERIFIED_KEPT {
            v.clear();
        }
        v.insert(digest, (expires, identity.clone()));
    })
}

/// Byte-equality of two digests in time independent of their contents.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// When a stream opened with a credential that expires at `expires` must end: the instant
/// the proxy stops accepting that credential (`exp` plus the leeway, the whole second included,
/// as [`jwt::verify`] counts it), so a client reconnecting with it gets 401 rather than a
/// stream that ends at once. `None` (an API key, or an `exp` beyond any clock): never.
pub fn stream_end(expires: Option<NonZeroU64>) -> Option<Instant> {
    let refused_from = expires?
        .get()
        .saturating_add(current().config.leeway.as_secs())
        .saturating_add(1);
    end_at(refused_from, std::time::SystemTime::now(), Instant::now())
}

/// [`stream_end`] with its clocks given: the wall-clock second `refused_from` as an instant.
fn end_at(refused_from: u64, wall: std::time::SystemTime, mono: Instant) -> Option<Instant> {
    let at = std::time::UNIX_EPOCH.checked_add(Duration::from_secs(refused_from))?;
    // Already past (a token verified in its last second): the stream ends at once.
    mono.checked_add(at.duration_since(wall).unwrap_or(Duration::ZERO))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `*` matches any run of characters, `?` any one; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

// ---- rate limits: one token bucket per client on each shard ----

struct Bucket {
    tokens: f64,
    at: Instant,
}

thread_local! {
    /// This shard's buckets, by client index.
    static BUCKETS: RefCell<Vec<Option<Bucket>>> = const { RefCell::new(Vec::new()) };
}

/// Takes one token of `client`'s bucket on this shard, or says how long until one is there.
fn take_token(client: usize, rate: &Rate, now: Instant) -> Result<(), Duration> {
    BUCKETS.with(|b| {
        let mut buckets = b.borrow_mut();
        if buckets.len() <= client {
            buckets.resize_with(client + 1, || None);
        }
        let per_sec = f64::from(rate.requests) / rate.per.as_secs_f64();
        let burst = f64::from(rate.burst);
        let bucket = buckets[client].get_or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    })
}

// ---- sessions per client: process-wide counters, touched at open and close only ----

/// A counted session of client `name` in `auth`, and how many it had before.
fn session_slot(auth: &Auth, name: &str) -> Option<(SessionSlot, usize)> {
    let counter = auth.sessions.get(auth.find(name)?)?.clone();
    let before = counter.fetch_add(1, Ordering::Relaxed);
    Some((SessionSlot(counter), before))
}

/// One counted session of a client; the count drops with it.
#[derive(Debug)]
pub struct SessionSlot(Arc<AtomicUsize>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a new session is opened with: the identity and its counted slot.
#[derive(Debug)]
pub struct Opening {
    identity: Identity,
    slot: Option<SessionSlot>,
}

impl Opening {
    /// The digest sealed into the session id.
    pub fn principal(&self) -> &[u8] {
        &self.identity.principal
    }
}

/// Reserves a session for `identity`'s client, or refuses when it has `max_sessions`.
pub fn open(identity: Option<&Identity>) -> Result<Option<Opening>, Reply> {
    let Some(identity) = identity else {
        return Ok(None);
    };
    let auth = current();
    // Removed by a reload since the request was authenticated: refused like an unknown key.
    let (Some(client), Some((slot, before))) = (
        auth.find(&identity.client).map(|i| &auth.config.clients[i]),
        session_slot(&auth, &identity.client),
    ) else {
        return Err(Denial::Invalid {
            reason: "invalid",
            message: format!(
                "client \"{}\" is no longer configured; ask the proxy's operator for credentials",
                identity.client
            ),
        }
        .reply());
    };
    if client.max_sessions.is_some_and(|max| before >= max) {
        drop(slot);
        return Err(Denial::TooManySessions {
            client: client.name.clone(),
            max: client.max_sessions.unwrap_or_default(),
        }
        .reply());
    }
    Ok(Some(Opening {
        identity: identity.clone(),
        slot: Some(slot),
    }))
}

/// The identity a session belongs to.
#[derive(Debug, Default)]
pub struct SessionAuth {
    principal: RefCell<Option<[u8; 32]>>,
    /// The client's name, followed from request to request (a reload may move a key or a
    /// subject to another client).
    client: RefCell<Option<String>>,
    slot: RefCell<Option<SessionSlot>>,
}

impl SessionAuth {
    /// Binds a new session to the identity that opened it.
    pub fn bind(&self, opening: Option<Opening>) {
        if let Some(o) = opening {
            *self.principal.borrow_mut() = Some(o.identity.principal);
            *self.client.borrow_mut() = Some(o.identity.client);
            *self.slot.borrow_mut() = o.slot;
        }
    }

    /// Binds a session that counts against no session limit (a 2026-07-28 bridge session,
    /// which exists per client rather than per conversation) to `identity`.
    pub fn assume(&self, identity: Option<&Identity>) {
        if let Some(id) = identity {
            *self.principal.borrow_mut() = Some(id.principal);
            if self.client.borrow().as_deref() != Some(id.client.as_str()) {
                *self.client.borrow_mut() = Some(id.client.clone());
            }
        }
    }

    /// True when `identity` is the one this session belongs to (both none without auth).
    pub fn owned_by(&self, identity: Option<&Identity>) -> bool {
        match (*self.principal.borrow(), identity) {
            (None, None) => true,
            (Some(p), Some(id)) => same(&p, &id.principal),
            _ => false,
        }
    }

    /// Sets the principal sealed in a session id being restored (empty: opened without auth).
    pub fn restore(&self, principal: &[u8]) {
        if let Ok(p) = <[u8; 32]>::try_from(principal) {
            *self.principal.borrow_mut() = Some(p);
        }
    }

    /// The name of the client this session belongs to, once known.
    pub fn client(&self) -> Option<String> {
        self.client.borrow().clone()
    }

    /// Stops counting the session against its client.
    pub fn release(&self) {
        self.slot.borrow_mut().take();
    }
}

/// Refuses a request made on `session` with other credentials than the ones that opened it.
pub fn admit(session: &Session, identity: Option<&Identity>) -> Result<(), Reply> {
    let sa = &session.auth;
    let principal = *sa.principal.borrow();
    match (principal, identity) {
        (None, None) => Ok(()),
        (Some(p), Some(id)) if same(&p, &id.principal) => {
            let known = sa.client.borrow().clone();
            if known.as_deref() != Some(id.client.as_str()) {
                // Restored from its id (count it again, whatever the limit: it already
                // existed), or its key or subject now belongs to another client (a reload):
                // the session follows the client, and its count moves with it.
                let counted = known.is_none() || sa.slot.borrow().is_some();
                *sa.client.borrow_mut() = Some(id.client.clone());
                if counted {
                    *sa.slot.borrow_mut() = session_slot(&current(), &id.client).map(|(s, _)| s);
                }
            }
            Ok(())
        }
        (_, id) => Err(Denial::Forbidden {
            client: id.map(|i| i.client.clone()),
            reason: "session_mismatch",
            message: "this session was opened with other credentials; use the credentials that opened it, or initialize a new session".into(),
        }
        .reply()),
    }
}

// ---- policy ----

/// What one client may see and call; `None` from [`policy`] means everything.
pub struct Policy {
    auth: Rc<Auth>,
    /// `None`: the client was removed by a reload, and may see nothing.
    client: Option<usize>,
}

impl Policy {
    fn entry(&self) -> Option<&ClientConfig> {
        self.client.map(|c| &self.auth.config.clients[c])
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        self.entry().map_or("unknown", |c| c.name.as_str())
    }

    /// Whether the client may use server `name` (`proxy` for the proxy's own tools and resources).
    pub fn server(&self, name: &str) -> bool {
        self.entry()
            .is_some_and(|c| c.servers.iter().any(|p| glob(p, name)))
    }

    /// Whether the client may see and call the tool exposed as `exposed` of server `server`.
    pub fn tool(&self, server: &str, exposed: &str) -> bool {
        self.server(server)
            && self
                .entry()
                .is_some_and(|c| c.tools.iter().any(|p| glob(p, exposed)))
    }
}

/// The policy of `session`'s client in the running `[auth]`, or `None` when everything is
/// allowed.
pub fn policy(session: &Session) -> Option<Policy> {
    let name = session.auth.client.borrow();
    let name = name.as_deref()?;
    let auth = current();
    let client = auth.find(name);
    Some(Policy { auth, client })
}

/// Whether `session` may use catalog server `server` (an index; past the end is the proxy).
pub fn permits_server(
    session: &Session,
    catalog: &crate::registry::Catalog,
    server: usize,
) -> bool {
    policy(session).is_none_or(|p| {
        let allowed = p.server(server_name(catalog, server));
        if !allowed {
            count_denial(Some(p.name()), "policy");
        }
        allowed
    })
}

/// Whether `session` may call the tool exposed as `exposed` (of `server`); refusals are counted.
pub fn permits_tool(
    session: &Session,
    catalog: &crate::registry::Catalog,
    server: usize,
    exposed: &str,
) -> bool {
    policy(session).is_none_or(|p| {
        let allowed = p.tool(server_name(catalog, server), exposed);
        if !allowed {
            count_denial(Some(p.name()), "policy");
        }
        allowed
    })
}

/// Whether `session` may use `server`, without counting a refusal (for choosing, not refusing).
pub fn shows_server(session: &Session, catalog: &crate::registry::Catalog, server: usize) -> bool {
    policy(session).is_none_or(|p| p.server(server_name(catalog, server)))
}

/// Whether `session` may call the tool exposed as `exposed`, without counting a refusal (for a
/// fast path that leaves refusing, and counting, to the full one).
pub fn shows_tool(
    session: &Session,
    catalog: &crate::registry::Catalog,
    server: usize,
    exposed: &str,
) -> bool {
    policy(session).is_none_or(|p| p.tool(server_name(catalog, server), exposed))
}

/// Whether a list item is shown under `policy` (`None`: everything is).
pub fn shows(
    policy: Option<&Policy>,
    catalog: &crate::registry::Catalog,
    kind: crate::protocol::cursor::ListKind,
    item: &crate::registry::catalog::Item,
) -> bool {
    let Some(p) = policy else {
        return true;
    };
    let server = server_name(catalog, item.server);
    if kind != crate::protocol::cursor::ListKind::Tools {
        return p.server(server);
    }
    // The proxy's own tools carry their exposed name as `original`.
    let exposed = if item.server >= catalog.servers.len() {
        Some(item.original.as_str())
    } else {
        catalog.tool_exposed(item.server, &item.original)
    };
    exposed.is_some_and(|e| p.tool(server, e))
}

/// For a `completion/complete` naming a prompt or resource of a server `session` may not use,
/// the error a name that does not exist gets; `None` otherwise.
pub fn hidden_reference(
    session: &Session,
    catalog: &crate::registry::Catalog,
    msg: &simd_json::BorrowedValue<'_>,
) -> Option<String> {
    use simd_json::prelude::*;
    policy(session)?;
    let reference = msg.get("params")?.get("ref")?;
    let (server, what, name) = match reference.get_str("type")? {
        "ref/prompt" => {
            let name = reference.get_str("name")?;
            (catalog.prompt(name)?.0, "prompt", name)
        }
        "ref/resource" => {
            let uri = reference.get_str("uri")?;
            (catalog.resource(uri)?.0, "resource", uri)
        }
        _ => return None,
    };
    (!permits_server(session, catalog, server)).then(|| format!("unknown {what}: {name}"))
}

/// The configured name of catalog server `server`, or [`PROXY_SERVER`] for the proxy's own.
pub fn server_name(catalog: &crate::registry::Catalog, server: usize) -> &str {
    catalog
        .servers
        .get(server)
        .map_or(PROXY_SERVER, |s| s.name.as_str())
}

/// Counts a refusal in `mcp_proxy_auth_denied_total`.
pub fn count_denial(client: Option<&str>, reason: &'static str) {
    metrics::counter!(
        crate::metrics::names::AUTH_DENIED,
        "client" => client.unwrap_or("unknown").to_owned(),
        "reason" => reason
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config() -> Config {
        Config::from_toml_str(
            "[auth]\nenabled = true\n[[auth.clients]]\nname = \"a\"\napi_keys = [\"key-a-0123456789abcdef\"]\nservers = [\"everything\"]\ntools = [\"everything__e*\"]\nrate_limit = \"2/s\"\n\
             [[auth.clients]]\nname = \"b\"\napi_keys = [\"key-b-0123456789abcdef\", \"key-b2-0123456789abcdef\"]\n",
            "t.toml",
        )
        .expect("valid")
    }

    #[test]
    fn api_keys_map_to_clients() {
        let c = config();
        let a = authenticate(&c.auth, Some("Bearer key-a-0123456789abcdef"), 0).expect("a");
        assert_eq!(a.client, "a");
        assert_eq!(
            a.expires, None,
            "an API key does not expire, nor do its streams"
        );
        let b2 = authenticate(&c.auth, Some("bearer  key-b2-0123456789abcdef"), 0).expect("b");
        assert_eq!(b2.client, "b");
        let b = authenticate(&c.auth, Some("Bearer key-b-0123456789abcdef"), 0).expect("b");
        assert_ne!(b.principal, b2.principal, "two keys are two principals");
        assert_eq!(authenticate(&c.auth, None, 0), Err(Denial::Missing));
        assert!(matches!(
            authenticate(&c.auth, Some("Bearer nope"), 0),
            Err(Denial::Invalid { .. })
        ));
        assert!(matches!(
            authenticate(&c.auth, Some("Basic a2V5"), 0),
            Err(Denial::Invalid { .. })
        ));
    }

    #[test]
    fn an_api_key_stays_the_same_principal_when_a_reload_reorders_keys_and_clients() {
        let before = config();
        let after = Config::from_toml_str(
            "[auth]\nenabled = true\n[[auth.clients]]\nname = \"b\"\napi_keys = [\"key-new-0123456789abcdef\", \"key-b2-0123456789abcdef\"]\n\
             [[auth.clients]]\nname = \"a\"\napi_keys = [\"key-a-0123456789abcdef\"]\n",
            "t.toml",
        )
        .expect("valid");
        let key = Some("Bearer key-b2-0123456789abcdef");
        let (i, old) = authenticate_indexed(&before.auth, key, 0).expect("before");
        let (j, new) = authenticate_indexed(&after.auth, key, 0).expect("after");
        assert_eq!((i, j), (1, 0), "the client moved");
        assert_eq!(old, new, "same client name, same principal");
        assert!(matches!(
            authenticate(&after.auth, Some("Bearer key-b-0123456789abcdef"), 0),
            Err(Denial::Invalid { .. })
        ));
    }

    #[test]
    fn verified_tokens_are_remembered_until_they_expire() {
        let dir = std::env::temp_dir().join(format!("mcp-proxy-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let jwks = dir.join("jwks.json");
        let secret = b"0123456789abcdef0123456789abcdef";
        std::fs::write(
            &jwks,
            format!(r#"{{"keys":[{{"kty":"oct","k":"{}"}}]}}"#, b64(secret)),
        )
        .expect("write");
        let c = Config::from_toml_str(
            &format!("[auth]\nenabled = true\njwks_file = \"{}\"\n[[auth.clients]]\nname = \"j\"\nsubjects = [\"alice\"]\n", jwks.display()),
            "t.toml",
        )
        .expect("valid");
        let _ = std::fs::remove_dir_all(&dir);
        let token = |sub: &str| {
            let claims = format!(r#"{{"sub":"{sub}","exp":2000}}"#);
            format!(
                "Bearer {}",
                jwt::sign(r#"{"alg":"HS256"}"#, &claims, secret)
            )
        };
        let alice = token("alice");
        let first = authenticate(&c.auth, Some(&alice), 1000).expect("valid");
        assert_eq!(
            first.expires.map(NonZeroU64::get),
            Some(2000),
            "a stream opened with it ends at its exp"
        );
        assert_eq!(
            authenticate(&c.auth, Some(&alice), 1500),
            Ok(first),
            "remembered"
        );
        assert!(
            matches!(
                authenticate(&c.auth, Some(&alice), 2100),
                Err(Denial::Invalid {
                    reason: "expired",
                    ..
                })
            ),
            "expiry is checked on a remembered token too"
        );
        for _ in 0..2 {
            assert!(matches!(
                authenticate(&c.auth, Some(&token("mallory")), 1000),
                Err(Denial::Forbidden { .. })
            ));
        }
    }

    #[test]
    fn a_stream_ends_when_its_credential_stops_being_accepted() {
        let wall = std::time::UNIX_EPOCH + Duration::from_millis(1_000_500);
        let mono = Instant::now();
        // Refused from second 1003 on: 2.5 s after a wall clock at 1000.5.
        assert_eq!(
            end_at(1003, wall, mono),
            Some(mono + Duration::from_millis(2500))
        );
        assert_eq!(
            end_at(1000, wall, mono),
            Some(mono),
            "already refused: at once"
        );
        assert_eq!(
            end_at(u64::MAX, wall, mono),
            None,
            "an exp beyond any clock"
        );
        assert_eq!(stream_end(None), None, "API keys do not expire");
        assert!(
            stream_end(NonZeroU64::new(u64::MAX)).is_none(),
            "no overflow"
        );
    }

    fn b64(data: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("everything__*", "everything__echo"));
        assert!(!glob("everything__*", "memory__read_graph"));
        assert!(glob("a?c*", "abcdef"));
        assert!(glob("*__echo", "everything__echo"));
        assert!(!glob("echo", "echo2"));
        assert!(glob("*o*o*", "foo_bo"));
    }

    #[test]
    fn buckets_refill() {
        let rate = Rate {
            requests: 2,
            per: Duration::from_secs(1),
            burst: 2,
        };
        let t0 = Instant::now();
        assert!(take_token(7, &rate, t0).is_ok());
        assert!(take_token(7, &rate, t0).is_ok());
        let wait = take_token(7, &rate, t0).expect_err("empty");
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(take_token(7, &rate, t0 + Duration::from_millis(500)).is_ok());
        assert!(take_token(8, &rate, t0).is_ok(), "buckets are per client");
    }
}
