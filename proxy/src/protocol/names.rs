//! Namespacing of aggregated names: tools and prompts become `{prefix}__{name}`, resource URIs
//! become `{prefix}+{uri}`, where the prefix is the upstream server's configured name.
//!
//! # How to use
//! Build a [`NameTable`] from every `(server index, prefix, original name)` the catalog holds,
//! answer `tools/list` with [`NameTable::exposed`] and route `tools/call` with
//! [`NameTable::lookup`]. Resource URIs need no table: [`prefix_uri`] and [`split_uri`] are
//! reversible on their own.
//!
//! # Lengths
//! MCP clients reject tool names longer than [`MAX_NAME_LEN`]. Names are measured in UTF-8 bytes,
//! not characters: a byte limit is never looser than the character limit clients enforce, so a
//! name that fits here fits everywhere. Shortening always cuts on a char boundary, so a shortened
//! name is valid UTF-8 and can be a few bytes under the limit when the cut lands inside a
//! multi-byte character.

use std::collections::HashMap;
use std::fmt::Write as _;

/// Longest exposed tool or prompt name, in bytes; MCP clients reject longer ones.
pub const MAX_NAME_LEN: usize = 64;

/// Separator between the server prefix and the original tool or prompt name.
pub const NAME_SEPARATOR: &str = "__";

/// Longest server name (and so prefix) the configuration accepts.
pub const MAX_SERVER_NAME_LEN: usize = 32;

/// Bytes the hash suffix takes: `_` and 8 hex digits.
const SUFFIX_LEN: usize = 9;

/// Whether `name` is a valid server name: `[A-Za-z0-9_-]{1,32}` without `__`.
///
/// `__` is refused because it separates prefix and name: a prefix containing it would make
/// `a__b__c` ambiguous to a reader, even though routing itself goes through the table.
pub fn is_valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVER_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.contains(NAME_SEPARATOR)
}

/// The name a client sees for `name` of the server with `prefix`; an empty prefix means none.
///
/// If `{prefix}__{name}` fits in [`MAX_NAME_LEN`] bytes it is returned as is. Otherwise it is
/// cut to leave room for `_` and 8 hex digits of a hash of the whole un-shortened name, so two
/// long names that share their first 55 bytes still differ. The result is deterministic and
/// stable across proxy versions: clients store tool names, so they must not change on upgrade.
pub fn namespaced(prefix: &str, name: &str) -> String {
    let full = join(prefix, name);
    if full.len() <= MAX_NAME_LEN {
        full
    } else {
        shortened(&full, 0)
    }
}

/// `{prefix}__{name}`, or `name` alone when the prefix is empty.
fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        let mut s = String::with_capacity(prefix.len() + NAME_SEPARATOR.len() + name.len());
        s.push_str(prefix);
        s.push_str(NAME_SEPARATOR);
        s.push_str(name);
        s
    }
}

/// `full` cut to fit with a hash suffix; `salt` 0 is the normal form, higher salts only break ties.
///
/// Cutting the whole `prefix__name` (rather than keeping the prefix and cutting the name) also
/// covers a prefix too long to leave room for any of the name: the result still fits.
fn shortened(full: &str, salt: u32) -> String {
    let keep = floor_char_boundary(full, MAX_NAME_LEN - SUFFIX_LEN);
    let mut hash = fnv1a_64(FNV_OFFSET, full.as_bytes());
    if salt != 0 {
        hash = fnv1a_64(hash, &salt.to_le_bytes());
    }
    // Fold the high half in so all 64 bits of the hash count towards the 32 we print.
    let short = (hash ^ (hash >> 32)) as u32;
    let mut out = String::with_capacity(MAX_NAME_LEN);
    out.push_str(&full[..keep]);
    // Writing to a String cannot fail.
    let _ = write!(out, "_{short:08x}");
    out
}

/// The largest index `<= max` that is a char boundary of `s` (std's is still unstable).
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    // A UTF-8 character is at most 4 bytes, so this walks back at most 3 steps.
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes` starting from `state`; written out because std's `DefaultHasher` may
/// change between Rust releases and exposed names must not.
fn fnv1a_64(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// Two servers would expose the same name; the configuration must be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "servers #{first_server} and #{second_server} both expose the name \"{name}\"; \
     give them distinct, non-empty names"
)]
pub struct NameCollision {
    /// The exposed name both servers produce.
    pub name: String,
    /// Index of the server that produced the name first.
    pub first_server: usize,
    /// Index of the server that produced it again.
    pub second_server: usize,
}

/// One exposed name and where it routes to.
#[derive(Debug, Clone)]
struct Entry {
    /// Index of the upstream server in the configuration.
    server: usize,
    /// The name the upstream server uses.
    original: String,
}

/// Exposed name <-> (server, original name), collision-free, with O(1) lookups both ways.
#[derive(Debug, Clone, Default)]
pub struct NameTable {
    /// Exposed name -> index into `entries`.
    by_exposed: HashMap<String, usize>,
    /// Per server index: original name -> exposed name.
    by_original: Vec<HashMap<String, String>>,
    /// Every distinct (server, original) pair, in no meaningful order.
    entries: Vec<Entry>,
}

impl NameTable {
    /// Builds the table from `(server index, prefix, original name)` triples.
    ///
    /// Names that fit are exposed unchanged, so they are claimed first. Shortened names are
    /// then assigned in order of their full un-shortened form, bumping a hash salt on a clash,
    /// so the result does not depend on the order of `items` at all, and a name only moves if it
    /// really collides. A server listing the same name twice is counted once. Two different
    /// servers producing the same un-shortened name is a [`NameCollision`].
    pub fn build<'a, I>(items: I) -> Result<NameTable, NameCollision>
    where
        I: IntoIterator<Item = (usize, &'a str, &'a str)>,
    {
        let mut table = NameTable::default();
        // Full name -> index into `entries`, to catch exact duplicates before any shortening.
        let mut full_names: HashMap<String, usize> = HashMap::new();
        let mut long: Vec<(String, usize)> = Vec::new();
        for (server, prefix, original) in items {
            let full = join(prefix, original);
            if let Some(&existing) = full_names.get(&full) {
                let first = table.entries[existing].server;
                if first == server {
                    continue;
                }
                return Err(NameCollision {
                    name: full,
                    first_server: first.min(server),
                    second_server: first.max(server),
                });
            }
            let idx = table.entries.len();
            table.entries.push(Entry {
                server,
                original: original.to_owned(),
            });
            full_names.insert(full.clone(), idx);
            if full.len() <= MAX_NAME_LEN {
                table.insert(full, idx);
            } else {
                long.push((full, idx));
            }
        }
        // Full names are unique here, so sorting by them gives a total, input-independent order.
        long.sort_unstable();
        for (full, idx) in long {
            let mut salt = 0u32;
            let mut exposed = shortened(&full, salt);
            while table.by_exposed.contains_key(&exposed) {
                salt += 1;
                exposed = shortened(&full, salt);
            }
            table.insert(exposed, idx);
        }
        Ok(table)
    }

    /// Records `exposed` for entry `idx` in both directions.
    fn insert(&mut self, exposed: String, idx: usize) {
        let entry = &self.entries[idx];
        if self.by_original.len() <= entry.server {
            self.by_original.resize_with(entry.server + 1, HashMap::new);
        }
        self.by_original[entry.server].insert(entry.original.clone(), exposed.clone());
        self.by_exposed.insert(exposed, idx);
    }

    /// The server index and original name behind an exposed name.
    pub fn lookup(&self, exposed: &str) -> Option<(usize, &str)> {
        let entry = &self.entries[*self.by_exposed.get(exposed)?];
        Some((entry.server, entry.original.as_str()))
    }

    /// The exposed name of `original` on server `server_idx`.
    pub fn exposed(&self, server_idx: usize, original: &str) -> Option<&str> {
        self.by_original
            .get(server_idx)?
            .get(original)
            .map(String::as_str)
    }

    /// Number of distinct exposed names.
    pub fn len(&self) -> usize {
        self.by_exposed.len()
    }

    /// Whether the table holds no names.
    pub fn is_empty(&self) -> bool {
        self.by_exposed.is_empty()
    }
}

/// Separator between the server prefix and the original resource URI.
pub const URI_SEPARATOR: char = '+';

/// `{prefix}+{uri}`: `everything+demo://x` is still a URI, with scheme `everything+demo`.
///
/// An empty prefix means "no prefix" and returns `uri` unchanged. [`split_uri`] cannot tell such
/// a URI from a prefixed one, so callers route unprefixed URIs to the unprefixed server
/// themselves. The result is a strictly valid URI only when the prefix starts with a letter and
/// has no `_` (URI schemes allow letters, digits, `+`, `-`, `.`); clients treat resource URIs as
/// opaque strings, and [`split_uri`] accepts every valid server name.
pub fn prefix_uri(prefix: &str, uri: &str) -> String {
    if prefix.is_empty() {
        return uri.to_owned();
    }
    let mut s = String::with_capacity(prefix.len() + 1 + uri.len());
    s.push_str(prefix);
    s.push(URI_SEPARATOR);
    s.push_str(uri);
    s
}

/// Splits a [`prefix_uri`] result into `(prefix, original uri)`.
///
/// Splits at the first `+` only if what precedes it is a valid server name and what follows it
/// starts with a URI scheme (`[A-Za-z][A-Za-z0-9+.-]*:`); anything else is `None`, which callers
/// report as an unknown resource rather than guessing a server.
pub fn split_uri(uri: &str) -> Option<(&str, &str)> {
    let (prefix, rest) = uri.split_once(URI_SEPARATOR)?;
    if is_valid_server_name(prefix) && has_scheme(rest) {
        Some((prefix, rest))
    } else {
        None
    }
}

/// Whether `uri` starts with `[A-Za-z][A-Za-z0-9+.-]*:`.
fn has_scheme(uri: &str) -> bool {
    let Some((scheme, _)) = uri.split_once(':') else {
        return false;
    };
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_pass_through() {
        assert_eq!(namespaced("everything", "echo"), "everything__echo");
        assert_eq!(namespaced("", "echo"), "echo");
    }

    #[test]
    fn exactly_64_is_kept() {
        let name = "n".repeat(64 - "srv__".len());
        let out = namespaced("srv", &name);
        assert_eq!(out.len(), 64);
        assert_eq!(out, format!("srv__{name}"));
    }

    #[test]
    fn long_name_is_shortened_to_64_and_stable() {
        let name = "a_really_long_tool_name_that_goes_on_and_on_and_on_forever_and_ever";
        let out = namespaced("everything", name);
        assert_eq!(out.len(), MAX_NAME_LEN);
        assert_eq!(out, namespaced("everything", name));
        // Fixed once: a change here renames tools under clients' feet.
        assert_eq!(
            out,
            "everything__a_really_long_tool_name_that_goes_on_and_on_7b7a794f"
        );
        let other = format!("{name}2");
        assert_ne!(namespaced("everything", &other), out);
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a_64(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shortening_respects_char_boundaries() {
        // "srv__" is 5 bytes; 'é' is 2, so byte 55 falls inside the 26th 'é'.
        let name = "é".repeat(40);
        let out = namespaced("srv", &name);
        assert!(out.len() <= MAX_NAME_LEN);
        assert_eq!(out.len(), 5 + 25 * 2 + SUFFIX_LEN);
        assert!(out.starts_with("srv__é"));
    }

    #[test]
    fn overlong_prefix_still_fits() {
        let prefix = "p".repeat(100);
        let out = namespaced(&prefix, "x");
        assert_eq!(out.len(), MAX_NAME_LEN);
        assert_ne!(out, namespaced(&prefix, "y"));
    }

    #[test]
    fn empty_prefix_long_name_is_shortened() {
        let name = "x".repeat(80);
        assert_eq!(namespaced("", &name).len(), MAX_NAME_LEN);
    }

    #[test]
    fn table_round_trips() {
        let long = "l".repeat(70);
        let items = [(0, "a", "echo"), (1, "b", "echo"), (1, "b", long.as_str())];
        let t = NameTable::build(items).expect("no collision");
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup("a__echo"), Some((0, "echo")));
        assert_eq!(t.lookup("b__echo"), Some((1, "echo")));
        let exposed = t.exposed(1, &long).expect("present");
        assert_eq!(exposed, namespaced("b", &long));
        assert_eq!(t.lookup(exposed), Some((1, long.as_str())));
        assert_eq!(t.lookup("c__echo"), None);
        assert_eq!(t.exposed(7, "echo"), None);
    }

    #[test]
    fn shortened_clash_with_real_name_is_resolved() {
        let long = "l".repeat(70);
        let clash = namespaced("b", &long);
        // Server 0 (no prefix) really has a tool named like b's shortened one.
        let items = [(1, "b", long.as_str()), (0, "", clash.as_str())];
        let t = NameTable::build(items).expect("no collision");
        assert_eq!(t.lookup(&clash), Some((0, clash.as_str())));
        let moved = t.exposed(1, &long).expect("present");
        assert_ne!(moved, clash);
        assert!(moved.len() <= MAX_NAME_LEN);
        assert_eq!(t.lookup(moved), Some((1, long.as_str())));
    }

    #[test]
    fn shortened_clash_between_long_names_is_order_independent() {
        // Same first 55 bytes; force a clash by giving one server the other's shortened name too.
        let a = format!("{}A", "x".repeat(70));
        let b = format!("{}B", "x".repeat(70));
        let taken = namespaced("s", &a);
        let forward = [
            (0, "s", a.as_str()),
            (0, "s", b.as_str()),
            (1, "", taken.as_str()),
        ];
        let mut backward = forward;
        backward.reverse();
        let t1 = NameTable::build(forward).expect("ok");
        let t2 = NameTable::build(backward).expect("ok");
        for (server, _, original) in forward {
            assert_eq!(t1.exposed(server, original), t2.exposed(server, original));
        }
        // The unaffected long name keeps its normal form.
        assert_eq!(t1.exposed(0, &b), Some(namespaced("s", &b).as_str()));
        assert_eq!(t1.len(), 3);
    }

    #[test]
    fn duplicate_from_same_server_is_counted_once() {
        let t = NameTable::build([(0, "a", "x"), (0, "a", "x")]).expect("ok");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn same_name_from_two_servers_is_an_error() {
        let err = NameTable::build([(2, "", "echo"), (0, "", "echo")]).unwrap_err();
        assert_eq!(
            err,
            NameCollision {
                name: "echo".into(),
                first_server: 0,
                second_server: 2
            }
        );
        // Overlap between an unprefixed server and a prefixed one.
        let err = NameTable::build([(0, "a", "x"), (1, "", "a__x")]).unwrap_err();
        assert_eq!(err.name, "a__x");
    }

    #[test]
    fn server_names() {
        assert!(is_valid_server_name("everything"));
        assert!(is_valid_server_name("a-b_c9"));
        assert!(!is_valid_server_name(""));
        assert!(!is_valid_server_name("a b"));
        assert!(!is_valid_server_name("a__b"));
        assert!(!is_valid_server_name(&"a".repeat(33)));
    }

    #[test]
    fn uri_round_trip() {
        let p = prefix_uri("everything", "demo://resource/1");
        assert_eq!(p, "everything+demo://resource/1");
        assert_eq!(split_uri(&p), Some(("everything", "demo://resource/1")));
        // Only the first '+' splits; the original may contain more.
        let p = prefix_uri("fs", "svn+ssh://host/x+y");
        assert_eq!(split_uri(&p), Some(("fs", "svn+ssh://host/x+y")));
        assert_eq!(prefix_uri("", "file:///x"), "file:///x");
    }

    #[test]
    fn split_rejects_garbage() {
        assert_eq!(split_uri("file:///x"), None);
        assert_eq!(split_uri("a b+file:///x"), None);
        assert_eq!(split_uri("a__b+file:///x"), None);
        assert_eq!(split_uri("srv+no-scheme"), None);
        assert_eq!(split_uri("srv+1bad://x"), None);
        assert_eq!(split_uri("srv+:x"), None);
        assert_eq!(split_uri("+file:///x"), None);
        assert_eq!(split_uri(""), None);
    }
}
