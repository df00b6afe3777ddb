//! The trusted issuers' verification keys as the shards see them, and each issuer's status.
//!
//! The keys are one process-wide [`Reloadable`] that only the fetch thread replaces, and only
//! when a key set changed; each shard keeps its own copy, checked with one atomic load per
//! token verified. The status (last refresh, last error) changes at every fetch and is read
//! only by the admin API, so it sits apart, behind a lock no shard takes on its hot path.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Mutex;

use serde::Serialize;

use crate::config::auth::Jwk;
use crate::config::reloadable::{Reloadable, ShardCopy};

/// One trusted issuer and the keys it published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerKeys {
    /// The issuer URL, exactly as its tokens' `iss`.
    pub issuer: String,
    /// Its signature keys the proxy can use (RS256, ES256; never a symmetric key).
    pub keys: Vec<Jwk>,
}

/// What the admin API shows of one issuer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IssuerStatus {
    /// The issuer URL.
    pub issuer: String,
    /// `jwks_uri` from its metadata, once read.
    pub jwks_uri: Option<String>,
    /// `kid`s of the keys in use (`-` for a key without one).
    pub kids: Vec<String>,
    /// When the keys were last fetched successfully (seconds since the epoch).
    pub last_refresh: Option<u64>,
    /// When a fetch was last tried.
    pub last_attempt: Option<u64>,
    /// Why the last fetch failed, when it did (the keys in use are then the ones kept).
    pub last_error: Option<String>,
    /// Successful fetches so far.
    pub refreshes: u64,
    /// Failed fetches so far.
    pub failures: u64,
}

static KEYS: Reloadable<Vec<IssuerKeys>> = Reloadable::new();
static STATUS: Mutex<Vec<IssuerStatus>> = Mutex::new(Vec::new());

thread_local! {
    static LOCAL: RefCell<ShardCopy<Rc<Vec<IssuerKeys>>>> =
        RefCell::new(ShardCopy::new(Rc::new(Vec::new())));
}

/// This shard's copy of the trusted issuers' keys.
pub fn current() -> Rc<Vec<IssuerKeys>> {
    LOCAL.with(|local| {
        local
            .borrow_mut()
            .refresh(&KEYS, |keys, _| {
                Rc::new(keys.map(|k| Vec::clone(&k)).unwrap_or_default())
            })
            .clone()
    })
}

/// The generation of the newest key sets: one atomic load.
pub fn generation() -> u64 {
    KEYS.generation()
}

/// Puts new key sets in force (the fetch thread, when a set changed).
pub(super) fn publish(keys: Vec<IssuerKeys>) {
    KEYS.replace(keys);
}

/// Records every issuer's status (the fetch thread, after each round).
pub(super) fn set_status(status: Vec<IssuerStatus>) {
    *STATUS.lock().unwrap_or_else(|p| p.into_inner()) = status;
}

/// Every trusted issuer's status, for the admin API and `mcpctl`.
pub fn status() -> Vec<IssuerStatus> {
    STATUS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}
