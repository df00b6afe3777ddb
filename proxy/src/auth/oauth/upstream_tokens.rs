//! The proxy's own tokens for upstream servers (`[[auth.oauth.upstreams]]`), obtained with the
//! OAuth client credentials grant on the key fetch thread and handed to the shards through
//! `upstream::credentials`. A token is fetched again when 80 % of its lifetime has passed, so
//! requests never carry an expired one while the authorization server answers; when it does
//! not, the token in use is kept until it expires and the fetch is tried again after
//! `kid_refresh_seconds`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::oauth::{OAuthConfig, UpstreamCredentials};

/// What the thread knows of one server's token.
#[derive(Default)]
pub(super) struct Held {
    authorization: Option<String>,
    expires: Option<Instant>,
    next_due: Option<Instant>,
}

/// Fetches the tokens that are due; returns how long until the next one is.
pub(super) fn round(
    oauth: &OAuthConfig,
    agent: Option<&ureq::Agent>,
    held: &mut HashMap<String, Held>,
    published: &mut Option<HashMap<String, String>>,
) -> Duration {
    held.retain(|server, _| oauth.upstreams.iter().any(|u| &u.server == server));
    let now = Instant::now();
    let mut next = now + oauth.refresh;
    for creds in &oauth.upstreams {
        let h = held.entry(creds.server.clone()).or_default();
        if h.next_due.is_none_or(|due| now >= due) {
            let result = match agent {
                Some(agent) => fetch(agent, creds),
                None => Err("ca_file cannot be used (see the log at start)".into()),
            };
            metrics::counter!(
                crate::metrics::names::OAUTH_UPSTREAM_TOKENS,
                "server" => creds.server.clone(),
                "outcome" => if result.is_ok() { "ok" } else { "failed" }
            )
            .increment(1);
            match result {
                Ok((token, lifetime)) => {
                    h.authorization = Some(format!("Bearer {token}"));
                    h.expires = Some(now + lifetime);
                    h.next_due = Some(now + lifetime.mul_f64(0.8).max(Duration::from_secs(1)));
                }
                Err(e) => {
                    log::warn!(
                        "[auth.oauth] token for server \"{}\" not obtained from {}: {e}",
                        creds.server,
                        creds.token_url
                    );
                    h.next_due = Some(now + oauth.kid_refresh);
                    if h.expires.is_some_and(|t| now >= t) {
                        h.authorization = None;
                    }
                }
            }
        }
        if let Some(due) = h.next_due {
            next = next.min(due);
        }
    }
    let tokens: HashMap<String, String> = held
        .iter()
        .filter_map(|(s, h)| h.authorization.clone().map(|a| (s.clone(), a)))
        .collect();
    if published.as_ref() != Some(&tokens) {
        crate::upstream::credentials::publish(tokens.clone());
        *published = Some(tokens);
    }
    next.saturating_duration_since(Instant::now())
}

/// One client credentials grant: the access token and its lifetime.
fn fetch(agent: &ureq::Agent, creds: &UpstreamCredentials) -> Result<(String, Duration), String> {
    request_token(agent, creds, &[("grant_type", "client_credentials")])
}

/// Posts a grant to `creds.token_url`: `grant` (its type and fields) followed by what every
/// grant of this upstream carries (the client's id and secret, as `client_secret_post`, and
/// its `scope` and `resource` when configured); returns the access token and its lifetime.
pub(super) fn request_token(
    agent: &ureq::Agent,
    creds: &UpstreamCredentials,
    grant: &[(&str, &str)],
) -> Result<(String, Duration), String> {
    let mut form = grant.to_vec();
    form.push(("client_id", creds.client_id.as_str()));
    form.push(("client_secret", creds.client_secret.as_str()));
    if let Some(scope) = &creds.scope {
        form.push(("scope", scope));
    }
    if let Some(resource) = &creds.resource {
        form.push(("resource", resource));
    }
    let body = super::http::post_form(agent, &creds.token_url, &form)?.doc;
    access_token(&body)
}

/// The access token of a token endpoint's answer and its lifetime.
fn access_token(body: &serde_json::Value) -> Result<(String, Duration), String> {
    let token = body
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or("the token response has no usable access_token")?;
    let lifetime = body
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .map_or(Duration::from_secs(3600), Duration::from_secs);
    Ok((token.to_owned(), lifetime))
}
