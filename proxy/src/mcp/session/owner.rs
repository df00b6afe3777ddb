//! Who a session belongs to: a digest of the identity that opened it (also sealed into the
//! session id, so a restored session keeps it), the name of its client, and the session's
//! count against that client's `max_sessions`.
//!
//! A request made on the session with other credentials is refused ([`Owner::admit`]); what
//! the session's client may see and call is its client's [`Policy`] in the running `[auth]`.
//! Without `[auth]` a session has no owner and every check here allows everything.

use std::cell::RefCell;

use simd_json::BorrowedValue;

use crate::auth::{self, Denial, Identity, Opening, Policy, SessionSlot};
use crate::registry::Catalog;

/// The identity a session belongs to.
#[derive(Debug, Default)]
pub struct Owner {
    principal: RefCell<Option<[u8; 32]>>,
    /// The client's name, followed from request to request (a reload may move a key or a
    /// subject to another client).
    client: RefCell<Option<String>>,
    slot: RefCell<Option<SessionSlot>>,
}

impl Owner {
    /// Binds a new session to the identity that opened it.
    pub fn bind(&self, opening: Option<Opening>) {
        if let Some(o) = opening {
            let (identity, slot) = o.into_parts();
            *self.principal.borrow_mut() = Some(identity.principal);
            *self.client.borrow_mut() = Some(identity.client);
            *self.slot.borrow_mut() = slot;
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
            (Some(p), Some(id)) => auth::same(&p, &id.principal),
            _ => false,
        }
    }

    /// The principal that owns the session, if it was opened with a credential.
    pub fn principal(&self) -> Option<[u8; 32]> {
        *self.principal.borrow()
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

    /// Refuses a request made with other credentials than the ones that opened the session.
    pub fn admit(&self, identity: Option<&Identity>) -> Result<(), Denial> {
        let principal = *self.principal.borrow();
        match (principal, identity) {
            (None, None) => Ok(()),
            (Some(p), Some(id)) if auth::same(&p, &id.principal) => {
                let known = self.client.borrow().clone();
                if known.as_deref() != Some(id.client.as_str()) {
                    // Restored from its id (count it again, whatever the limit: it already
                    // existed), or its key or subject now belongs to another client (a reload):
                    // the session follows the client, and its count moves with it.
                    let counted = known.is_none() || self.slot.borrow().is_some();
                    *self.client.borrow_mut() = Some(id.client.clone());
                    if counted {
                        *self.slot.borrow_mut() = auth::count_session(&id.client);
                    }
                }
                Ok(())
            }
            (_, id) => Err(Denial::Forbidden {
                client: id.map(|i| i.client.clone()),
                reason: "session_mismatch",
                message: "this session was opened with other credentials; use the credentials that opened it, or initialize a new session".into(),
            }),
        }
    }

    /// The policy of the session's client in the running `[auth]`, or `None` when everything
    /// is allowed.
    pub fn policy(&self) -> Option<Policy> {
        self.client.borrow().as_deref().map(Policy::of)
    }

    /// Whether the session may use catalog server `server` (an index; past the end is the
    /// proxy); a refusal is counted.
    pub fn permits_server(&self, catalog: &Catalog, server: usize) -> bool {
        self.policy()
            .is_none_or(|p| p.permits_server(catalog, server))
    }

    /// Whether the session may call the tool exposed as `exposed` (of `server`); a refusal is
    /// counted.
    pub fn permits_tool(&self, catalog: &Catalog, server: usize, exposed: &str) -> bool {
        self.policy()
            .is_none_or(|p| p.permits_tool(catalog, server, exposed))
    }

    /// Whether the session may use `server`, without counting a refusal (for choosing, not
    /// refusing).
    pub fn shows_server(&self, catalog: &Catalog, server: usize) -> bool {
        self.policy()
            .is_none_or(|p| p.shows_server(catalog, server))
    }

    /// Whether the session may call the tool exposed as `exposed`, without counting a refusal
    /// (for a fast path that leaves refusing, and counting, to the full one).
    pub fn shows_tool(&self, catalog: &Catalog, server: usize, exposed: &str) -> bool {
        self.policy()
            .is_none_or(|p| p.shows_tool(catalog, server, exposed))
    }

    /// For a `completion/complete` naming a prompt or resource of a server the session may not
    /// use, the error a name that does not exist gets; `None` otherwise.
    pub fn hidden_reference(&self, catalog: &Catalog, msg: &BorrowedValue<'_>) -> Option<String> {
        self.policy()?.hidden_reference(catalog, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(client: &str, principal: u8) -> Identity {
        Identity {
            client: client.into(),
            principal: [principal; 32],
            expires: None,
            scopes: None,
        }
    }

    #[test]
    fn a_session_admits_only_the_credentials_that_opened_it() {
        let unowned = Owner::default();
        assert!(
            unowned.admit(None).is_ok(),
            "without auth: no owner, no credentials"
        );
        assert!(matches!(
            unowned.admit(Some(&identity("a", 1))),
            Err(Denial::Forbidden {
                reason: "session_mismatch",
                ..
            })
        ));

        let restored = Owner::default();
        restored.restore(&[1; 32]);
        assert_eq!(restored.client(), None);
        assert!(restored.admit(Some(&identity("a", 1))).is_ok());
        assert_eq!(
            restored.client().as_deref(),
            Some("a"),
            "a restored session learns its client from its owner's next request"
        );
        assert!(matches!(
            restored.admit(Some(&identity("a", 2))),
            Err(Denial::Forbidden {
                client: Some(_),
                reason: "session_mismatch",
                ..
            })
        ));
        assert!(
            restored.admit(None).is_err(),
            "an owned session refuses a request without credentials"
        );
        assert!(
            restored.owned_by(Some(&identity("b", 1))),
            "the principal owns the session, whichever client it now belongs to"
        );
        restored.restore(&[9; 5]);
        assert!(
            restored.owned_by(Some(&identity("a", 1))),
            "a sealed principal of the wrong length changes nothing"
        );
    }
}
