//! Who is calling: an `Authorization` value mapped to a configured client ([`authenticate`]),
//! the check each request passes at the door ([`check_request`]), and when a stream opened with
//! a credential must end ([`stream_end`]).
//!
//! API keys are compared as digests, all of them, each in constant time. A JWT's signature is
//! checked once per shard: each shard remembers the tokens it verified until they expire.

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use crate::config::auth::{sha256, AuthConfig};

use super::denial::Denial;
use super::running::current;
use super::{glob, jwt, rate, same};

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
    /// The token's scopes, space-separated (`None` for an API key), for per-tool scopes.
    pub scopes: Option<std::sync::Arc<str>>,
}

/// Authenticates the `Authorization` value `authorization` gives and takes a token from its
/// client's bucket on this shard. `Ok(None)` when `[auth]` is off, without asking for the
/// header.
pub fn check_request<'a>(
    authorization: impl FnOnce() -> Option<&'a str>,
) -> Result<Option<Identity>, Denial> {
    let auth = current();
    if !auth.config.enabled {
        return Ok(None);
    }
    let header = authorization();
    let (index, identity) = authenticate_indexed(&auth.config, header, unix_now())?;
    if let (Some(oauth), Some(expires), Some(token)) = (
        &auth.config.oauth,
        identity.expires,
        header
            .and_then(|h| h.trim().split_once(' '))
            .map(|(_, t)| t.trim()),
    ) {
        super::oauth::offer(oauth, identity.principal, token, expires.get());
    }
    let client = &auth.config.clients[index];
    if let Some(rate) = &client.rate {
        if let Err(retry_after) =
            rate::take_token(index, rate, crate::cluster::live_members(), Instant::now())
        {
            return Err(Denial::RateLimited {
                client: client.name.clone(),
                retry_after,
            });
        }
    }
    Ok(Some(identity))
}

/// [`check_request`] for a request another member of the fleet received and forwarded: the
/// client is authenticated again here, but its rate token was taken where it arrived.
pub fn check_forwarded<'a>(
    authorization: impl FnOnce() -> Option<&'a str>,
) -> Result<Option<Identity>, Denial> {
    let auth = current();
    if !auth.config.enabled {
        return Ok(None);
    }
    authenticate_indexed(&auth.config, authorization(), unix_now()).map(|(_, id)| Some(id))
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
                scopes: None,
            },
        ));
    }
    if token.bytes().filter(|b| *b == b'.').count() != 2
        || (auth.keys.is_empty() && auth.oauth.is_none())
    {
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
    let verified = jwt::verify(auth, &super::oauth::keys::current(), token, now).map_err(|e| {
        if let (jwt::JwtError::UnknownKid(_), Some(oauth)) = (&e, &auth.oauth) {
            // The issuer may have rotated its keys: ask for them again (the fetch thread
            // honours that at most once per kid_refresh_seconds). The claimed issuer is read
            // unverified, only to pick which trusted issuer to ask.
            if let Some(issuer) = jwt::unverified_issuer(token) {
                if oauth.issuers.contains(&issuer) {
                    super::oauth::fetch::unknown_kid(&issuer);
                }
            }
        }
        Denial::Invalid {
            reason: e.reason(),
            message: e.to_string(),
        }
    })?;
    let client = match client_of(auth, &verified) {
        Ok(client) => client,
        Err(Some(lacking)) => {
            let c = &auth.clients[lacking];
            return Err(Denial::InsufficientScope {
                client: c.name.clone(),
                scope: c.scopes.join(" "),
                message: format!(
                    "token of \"{}\" lacks scope \"{}\" that client \"{}\" is granted by; ask the authorization server for it",
                    verified.subject,
                    c.scopes.join(" "),
                    c.name
                ),
            });
        }
        Err(None) => {
            return Err(Denial::Forbidden {
                client: None,
                reason: "forbidden",
                message: format!(
                    "token subject \"{}\" is valid but not allowed here; ask the operator to add it to an [[auth.clients]] entry's subjects",
                    verified.subject
                ),
            })
        }
    };
    let identity = Identity {
        client: auth.clients[client].name.clone(),
        principal: sha256(format!("jwt:{}\0{}", verified.issuer, verified.subject).as_bytes()),
        // An exp of 0 never verifies; were one to, its streams would end at once.
        expires: Some(NonZeroU64::new(verified.expires).unwrap_or(NonZeroU64::MIN)),
        scopes: Some(std::sync::Arc::from(verified.scopes.join(" "))),
    };
    remember(digest, verified.expires, &identity);
    Ok((client, identity))
}

/// The first client a verified token is: its `subjects` match the token's `sub` (or it has
/// none, only `scopes`) and the token carries every scope in its `scopes`. Otherwise the
/// first client the token would be with more scopes (`Err(Some)`: the client can step up),
/// or none at all.
fn client_of(auth: &AuthConfig, token: &jwt::Verified) -> Result<usize, Option<usize>> {
    let named = |c: &crate::config::auth::ClientConfig| {
        if c.subjects.is_empty() {
            !c.scopes.is_empty()
        } else {
            c.subjects.iter().any(|p| glob(p, &token.subject))
        }
    };
    let scoped =
        |c: &crate::config::auth::ClientConfig| c.scopes.iter().all(|s| token.scopes.contains(s));
    auth.clients
        .iter()
        .position(|c| named(c) && scoped(c))
        .ok_or_else(|| auth.clients.iter().position(named))
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

/// Forgets the tokens this shard verified (a reload may have removed their key, issuer or
/// subject).
pub(super) fn forget_verified() {
    VERIFIED.with(|v| v.borrow_mut().clear());
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

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
    fn clients_are_granted_by_scope_and_a_missing_scope_names_what_to_ask_for() {
        let dir = std::env::temp_dir().join(format!("mcp-proxy-scopes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let jwks = dir.join("jwks.json");
        let secret = b"0123456789abcdef0123456789abcdef";
        std::fs::write(
            &jwks,
            format!(r#"{{"keys":[{{"kty":"oct","k":"{}"}}]}}"#, b64(secret)),
        )
        .expect("write");
        let c = Config::from_toml_str(
            &format!("[auth]\nenabled = true\njwks_file = \"{}\"\n\
                [[auth.clients]]\nname = \"admins\"\nsubjects = [\"staff-*\"]\nscopes = [\"mcp:admin\", \"mcp:tools\"]\n\
                [[auth.clients]]\nname = \"readers\"\nscopes = [\"mcp:read\"]\n", jwks.display()),
            "t.toml",
        )
        .expect("valid");
        let _ = std::fs::remove_dir_all(&dir);
        let token = |sub: &str, scope: &str| {
            let claims = format!(r#"{{"sub":"{sub}","exp":2000,"scope":"{scope}"}}"#);
            format!(
                "Bearer {}",
                jwt::sign(r#"{"alg":"HS256"}"#, &claims, secret)
            )
        };
        let admin = authenticate(
            &c.auth,
            Some(&token("staff-1", "mcp:tools mcp:admin")),
            1000,
        );
        assert_eq!(admin.map(|i| i.client).as_deref(), Ok("admins"));
        let reader = authenticate(&c.auth, Some(&token("anyone", "mcp:read")), 1000);
        assert_eq!(
            reader.map(|i| i.client).as_deref(),
            Ok("readers"),
            "by scope alone"
        );
        match authenticate(&c.auth, Some(&token("staff-2", "mcp:tools")), 1000) {
            Err(Denial::InsufficientScope { client, scope, .. }) => {
                assert_eq!(
                    (client.as_str(), scope.as_str()),
                    ("admins", "mcp:admin mcp:tools")
                );
            }
            other => panic!("expected insufficient_scope, got {other:?}"),
        }
        // A client granted by scope alone could be anyone's: others are told its scopes.
        assert!(matches!(
            authenticate(&c.auth, Some(&token("visitor", "mcp:tools")), 1000),
            Err(Denial::InsufficientScope { client, .. }) if client == "readers"
        ));
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
}
