//! Token exchange (RFC 8693) for upstreams configured with `grant = "token_exchange"`, on the
//! key fetch thread: a client's token is exchanged for one meant for the upstream (`resource`
//! = the upstream's URL, the client as subject), per (client, server), the first time a
//! request of that client needs it, and again when 80 % of its lifetime has passed while the
//! client's own token is still valid. The results reach the shards through
//! `upstream::credentials`, where a request waiting for one is parked.
//!
//! The shards hand in each client's newest token when they verify it (once per token and
//! shard, [`offer`]); the thread forgets it when it expires.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::oauth::{OAuthConfig, UpstreamCredentials};
use crate::upstream::credentials::{self, Exchanged};

use super::fetch::Nudge;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Most client tokens a shard remembers having handed in (then it starts over).
const OFFERED_MAX: usize = 4096;

/// Hands the fetch thread `token`, just verified as `principal`'s and valid until `expires`
/// (seconds since the epoch), when `oauth` exchanges tokens for some upstream. Once per token
/// and shard: a client sends the same token with every request.
pub fn offer(oauth: &OAuthConfig, principal: [u8; 32], token: &str, expires: u64) {
    if !oauth.upstreams.iter().any(|u| u.token_exchange) {
        return;
    }
    thread_local! {
        static OFFERED: RefCell<HashMap<[u8; 32], u64>> = RefCell::new(HashMap::new());
    }
    let new = OFFERED.with(|offered| {
        let mut offered = offered.borrow_mut();
        if offered.get(&principal) == Some(&expires) {
            return false;
        }
        if offered.len() >= OFFERED_MAX {
            offered.clear();
        }
        offered.insert(principal, expires);
        true
    });
    if new {
        super::fetch::nudge(Nudge::Subject {
            principal,
            token: token.to_owned(),
            expires,
        });
    }
}

/// `upstream::credentials`' way to ask for an exchange (see [`credentials::ExchangeRequest`]).
pub(super) fn request(
    principal: [u8; 32],
    server: String,
    reply: flume::Sender<Result<(), String>>,
) {
    let nudge = Nudge::Exchange {
        principal,
        server,
        reply,
    };
    if let Err(Nudge::Exchange { reply, .. }) = super::fetch::try_nudge(nudge) {
        let _ = reply.try_send(Err("the token exchange thread is busy".into()));
    }
}

/// A client's newest token as the thread knows it.
struct Subject {
    token: String,
    expires: u64,
}

/// One exchanged token.
struct Held {
    authorization: Option<String>,
    expires: Option<Instant>,
    next_due: Instant,
    error: Option<String>,
}

type Waiter = ([u8; 32], String, flume::Sender<Result<(), String>>);

/// What the thread knows of exchanges.
#[derive(Default)]
pub(super) struct Exchanges {
    subjects: HashMap<[u8; 32], Subject>,
    held: HashMap<([u8; 32], String), Held>,
    waiting: Vec<Waiter>,
    published: Option<Exchanged>,
}

impl Exchanges {
    pub(super) fn subject(&mut self, principal: [u8; 32], token: String, expires: u64) {
        if self
            .subjects
            .get(&principal)
            .is_some_and(|s| s.expires > expires)
        {
            return;
        }
        self.subjects.insert(principal, Subject { token, expires });
    }

    pub(super) fn want(
        &mut self,
        principal: [u8; 32],
        server: String,
        reply: flume::Sender<Result<(), String>>,
    ) {
        let held = self
            .held
            .entry((principal, server.clone()))
            .or_insert_with(|| Held {
                authorization: None,
                expires: None,
                next_due: Instant::now(),
                error: None,
            });
        // Asked for while none is in force: try now, even if the last try failed.
        if held.authorization.is_none() {
            held.next_due = Instant::now();
        }
        self.waiting.push((principal, server, reply));
    }

    /// Exchanges what is due; returns how long until the next exchange is.
    pub(super) fn round(&mut self, oauth: &OAuthConfig, agent: Option<&ureq::Agent>) -> Duration {
        let unix = super::fetch::unix_now();
        self.subjects.retain(|_, s| s.expires > unix);
        let config: HashMap<&str, &UpstreamCredentials> = oauth
            .upstreams
            .iter()
            .filter(|u| u.token_exchange)
            .map(|u| (u.server.as_str(), u))
            .collect();
        let subjects = &self.subjects;
        self.held.retain(|(principal, server), _| {
            subjects.contains_key(principal) && config.contains_key(server.as_str())
        });
        let now = Instant::now();
        let mut next = now + oauth.refresh;
        for ((principal, server), held) in &mut self.held {
            if now >= held.next_due {
                let (Some(subject), Some(creds)) =
                    (self.subjects.get(principal), config.get(server.as_str()))
                else {
                    continue;
                };
                let result = match agent {
                    Some(agent) => exchange(agent, creds, &subject.token),
                    None => Err("ca_file cannot be used (see the log at start)".into()),
                };
                metrics::counter!(
                    crate::metrics::names::OAUTH_UPSTREAM_TOKENS,
                    "server" => server.clone(),
                    "outcome" => if result.is_ok() { "exchanged" } else { "exchange_failed" }
                )
                .increment(1);
                match result {
                    Ok((token, lifetime)) => {
                        held.authorization = Some(format!("Bearer {token}"));
                        held.expires = Some(now + lifetime);
                        held.next_due = now + lifetime.mul_f64(0.8).max(Duration::from_secs(1));
                        held.error = None;
                    }
                    Err(e) => {
                        log::warn!(
                            "[auth.oauth] token exchange for server \"{server}\" at {} failed: {e}",
                            creds.token_url
                        );
                        held.error = Some(e);
                        held.next_due = now + oauth.kid_refresh;
                        if held.expires.is_some_and(|t| now >= t) {
                            held.authorization = None;
                        }
                    }
                }
            }
            next = next.min(held.next_due);
        }
        let exchanged = Exchanged {
            servers: config.keys().map(|s| (*s).to_owned()).collect(),
            tokens: self
                .held
                .iter()
                .filter_map(|(k, h)| h.authorization.clone().map(|a| (k.clone(), a)))
                .collect(),
        };
        if self.published.as_ref() != Some(&exchanged) {
            credentials::publish_exchanged(exchanged.clone());
            self.published = Some(exchanged);
        }
        for (principal, server, reply) in self.waiting.drain(..) {
            let answer = match self.held.get(&(principal, server.clone())) {
                Some(Held {
                    authorization: Some(_),
                    ..
                }) => Ok(()),
                Some(Held { error: Some(e), .. }) => Err(format!("token exchange failed: {e}")),
                _ if !config.contains_key(server.as_str()) => {
                    Err("it is not configured for token exchange".into())
                }
                // Never handed in: an API key, or a token that expired.
                _ => Err("it takes the client's OAuth token by exchange, and this client sent no OAuth token".into()),
            };
            let _ = reply.try_send(answer);
        }
        next.saturating_duration_since(Instant::now())
    }
}

/// One RFC 8693 exchange: the access token meant for `creds.resource` and its lifetime.
fn exchange(
    agent: &ureq::Agent,
    creds: &UpstreamCredentials,
    subject_token: &str,
) -> Result<(String, Duration), String> {
    super::upstream_tokens::request_token(
        agent,
        creds,
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN),
            ("requested_token_type", ACCESS_TOKEN),
        ],
    )
}
