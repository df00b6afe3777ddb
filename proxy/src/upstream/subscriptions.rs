//! The resource subscriptions one upstream session holds, kept so a new session can renew them.
//!
//! A server forgets a session's subscriptions with the session (it restarted, or expired it).
//! The proxy opens a new upstream session without the client noticing, so it must also
//! subscribe again, or the client, still believing it is subscribed, silently stops getting
//! `notifications/resources/updated`. Both ways a subscription reaches an upstream session
//! report here: a stateful client's own `resources/subscribe` (`routing::forward`) and a
//! listen stream's (`mcp::bridge::listen`). URIs are the server's own (unprefixed).

use std::cell::RefCell;
use std::collections::BTreeSet;

use crate::protocol::jsonrpc;

/// The URIs a server accepted `resources/subscribe` for in one upstream session, and has not
/// been asked to unsubscribe since.
#[derive(Debug, Default)]
pub struct Subscriptions {
    // Ordered, so renewals go out in a stable order (and logs read the same every time).
    uris: RefCell<BTreeSet<String>>,
}

impl Subscriptions {
    /// The server accepted a subscription to `uri`.
    pub fn add(&self, uri: &str) {
        if !self.uris.borrow().contains(uri) {
            self.uris.borrow_mut().insert(uri.to_owned());
        }
    }

    /// The client no longer wants `uri`: it must not be renewed, whatever the server answers.
    pub fn remove(&self, uri: &str) {
        self.uris.borrow_mut().remove(uri);
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.uris.borrow().is_empty()
    }

    /// A copy of the URIs held (a renewal awaits between requests, so it must not borrow).
    pub fn uris(&self) -> Vec<String> {
        self.uris.borrow().iter().cloned().collect()
    }
}

/// `{"uri":…}`, the params of `resources/subscribe` and `resources/unsubscribe`.
pub fn uri_params(uri: &str) -> Vec<u8> {
    let mut params = Vec::from(&b"{\"uri\":"[..]);
    jsonrpc::write_json_string(&mut params, uri);
    params.push(b'}');
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_subscriptions_are_kept_once_until_unsubscribed() {
        let subs = Subscriptions::default();
        assert!(subs.is_empty());
        subs.add("demo://b");
        subs.add("demo://a");
        subs.add("demo://b");
        assert_eq!(subs.uris(), ["demo://a", "demo://b"], "one entry per URI");
        subs.remove("demo://b");
        assert_eq!(subs.uris(), ["demo://a"]);
        subs.remove("demo://never");
        assert_eq!(subs.uris(), ["demo://a"], "an unknown URI changes nothing");
        subs.remove("demo://a");
        assert!(subs.is_empty());
    }

    #[test]
    fn uri_params_are_valid_json_for_any_uri() {
        let uri = "demo://r/\"quoted\"\\path";
        let mut buf = uri_params(uri);
        let v = simd_json::to_borrowed_value(&mut buf).expect("valid JSON");
        use simd_json::prelude::*;
        assert_eq!(v.get_str("uri"), Some(uri));
    }
}
