//! Open streams follow a reload of `[auth]`: a stream whose credential the new `[auth]` refuses
//! ends (cleanly, like at its token's expiry); one whose credential is still accepted stays.
//!
//! A stream keeps the credential it was opened with and the `[auth]` generation it last
//! checked it against. Before each event it compares that with the process-wide generation (one
//! atomic load); only after a reload does it authenticate again. An idle stream is woken for
//! that by one watcher task per shard, which looks at the generation every [`WATCH_EVERY`]
//! while the shard has open streams that waited: no lock, no mesh message, no timer per stream.

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::task::Waker;
use std::time::Duration;

use crate::config::auth::AuthConfig;
use crate::http::sse::{Deadline, Revocation};

use super::identity::{authenticate, unix_now, Identity};
use super::running::{current_with_generation, generation};
use super::same;

/// How often a shard with waiting streams looks for a new `[auth]`.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Who opened a stream, as far as it can be told before the request is answered (no copy of
/// the credential, so ordinary requests pay nothing).
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    principal: [u8; 32],
    expires: Option<NonZeroU64>,
}

impl Opened {
    /// What to remember of `identity` (`None` with `[auth]` off).
    pub fn of(identity: Option<&Identity>) -> Option<Opened> {
        identity.map(|i| Opened {
            principal: i.principal,
            expires: i.expires,
        })
    }
}

/// The end of a stream opened by `opened` with the `Authorization` value `header`: its
/// token's expiry ([`super::stream_end`]) or a reload that no longer accepts it.
pub fn stream_deadline(opened: Option<Opened>, header: Option<&str>) -> Deadline {
    let deadline = Deadline::new(super::stream_end(opened.and_then(|o| o.expires)));
    let access = opened.zip(header).map(|(o, h)| {
        Box::new(StreamAccess {
            header: h.into(),
            principal: o.principal,
            // Not a generation any [auth] has: the first look checks the credential against
            // the `[auth]` running then, so a reload while the request was answered counts.
            generation: 0,
            slot: None,
        }) as Box<dyn Revocation>
    });
    deadline.revoked_by(access)
}

/// Whether `header` still authenticates as `principal` under `auth` at `now` (seconds).
/// A key, subject or JWKS key removed, or a token expired, refuses it; a key or subject moved to
/// another client keeps it (the session's next request gets the new client's policy).
pub fn still_accepted(auth: &AuthConfig, header: &str, principal: &[u8; 32], now: u64) -> bool {
    authenticate(auth, Some(header), now).is_ok_and(|id| same(&id.principal, principal))
}

/// A stream's credential, checked again after each reload.
struct StreamAccess {
    /// The `Authorization` value it was opened with (a JWT is verified again, signature
    /// included, so a removed JWKS key ends its streams).
    header: Box<str>,
    principal: [u8; 32],
    /// The `[auth]` generation the credential was last accepted by.
    generation: u64,
    /// Its entry among this shard's waiting streams.
    slot: Option<u64>,
}

impl Revocation for StreamAccess {
    fn revoked(&mut self) -> bool {
        if generation() == self.generation {
            return false;
        }
        let (checked, auth) = current_with_generation();
        self.generation = checked;
        !auth.config.enabled
            || !still_accepted(&auth.config, &self.header, &self.principal, unix_now())
    }

    fn wake_on_change(&mut self, waker: &Waker) {
        let generation = self.generation;
        let slot = *self.slot.get_or_insert_with(|| {
            WAITING.with(|w| {
                let mut w = w.borrow_mut();
                w.next += 1;
                w.next
            })
        });
        WAITING.with(|w| {
            let mut w = w.borrow_mut();
            match w.streams.get(&slot) {
                Some((g, known)) if *g == generation && known.will_wake(waker) => {}
                _ => {
                    w.streams.insert(slot, (generation, waker.clone()));
                }
            }
            if !w.watching {
                w.watching = true;
                glommio::spawn_local(watch()).detach();
            }
        });
    }
}

impl Drop for StreamAccess {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            // The watcher never holds the borrow while waking, so this one cannot clash.
            WAITING.with(|w| w.borrow_mut().streams.remove(&slot));
        }
    }
}

/// This shard's streams waiting for their next event.
#[derive(Default)]
struct Waiting {
    next: u64,
    /// Slot -> (the generation its stream last checked, its waker).
    streams: HashMap<u64, (u64, Waker)>,
    /// Whether the watcher task runs.
    watching: bool,
}

thread_local! {
    static WAITING: RefCell<Waiting> = RefCell::new(Waiting::default());
}

/// Wakes the waiting streams that checked an older `[auth]` than the running one; ends once
/// no stream that waited is left open (the next one to wait starts it again).
async fn watch() {
    loop {
        glommio::timer::sleep(WATCH_EVERY).await;
        let running = generation();
        let stale: Vec<Waker> = WAITING.with(|w| {
            let mut w = w.borrow_mut();
            if w.streams.is_empty() {
                w.watching = false;
                return Vec::new();
            }
            let mut stale = Vec::new();
            w.streams.retain(|_, (g, waker)| {
                if *g == running {
                    return true;
                }
                stale.push(waker.clone());
                false
            });
            stale
        });
        if !WAITING.with(|w| w.borrow().watching) {
            return;
        }
        // Woken outside the borrow: a woken stream registers itself again when polled.
        stale.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn auth(toml: &str) -> AuthConfig {
        Config::from_toml_str(&format!("[auth]\nenabled = true\n{toml}"), "t.toml")
            .expect("valid")
            .auth
    }

    fn principal(auth: &AuthConfig, header: &str) -> [u8; 32] {
        authenticate(auth, Some(header), 1000)
            .expect("accepted when opened")
            .principal
    }

    #[test]
    fn a_stream_keeps_its_access_only_while_the_reloaded_auth_accepts_its_api_key() {
        let before = auth(
            "[[auth.clients]]\nname = \"a\"\napi_keys = [\"key-a-0123456789abcdef\"]\n\
             [[auth.clients]]\nname = \"b\"\napi_keys = [\"key-b-0123456789abcdef\", \"key-b2-0123456789abcdef\"]\n",
        );
        // Key a revoked; key b moved to another client; b2 kept where it was.
        let after = auth(
            "[[auth.clients]]\nname = \"c\"\napi_keys = [\"key-b-0123456789abcdef\"]\n\
             [[auth.clients]]\nname = \"b\"\napi_keys = [\"key-b2-0123456789abcdef\"]\n",
        );
        let (a, b, b2) = (
            "Bearer key-a-0123456789abcdef",
            "Bearer key-b-0123456789abcdef",
            "Bearer key-b2-0123456789abcdef",
        );
        assert!(still_accepted(&before, a, &principal(&before, a), 1000));
        assert!(
            !still_accepted(&after, a, &principal(&before, a), 1000),
            "a removed key ends its streams"
        );
        assert!(
            still_accepted(&after, b, &principal(&before, b), 1000),
            "a key moved to another client is still accepted"
        );
        assert!(still_accepted(&after, b2, &principal(&before, b2), 1000));
        assert!(
            !still_accepted(&after, b2, &principal(&before, b), 1000),
            "a credential proving someone else is not the stream's"
        );
    }

    #[test]
    fn a_stream_keeps_its_access_only_while_the_reloaded_auth_accepts_its_token() {
        let dir = std::env::temp_dir().join(format!("mcp-proxy-revoke-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let jwks = |name: &str, secret: &[u8]| {
            let path = dir.join(name);
            let k =
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret);
            std::fs::write(&path, format!(r#"{{"keys":[{{"kty":"oct","k":"{k}"}}]}}"#))
                .expect("write");
            path
        };
        let (old_secret, new_secret) = (
            b"0123456789abcdef0123456789abcdef",
            b"fedcba9876543210fedcba9876543210",
        );
        let with = |jwks: &std::path::Path, subjects: &str| {
            auth(&format!(
                "jwks_file = \"{}\"\n[[auth.clients]]\nname = \"j\"\nsubjects = [{subjects}]\n",
                jwks.display()
            ))
        };
        let before = with(&jwks("old.json", old_secret), r#""alice", "bob""#);
        let bob_gone = with(&jwks("old2.json", old_secret), r#""alice""#);
        let rotated = with(&jwks("new.json", new_secret), r#""alice", "bob""#);
        let _ = std::fs::remove_dir_all(&dir);
        let token = |sub: &str| {
            let claims = format!(r#"{{"sub":"{sub}","exp":2000}}"#);
            format!(
                "Bearer {}",
                super::super::jwt::sign(r#"{"alg":"HS256"}"#, &claims, old_secret)
            )
        };
        let (alice, bob) = (token("alice"), token("bob"));
        let (pa, pb) = (principal(&before, &alice), principal(&before, &bob));
        // A reload forgets the tokens a shard verified; so does each step here.
        let check = |auth: &AuthConfig, header: &str, p: &[u8; 32], now: u64| {
            super::super::identity::forget_verified();
            still_accepted(auth, header, p, now)
        };
        assert!(
            check(&bob_gone, &alice, &pa, 1000),
            "a subject kept keeps its streams"
        );
        assert!(
            !check(&bob_gone, &bob, &pb, 1000),
            "a subject removed ends its streams"
        );
        assert!(
            !check(&rotated, &alice, &pa, 1000),
            "a JWKS key removed ends the streams of the tokens it signed"
        );
        assert!(
            !check(&before, &alice, &pa, 3000),
            "an expired token is not accepted"
        );
    }
}
