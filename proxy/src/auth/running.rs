//! The running `[auth]`: one process-wide [`Reloadable`] that a reload replaces, and each
//! shard's copy of it, refreshed when one atomic load shows a new generation.
//!
//! Sessions name their client, not an index, so a reload that reorders clients keeps each
//! session's client; the session counters and this shard's buckets follow the client's name.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::config::auth::AuthConfig;
use crate::config::reloadable::{Reloadable, ShardCopy};

/// One generation of `[auth]` and the session counters of its clients.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// The configuration this generation was built from.
    pub config: AuthConfig,
    /// Open sessions per client (same order as `config.clients`); shared with every earlier
    /// generation that had a client of the same name, so a reload keeps the counts.
    pub(super) sessions: Vec<Arc<AtomicUsize>>,
}

impl Auth {
    /// The index of client `name` in this generation.
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.config.clients.iter().position(|c| c.name == name)
    }
}

static RUNNING: Reloadable<Auth> = Reloadable::new();

thread_local! {
    /// This shard's copy of the running `[auth]` (its own `Rc`, so no refcount is shared).
    static LOCAL: RefCell<ShardCopy<Rc<Auth>>> =
        RefCell::new(ShardCopy::new(Rc::new(Auth::default())));
}

/// Installs `config` as the running `[auth]`; counters of clients that keep their name carry over.
pub fn install(config: AuthConfig) {
    RUNNING.update(|old| {
        let sessions = config
            .clients
            .iter()
            .map(|c| {
                old.and_then(|o| o.find(&c.name).map(|i| o.sessions[i].clone()))
                    .unwrap_or_default()
            })
            .collect();
        Some(Auth {
            config: config.clone(),
            sessions,
        })
    });
    super::oauth::follow(&config);
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
    let running = RUNNING.current().unwrap_or_default();
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
    current_with_generation().1
}

/// This shard's copy of the running `[auth]` and its generation.
pub(super) fn current_with_generation() -> (u64, Rc<Auth>) {
    LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        let auth = local
            .refresh(&RUNNING, |running, old| match running {
                Some(next) => {
                    let next = Rc::new(Auth::clone(&next));
                    refresh_shard_state(old, &next);
                    next
                }
                // `[auth]` is never cleared: keep what this shard has.
                None => old.clone(),
            })
            .clone();
        (local.generation(), auth)
    })
}

/// The generation of the newest `[auth]` installed: one atomic load.
pub fn generation() -> u64 {
    RUNNING.generation()
}

/// Moves this shard's buckets to the new client order and forgets remembered tokens (their
/// key, issuer or subject may be gone).
fn refresh_shard_state(old: &Auth, next: &Auth) {
    super::identity::forget_verified();
    super::rate::follow_clients(old, next);
}

/// What the key fetch thread works on (not a shard: it reads the slot): the running
/// `[auth.oauth]` with every upstream's credentials, `[[auth.upstreams]]` included, or those
/// alone when there is no `[auth.oauth]`.
pub(super) fn oauth() -> Option<crate::config::oauth::OAuthConfig> {
    let auth = RUNNING.current()?;
    let config = &auth.config;
    match &config.oauth {
        Some(o) => {
            let mut o = o.clone();
            o.upstreams.extend(config.upstreams.iter().cloned());
            Some(o)
        }
        None if !config.upstreams.is_empty() => {
            Some(crate::config::oauth::OAuthConfig::for_upstreams(
                config.upstreams.clone(),
                config.upstream_ca_file.clone(),
            ))
        }
        None => None,
    }
}
