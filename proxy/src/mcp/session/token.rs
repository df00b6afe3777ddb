//! Sealed session ids: everything needed to restore a session, encrypted and authenticated.
//!
//! A session id is `{shard:02x}` followed by base64url(nonce || ChaCha20-Poly1305(claims)),
//! with the shard prefix as associated data, so a forged or edited id fails to open. In a
//! fleet the prefix also names the owning member, `{shard:02x}.{member:08x}.` (a tag of the
//! member's name, [`crate::cluster::member_routes::member_tag`]): any member reads the owner
//! from the prefix without opening the id, and an edited prefix fails to open too. The
//! claims hold the client's `initialize` parameters, the negotiated version and (with `[auth]`)
//! a digest of the client identity that opened the session: any shard, a restarted proxy or
//! another instance with the same key can rebuild the session, owner included, and open fresh
//! upstream sessions for it, while the client keeps its id and never re-initializes.
//! One key for every token (no per-token derivation): a random 96-bit nonce per token keeps
//! nonce reuse out of reach for any realistic number of sessions.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

pub use crate::config::session_key::{KeyError, KEY_LEN};

/// What a session id carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The shard that created the session (its owner, modulo the shard count).
    pub shard: u8,
    /// The fleet member that created the session (its tag), `None` for a single instance.
    pub member: Option<u32>,
    /// Seconds since the Unix epoch when the session was created.
    pub issued_at: u64,
    /// The protocol version agreed with the client.
    pub version: String,
    /// The client's capabilities and info, as sent to upstreams at initialize.
    pub init_params: Bytes,
    /// The replica each server's upstream session is bound to, by server index
    /// ([`NO_BINDING`] where none is), so a restored session lands where it was.
    pub bindings: Vec<u8>,
    /// Digest of the client identity that opened the session (empty without `[auth]`).
    pub principal: Vec<u8>,
}

/// A server without a replica binding in [`Claims::bindings`].
pub const NO_BINDING: u8 = u8::MAX;

/// The key that seals and opens session ids.
pub struct SessionKey {
    key: LessSafeKey,
}

impl SessionKey {
    /// A key from 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<SessionKey, KeyError> {
        Ok(SessionKey::from_bytes(
            &crate::config::session_key::key_bytes(hex)?,
        ))
    }

    /// A random key: sessions then last as long as this process.
    pub fn random() -> SessionKey {
        let mut bytes = [0u8; KEY_LEN];
        fill_random(&mut bytes);
        SessionKey::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8; KEY_LEN]) -> SessionKey {
        // CHACHA20_POLY1305 takes exactly 32 bytes, so this cannot fail.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).unwrap_or_else(|_| unreachable!());
        SessionKey {
            key: LessSafeKey::new(unbound),
        }
    }

    /// Seals `claims` into a session id.
    pub fn seal(&self, claims: &Claims) -> String {
        let mut payload = Vec::with_capacity(10 + claims.version.len() + claims.init_params.len());
        payload.extend_from_slice(&claims.issued_at.to_be_bytes());
        payload.push(claims.version.len() as u8);
        payload.extend_from_slice(claims.version.as_bytes());
        let bindings = &claims.bindings[..claims.bindings.len().min(usize::from(u8::MAX))];
        payload.push(bindings.len() as u8);
        payload.extend_from_slice(bindings);
        let principal = &claims.principal[..claims.principal.len().min(usize::from(u8::MAX))];
        payload.push(principal.len() as u8);
        payload.extend_from_slice(principal);
        payload.extend_from_slice(&claims.init_params);
        self.seal_payload(&prefix(claims.shard, claims.member), payload)
    }

    /// Seals raw plaintext as a session id of `shard`: lets the fuzz targets reach the parsing
    /// that follows a successful decryption, which forged ids never get to.
    #[doc(hidden)]
    pub fn seal_raw(&self, shard: u8, payload: &[u8]) -> String {
        self.seal_payload(&prefix(shard, None), payload.to_vec())
    }

    fn seal_payload(&self, prefix: &str, mut payload: Vec<u8>) -> String {
        let prefix = prefix.to_owned();
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        // Sealing in place only fails for inputs larger than ring's limit (~256 GiB).
        let _ = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(prefix.as_bytes()),
            &mut payload,
        );
        let mut sealed = Vec::with_capacity(NONCE_LEN + payload.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&payload);
        let mut id = prefix;
        URL_SAFE_NO_PAD.encode_string(&sealed, &mut id);
        id
    }

    /// Opens a session id; `None` for anything this key did not seal, unaltered.
    pub fn open(&self, id: &str) -> Option<Claims> {
        let shard = u8::from_str_radix(id.get(..2)?, 16).ok()?;
        let member = member_of(id);
        let prefix = id.get(..prefix_len(member))?;
        let mut sealed = URL_SAFE_NO_PAD.decode(id.get(prefix.len()..)?).ok()?;
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).ok()?;
        let plain = self
            .key
            .open_in_place(
                nonce,
                Aad::from(prefix.as_bytes()),
                &mut sealed[NONCE_LEN..],
            )
            .ok()?;
        let issued_at = u64::from_be_bytes(plain.get(..8)?.try_into().ok()?);
        let version_len = usize::from(*plain.get(8)?);
        let version = std::str::from_utf8(plain.get(9..9 + version_len)?)
            .ok()?
            .to_owned();
        let at = 9 + version_len;
        let count = usize::from(*plain.get(at)?);
        let bindings = plain.get(at + 1..at + 1 + count)?.to_vec();
        let at = at + 1 + count;
        let principal_len = usize::from(*plain.get(at)?);
        let principal = plain.get(at + 1..at + 1 + principal_len)?.to_vec();
        let init_params = Bytes::copy_from_slice(plain.get(at + 1 + principal_len..)?);
        Some(Claims {
            shard,
            member,
            issued_at,
            version,
            init_params,
            bindings,
            principal,
        })
    }
}

/// The clear prefix of an id: the owner shard, and the owner member in a fleet.
fn prefix(shard: u8, member: Option<u32>) -> String {
    match member {
        Some(m) => format!("{shard:02x}.{m:08x}."),
        None => format!("{shard:02x}"),
    }
}

fn prefix_len(member: Option<u32>) -> usize {
    if member.is_some() {
        12
    } else {
        2
    }
}

/// The member named in a session id's prefix (not checked: only opening the id proves it),
/// `None` for an id of a single instance or one that is malformed.
pub fn member_of(id: &str) -> Option<u32> {
    let b = id.as_bytes();
    if b.len() < 12 || b[2] != b'.' || b[11] != b'.' {
        return None;
    }
    u32::from_str_radix(id.get(3..11)?, 16).ok()
}

fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        // The kernel's CSPRNG does not fail after boot; refuse to go on with a weak key.
        panic!("the operating system's random number generator failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            shard: 3,
            member: None,
            issued_at: 1_764_000_000,
            version: "2025-11-25".into(),
            init_params: Bytes::from_static(br#"{"capabilities":{"sampling":{}}}"#),
            bindings: vec![2, NO_BINDING, 0],
            principal: vec![7; 32],
        }
    }

    #[test]
    fn a_sealed_id_opens_with_the_same_key_only() {
        let key = SessionKey::from_hex(&"ab".repeat(32)).expect("key");
        let id = key.seal(&claims());
        assert!(id.starts_with("03"));
        assert!(
            id.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "visible ASCII only: {id}"
        );
        assert_eq!(key.open(&id), Some(claims()));
        assert_eq!(
            SessionKey::random().open(&id),
            None,
            "a foreign key must not open it"
        );
        let again = SessionKey::from_hex(&"ab".repeat(32)).expect("key");
        assert_eq!(
            again.open(&id),
            Some(claims()),
            "a restarted proxy with the key opens it"
        );
    }

    #[test]
    fn any_edit_is_refused() {
        let key = SessionKey::random();
        let id = key.seal(&claims());
        for i in 0..id.len() {
            let mut edited = id.clone().into_bytes();
            edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
            let edited = String::from_utf8(edited).expect("ascii");
            if edited != id {
                assert_eq!(key.open(&edited), None, "edit at {i} accepted");
            }
        }
        assert_eq!(key.open("garbage"), None);
        assert_eq!(key.open(""), None);
    }

    #[test]
    fn a_fleet_id_names_its_member_and_an_edited_member_fails_to_open() {
        let key = SessionKey::random();
        let mut c = claims();
        c.member = Some(0x1234_abcd);
        let id = key.seal(&c);
        assert!(id.starts_with("03.1234abcd."), "{id}");
        assert_eq!(member_of(&id), Some(0x1234_abcd));
        assert_eq!(key.open(&id), Some(c));
        let moved = id.replacen("1234abcd", "1234abce", 1);
        assert_eq!(member_of(&moved), Some(0x1234_abce));
        assert_eq!(key.open(&moved), None, "the member is authenticated");
        let single = key.seal(&claims());
        assert_eq!(member_of(&single), None);
        assert_eq!(member_of("03.zz"), None);
    }

    #[test]
    fn bad_keys_are_explained() {
        assert!(SessionKey::from_hex("abc").is_err());
        assert!(SessionKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(SessionKey::from_hex(&format!("  {}  ", "0f".repeat(32))).is_ok());
    }
}
