//! Requests one member forwards to another, authenticated between members.
//!
//! A forwarded request carries `Mcp-Proxy-Hop: {member tag}.{unix seconds}.{mac}`, the mac an
//! HMAC-SHA256 (ring) of the tag, the time, the HTTP method, the session id and the body, keyed
//! from the fleet's shared `session_key` (never the key itself: the derivation is fixed, so
//! a mac reveals nothing of the key that seals session ids). The receiver checks it and then
//! serves the request itself, never forwarding it again; a client cannot forge one to choose
//! where its session is served. The client's own `Authorization` travels with the request to
//! the member serving its session, which checks it as any member would (and does not count it
//! against the client's rate a second time); nothing of it goes further.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

/// The header a forwarded request carries.
pub const HEADER: &str = "Mcp-Proxy-Hop";

/// How far a hop's time may be from the receiver's clock (members' clocks roughly agree).
const SKEW_SECS: u64 = 60;

/// The key members sign hops with, derived from the shared session key.
pub struct HopKey {
    key: hmac::Key,
}

impl HopKey {
    /// The hop key of the fleet whose session key is `session_key` (its 32 bytes).
    pub fn new(session_key: &[u8]) -> HopKey {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, session_key),
            b"mcp-proxy member hop v1",
        );
        HopKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// The header value for a request of `member` sent at `now` (unix seconds).
    pub fn sign(&self, member: u32, now: u64, method: &str, session: &str, body: &[u8]) -> String {
        let head = format!("{member:08x}.{now}");
        let tag = self.mac(&head, method, session, body);
        format!("{head}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Whether `value` is a hop a member signed for this request within the allowed skew.
    pub fn verify(&self, value: &str, now: u64, method: &str, session: &str, body: &[u8]) -> bool {
        let Some((head, mac)) = value.rsplit_once('.') else {
            return false;
        };
        let Some(sent) = head
            .split_once('.')
            .and_then(|(_, t)| t.parse::<u64>().ok())
        else {
            return false;
        };
        if sent.abs_diff(now) > SKEW_SECS {
            return false;
        }
        let Ok(mac) = URL_SAFE_NO_PAD.decode(mac) else {
            return false;
        };
        // ring compares in constant time.
        hmac::verify(&self.key, &message(head, method, session, body), &mac).is_ok()
    }

    fn mac(&self, head: &str, method: &str, session: &str, body: &[u8]) -> hmac::Tag {
        hmac::sign(&self.key, &message(head, method, session, body))
    }
}

/// What a hop's mac covers, each field on its own line and the body last.
fn message(head: &str, method: &str, session: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(head.len() + method.len() + session.len() + body.len() + 3);
    for part in [head.as_bytes(), method.as_bytes(), session.as_bytes()] {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m.extend_from_slice(body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hop_verifies_only_for_its_request_and_key_and_time() {
        let key = HopKey::new(&[5; 32]);
        let now = 1_800_000_000;
        let hop = key.sign(7, now, "POST", "00.sid", b"{}");
        assert!(key.verify(&hop, now + 3, "POST", "00.sid", b"{}"));
        assert!(
            !key.verify(&hop, now, "POST", "00.sid", b"{ }"),
            "another body"
        );
        assert!(
            !key.verify(&hop, now, "GET", "00.sid", b"{}"),
            "another method"
        );
        assert!(
            !key.verify(&hop, now, "POST", "00.other", b"{}"),
            "another session"
        );
        assert!(
            !key.verify(&hop, now + 600, "POST", "00.sid", b"{}"),
            "too old"
        );
        assert!(!HopKey::new(&[6; 32]).verify(&hop, now, "POST", "00.sid", b"{}"));
        assert!(!key.verify("garbage", now, "POST", "00.sid", b"{}"));
    }
}
