//! The proxy's own credentials for upstream servers: an `Authorization` value per server name,
//! obtained off the shards (`auth::oauth::fetch`, OAuth client credentials) and handed in the
//! way a reload does (one process-wide slot, a copy per shard, one atomic load to check it).
//!
//! A server configured for token exchange gets, on requests made for a client, that client's
//! token exchanged (RFC 8693) for one meant for the server, per (client, server), from the same
//! thread; the proxy's own requests to it (discovery, health) carry the proxy's token.
//!
//! A client's own `Authorization` never reaches an upstream: requests to upstreams carry only
//! the server's configured headers and these values.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;

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

/// The exchanged tokens (RFC 8693) in force: for each server that takes the client's token by
/// exchange, the `Authorization` value per client principal.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Exchanged {
    /// Servers configured with `grant = "token_exchange"`.
    pub servers: HashSet<String>,
    /// (client principal, server) to the `Authorization` value of its exchanged token.
    pub tokens: HashMap<([u8; 32], String), String>,
}

impl std::fmt::Debug for Exchanged {
    // The tokens stay out of every log that prints this.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchanged")
            .field("servers", &self.servers)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

static EXCHANGED: Reloadable<Exchanged> = Reloadable::new();

thread_local! {
    static LOCAL_EXCHANGED: RefCell<ShardCopy<Rc<Exchanged>>> =
        RefCell::new(ShardCopy::new(Rc::new(Exchanged::default())));
}

/// Asks the thread that exchanges tokens (in `auth::oauth`) for `principal`'s token for
/// `server`; the answer (`Err` with the reason when the exchange failed) comes on the sender
/// once the token is published.
pub type ExchangeRequest = fn([u8; 32], String, flume::Sender<Result<(), String>>);

static REQUESTER: OnceLock<ExchangeRequest> = OnceLock::new();

/// How long a request waits for a token being exchanged before it fails.
const EXCHANGE_WAIT: Duration = Duration::from_secs(5);

/// Puts the exchanged tokens in force (the exchanging thread).
pub fn publish_exchanged(exchanged: Exchanged) {
    EXCHANGED.replace(exchanged);
}

/// Installs the way to ask for an exchange (once, by the thread that does them).
pub fn serve_exchanges(request: ExchangeRequest) {
    let _ = REQUESTER.set(request);
}

fn exchanged() -> Rc<Exchanged> {
    LOCAL_EXCHANGED.with(|local| {
        local
            .borrow_mut()
            .refresh(&EXCHANGED, |e, _| {
                Rc::new(e.map(|e| Exchanged::clone(&e)).unwrap_or_default())
            })
            .clone()
    })
}

/// Whether requests made for a client to `server` carry the client's token exchanged.
pub fn takes_exchanged(server: &str) -> bool {
    exchanged().servers.contains(server)
}

/// The exchanged token in force for `principal` and `server`, without asking for one.
pub fn exchanged_in_force(principal: [u8; 32], server: &str) -> Option<Rc<str>> {
    exchanged()
        .tokens
        .get(&(principal, server.to_owned()))
        .map(|v| Rc::from(v.as_str()))
}

/// The `Authorization` value for a request made for the client `principal` to `server`, a
/// server that takes exchanged tokens: the one in force, or one asked for now, the request
/// waiting (its future parked, the shard serving others) until the exchanging thread hands
/// it in. `Err` says why there is none, for an error naming the server.
pub async fn exchanged_authorization(
    principal: Option<[u8; 32]>,
    server: &str,
) -> Result<Rc<str>, String> {
    let Some(principal) = principal else {
        return Err(
            "it takes the client's OAuth token by exchange, and this client sent no OAuth token"
                .into(),
        );
    };
    let key = (principal, server.to_owned());
    if let Some(value) = exchanged().tokens.get(&key) {
        return Ok(Rc::from(value.as_str()));
    }
    let Some(request) = REQUESTER.get() else {
        return Err("no token exchange is running".into());
    };
    let (tx, rx) = flume::bounded(1);
    request(principal, server.to_owned(), tx);
    let answer = glommio::timer::timeout(EXCHANGE_WAIT, async {
        Ok(rx
            .recv_async()
            .await
            .unwrap_or_else(|_| Err("the token exchange was dropped".to_owned())))
    })
    .await
    .unwrap_or_else(|_| Err(format!("no exchanged token within {EXCHANGE_WAIT:?}")));
    answer?;
    exchanged()
        .tokens
        .get(&key)
        .map(|v| Rc::from(v.as_str()))
        .ok_or_else(|| "the exchanged token expired at once".into())
}
