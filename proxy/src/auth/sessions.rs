//! Sessions per client: process-wide counters, touched only when a session opens or closes,
//! and the `max_sessions` quota checked at open.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::denial::Denial;
use super::identity::Identity;
use super::running::{current, Auth};

/// A counted session of client `name` in `auth`, and how many it had before.
fn session_slot(auth: &Auth, name: &str) -> Option<(SessionSlot, usize)> {
    let counter = auth.sessions.get(auth.find(name)?)?.clone();
    let before = counter.fetch_add(1, Ordering::Relaxed);
    Some((SessionSlot(counter), before))
}

/// Counts one more session of client `name` in the running `[auth]`, whatever its limit (a
/// session that already existed: restored from its id, or moved to `name` by a reload).
/// `None` when no client has that name.
pub fn count_session(name: &str) -> Option<SessionSlot> {
    session_slot(&current(), name).map(|(slot, _)| slot)
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

    /// The identity that opens the session and its counted slot.
    pub fn into_parts(self) -> (Identity, Option<SessionSlot>) {
        (self.identity, self.slot)
    }
}

/// Reserves a session for `identity`'s client, or refuses when it has `max_sessions`.
/// `Ok(None)` without an identity (`[auth]` off).
pub fn open(identity: Option<&Identity>) -> Result<Option<Opening>, Denial> {
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
        });
    };
    if client.max_sessions.is_some_and(|max| before >= max) {
        drop(slot);
        return Err(Denial::TooManySessions {
            client: client.name.clone(),
            max: client.max_sessions.unwrap_or_default(),
        });
    }
    Ok(Some(Opening {
        identity: identity.clone(),
        slot: Some(slot),
    }))
}
