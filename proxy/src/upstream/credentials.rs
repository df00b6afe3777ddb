//! The proxy's own credentials for upstream servers: an `Authorization` value per server name,
//! obtained off the shards (`auth::oauth::fetch`, OAuth client credentials) and handed in the
//! way a reload does (one process-wide slot, a copy per shard, one atomic load to check it).
//!
//! A client's own `Authorization` never reaches an upstream: requests to upstreams carry only
//! the server's configured headers and this value.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::config::reloadable::{Reloadable, ShardCopy};

static TOKENS: Reloadable<HashMap<String, String>> = Reloadable::new();

/// A shard's copy: server name to its `Authorization` value.
type ShardTokens = Rc<HashMap<String, Rc<str>>>;

thread_local! {
    static LOCAL: RefCell<ShardCopy<ShardTokens>> =
        RefCell::new(ShardCopy::new(Rc::new(HashMap::new())));
}

/// Puts in force the `Authorization` value of each server that has one.
pub fn publish(tokens: HashMap<String, String>) {
    TOKENS.replace(tokens);
}

/// The `Authorization` value for requests to `server`, if the proxy holds a token for it.
pub fn authorization(server: &str) -> Option<Rc<str>> {
    LOCAL.with(|local| {
        local
            .borrow_mut()
            .refresh(&TOKENS, |tokens, _| {
                Rc::new(
                    tokens
                        .map(|t| {
                            t.iter()
                                .map(|(k, v)| (k.clone(), Rc::from(v.as_str())))
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            })
            .get(server)
            .cloned()
    })
}
