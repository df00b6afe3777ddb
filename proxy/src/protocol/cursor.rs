//! The proxy's own pagination cursors for aggregated lists.
//!
//! The proxy merges the lists of every upstream server into one catalog and pages it itself, so
//! upstream cursors never reach the client. A cursor names a position in one catalog generation:
//! when the catalog changes the generation moves on, and the caller can tell a stale cursor from
//! a current one instead of silently skipping or repeating items.
//!
//! # Wire form
//! 36 lowercase hex digits encoding 18 bytes:
//! `version (1) | kind (1) | generation (8, BE) | offset (4, BE) | checksum (4, BE)`, where the
//! checksum is FNV-1a 32 of the first 14 bytes. Clients must treat cursors as opaque; the
//! checksum only catches a copy-paste typo, it is not a secret.
//!
//! # How to use
//! Decode the request's cursor with [`decode`], check its [`ListKind`] and generation against
//! the request, slice with [`page`], and return [`encode`] of the next offset if there is one.

/// Layout version written into every cursor; bump it when the layout changes.
const VERSION: u8 = 1;
/// Encoded size in bytes, checksum included.
const LEN: usize = 18;
/// Bytes covered by the checksum.
const BODY_LEN: usize = LEN - 4;

/// Which aggregated list a cursor pages through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// `tools/list`.
    Tools,
    /// `prompts/list`.
    Prompts,
    /// `resources/list`.
    Resources,
    /// `resources/templates/list`.
    ResourceTemplates,
}

impl ListKind {
    /// The byte stored in a cursor; 0 is left unused so an all-zero cursor is invalid.
    fn to_byte(self) -> u8 {
        match self {
            ListKind::Tools => 1,
            ListKind::Prompts => 2,
            ListKind::Resources => 3,
            ListKind::ResourceTemplates => 4,
        }
    }

    /// The kind stored as `b`, if any.
    fn from_byte(b: u8) -> Option<ListKind> {
        match b {
            1 => Some(ListKind::Tools),
            2 => Some(ListKind::Prompts),
            3 => Some(ListKind::Resources),
            4 => Some(ListKind::ResourceTemplates),
            _ => None,
        }
    }
}

/// A position in one generation of an aggregated list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// Catalog generation the offset refers to.
    pub generation: u64,
    /// Index of the first item of the next page.
    pub offset: u32,
    /// The list this cursor belongs to; the caller checks it matches the request.
    pub kind: ListKind,
}

/// Why a client's cursor was refused; all are the client's fault (JSON-RPC invalid params).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not 36 hex digits.
    #[error("malformed cursor: expected {} hex digits", LEN * 2)]
    Malformed,
    /// Well formed, but the checksum does not match: a typo or a forged cursor.
    #[error("corrupt cursor: checksum mismatch")]
    Checksum,
    /// Written by a proxy with another cursor layout.
    #[error("unsupported cursor version {0}")]
    Version(u8),
    /// The kind byte names no list.
    #[error("unknown list kind {0} in cursor")]
    Kind(u8),
}

/// The opaque string form of `c`.
pub fn encode(c: &Cursor) -> String {
    let mut bytes = [0u8; LEN];
    bytes[0] = VERSION;
    bytes[1] = c.kind.to_byte();
    bytes[2..10].copy_from_slice(&c.generation.to_be_bytes());
    bytes[10..14].copy_from_slice(&c.offset.to_be_bytes());
    let sum = fnv1a_32(&bytes[..BODY_LEN]);
    bytes[BODY_LEN..].copy_from_slice(&sum.to_be_bytes());
    let mut out = String::with_capacity(LEN * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Parses a cursor made by [`encode`]; upper-case hex is accepted too.
pub fn decode(s: &str) -> Result<Cursor, CursorError> {
    let s = s.as_bytes();
    if s.len() != LEN * 2 {
        return Err(CursorError::Malformed);
    }
    let mut bytes = [0u8; LEN];
    for (out, pair) in bytes.iter_mut().zip(s.chunks_exact(2)) {
        let hi = hex_value(pair[0]).ok_or(CursorError::Malformed)?;
        let lo = hex_value(pair[1]).ok_or(CursorError::Malformed)?;
        *out = (hi << 4) | lo;
    }
    // Checksum first: a typo in the version byte should read as a typo, not a version skew.
    let mut sum = [0u8; 4];
    sum.copy_from_slice(&bytes[BODY_LEN..]);
    if u32::from_be_bytes(sum) != fnv1a_32(&bytes[..BODY_LEN]) {
        return Err(CursorError::Checksum);
    }
    if bytes[0] != VERSION {
        return Err(CursorError::Version(bytes[0]));
    }
    let kind = ListKind::from_byte(bytes[1]).ok_or(CursorError::Kind(bytes[1]))?;
    let mut generation = [0u8; 8];
    generation.copy_from_slice(&bytes[2..10]);
    let mut offset = [0u8; 4];
    offset.copy_from_slice(&bytes[10..14]);
    Ok(Cursor {
        generation: u64::from_be_bytes(generation),
        offset: u32::from_be_bytes(offset),
        kind,
    })
}

/// The page of `items` starting at `offset` and the offset of the next page, if any.
///
/// A `page_size` of 0 means no paging: everything from `offset` on. An `offset` past the end
/// gives an empty page and no next offset, so a stale cursor ends the listing instead of failing.
pub fn page<T>(items: &[T], offset: usize, page_size: usize) -> (&[T], Option<usize>) {
    let rest = items.get(offset..).unwrap_or(&[]);
    if page_size == 0 || rest.len() <= page_size {
        return (rest, None);
    }
    (&rest[..page_size], Some(offset + page_size))
}

/// Lower-case hex digits.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The value of one hex digit.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// FNV-1a 32: any stable hash would do; a random edit slips through with odds of about 2^-32.
fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cursor with every field away from its default.
    fn sample() -> Cursor {
        Cursor {
            generation: 0x0102_0304_0506_0708,
            offset: 300,
            kind: ListKind::ResourceTemplates,
        }
    }

    #[test]
    fn round_trip_every_kind() {
        for kind in [
            ListKind::Tools,
            ListKind::Prompts,
            ListKind::Resources,
            ListKind::ResourceTemplates,
        ] {
            let c = Cursor { kind, ..sample() };
            let s = encode(&c);
            assert_eq!(s.len(), 36);
            assert!(s.bytes().all(|b| HEX.contains(&b)));
            assert_eq!(decode(&s), Ok(c));
        }
        let max = Cursor {
            generation: u64::MAX,
            offset: u32::MAX,
            kind: ListKind::Tools,
        };
        assert_eq!(decode(&encode(&max)), Ok(max));
    }

    #[test]
    fn encoding_is_fixed() {
        // Pin the layout: version 1, kind 4, generation, then the offset 300 (0x12c).
        assert!(encode(&sample()).starts_with("01040102030405060708"));
        assert_eq!(&encode(&sample())[20..28], "0000012c");
    }

    #[test]
    fn upper_case_is_accepted() {
        let s = encode(&sample()).to_ascii_uppercase();
        assert_eq!(decode(&s), Ok(sample()));
    }

    #[test]
    fn malformed_is_rejected() {
        assert_eq!(decode(""), Err(CursorError::Malformed));
        assert_eq!(decode("abc"), Err(CursorError::Malformed));
        let mut s = encode(&sample());
        s.replace_range(0..1, "g");
        assert_eq!(decode(&s), Err(CursorError::Malformed));
        // Multi-byte input of the right byte length must not panic.
        assert_eq!(decode(&"é".repeat(18)), Err(CursorError::Malformed));
    }

    #[test]
    fn every_single_digit_typo_is_caught() {
        let s = encode(&sample());
        for i in 0..s.len() {
            for d in HEX.iter().map(|&b| char::from(b)) {
                let mut t = s.clone();
                if t[i..=i].starts_with(d) {
                    continue;
                }
                t.replace_range(i..=i, d.encode_utf8(&mut [0; 4]));
                assert!(decode(&t).is_err(), "typo at {i} accepted: {t}");
            }
        }
    }

    /// Builds a cursor string from raw bytes with a valid checksum.
    fn raw(version: u8, kind: u8) -> String {
        let mut body = vec![version, kind];
        body.extend_from_slice(&[0; 12]);
        let sum = fnv1a_32(&body);
        body.extend_from_slice(&sum.to_be_bytes());
        body.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn version_and_kind_are_checked() {
        assert_eq!(decode(&raw(2, 1)), Err(CursorError::Version(2)));
        assert_eq!(decode(&raw(1, 0)), Err(CursorError::Kind(0)));
        assert_eq!(decode(&raw(1, 9)), Err(CursorError::Kind(9)));
        assert!(decode(&raw(1, 1)).is_ok());
    }

    #[test]
    fn paging() {
        let items: Vec<u32> = (0..10).collect();
        assert_eq!(page(&items, 0, 4), (&items[0..4], Some(4)));
        assert_eq!(page(&items, 4, 4), (&items[4..8], Some(8)));
        assert_eq!(page(&items, 8, 4), (&items[8..10], None));
        // A page ending exactly at the end has no next page.
        assert_eq!(page(&items, 6, 4), (&items[6..10], None));
        assert_eq!(page(&items, 10, 4), (&items[10..], None));
        assert_eq!(page(&items, 99, 4), (&items[10..], None));
        assert_eq!(page(&items, 3, 0), (&items[3..], None));
        let empty: [u8; 0] = [];
        assert_eq!(page(&empty, 0, 4), (&empty[..], None));
    }
}
