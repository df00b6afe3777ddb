//! Properties of the proxy's byte-level codecs, checked over generated inputs rather than a few
//! examples:
//! - an upstream answer relayed by splicing the client's id into its bytes is the same message as
//!   the answer parsed, given the client's id and serialised again; a request whose id and
//!   `params.name` (or `params.uri`) are rewritten in its bytes is the same message as the request
//!   parsed, changed and serialised again. Member order, whitespace, escapes and nesting vary.
//! - a session id opens to exactly the claims it was sealed from and with no other key, and an
//!   id with any one bit flipped (in its text, or in the sealed bytes under the base64) never
//!   opens: every bit of each generated id is tried;
//! - a list cursor decodes to the position it encodes; one with any bit of its 18 bytes flipped is
//!   refused, and a flipped bit in its text is refused unless it only changes a hex letter's case
//!   (every bit is tried).
//!
//! serde_json is the reference parser and serialiser: it shares no code with the splice.

use mcp_proxy::mcp::session::token::{Claims, SessionKey};
use mcp_proxy::protocol::cursor::{self, Cursor, ListKind};
use mcp_proxy::protocol::jsonrpc::Id;
use mcp_proxy::protocol::splice;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use serde_json::Value;

/// Failing inputs are printed shrunk; the suite writes no regression files into the tree.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// For properties that try every bit of a session id in each case (thousands of opens a case).
fn config_every_bit() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        ..config()
    }
}

// ---------------------------------------------------------------------------------------------
// Generated JSON and messages

/// Text of any kind, weighted towards what JSON writes specially: control characters, quotes,
/// backslashes, brackets and separators (a uniform pick over Unicode almost never hits those).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x1f\"\\\\/{}\\[\\],: a-z]{0,12}",
        "[\\x00-\\x7f\\u{80}-\\u{7ff}\\u{2028}\\u{fffd}\\u{10000}-\\u{10ffff}]{0,8}",
    ]
}

/// Any JSON value a server or client may send, a few levels deep: every string (escapes,
/// control characters, non-ASCII, quotes and brackets inside strings), integers at both ends of
/// their range, fractions, and objects whose keys need escaping.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1.0e9f64..1.0e9).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value written compactly or pretty-printed (newlines and indentation inside).
fn written(value: &Value, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    text.unwrap_or_else(|e| panic!("serde_json cannot write {value:?}: {e}"))
}

/// Whitespace for the gaps between tokens of the objects the splice scans.
fn gaps() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[ \t\r\n]{0,2}", 40)
}

/// `{ "k" : v , ... }` with the members in the given order and `gaps` between every token.
fn object(members: &[(&str, String)], gaps: &[String]) -> String {
    let mut gap = gaps.iter().cycle();
    let mut next = || gap.next().map(String::as_str).unwrap_or("");
    let mut out = format!("{}{{", next());
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let key = written(&Value::String((*key).to_owned()), false);
        out.push_str(&format!(
            "{}{key}{}:{}{value}{}",
            next(),
            next(),
            next(),
            next()
        ));
    }
    out.push_str(&format!("{}}}{}", next(), next()));
    out
}

fn id_json(id: &Id) -> Value {
    match id {
        Id::Num(n) => Value::from(*n),
        Id::Str(s) => Value::String(s.clone()),
    }
}

/// An id as the splice reads and matches it: an integer, or a string that needs no escape.
fn plain_id() -> impl Strategy<Value = Id> {
    prop_oneof![
        any::<i64>().prop_map(Id::Num),
        "[^\"\\\\\\x00-\\x1f]{0,16}".prop_map(Id::Str),
    ]
}

/// Any id the full parse gives a client: strings may hold anything, escapes included.
fn any_id() -> impl Strategy<Value = Id> {
    prop_oneof![any::<i64>().prop_map(Id::Num), text().prop_map(Id::Str)]
}

fn parsed(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(bytes).escape_debug()
        )
    })
}

// ---------------------------------------------------------------------------------------------
// The splice against parse, modify, serialise

/// An upstream answer to the proxy's request `up`: members in a shuffled order, a result or an
/// error, compact or pretty values.
fn answer_to(up: Id) -> impl Strategy<Value = (Id, String)> {
    (
        json_value(),
        any::<bool>(),
        any::<bool>(),
        any::<i32>(),
        gaps(),
    )
        .prop_flat_map(move |(payload, is_error, pretty, code, gaps)| {
            let outcome = if is_error {
                let error = serde_json::json!({"code": code, "message": "failed", "data": payload});
                ("error", written(&error, pretty))
            } else {
                ("result", written(&payload, pretty))
            };
            let members = vec![
                ("jsonrpc", "\"2.0\"".to_owned()),
                ("id", written(&id_json(&up), false)),
                outcome,
            ];
            let up = up.clone();
            Just(members)
                .prop_shuffle()
                .prop_map(move |members| (up.clone(), object(&members, &gaps)))
        })
}

/// Methods whose requests the proxy rewrites in their bytes, with the parameter that names
/// what the request is for.
const NAMED_METHODS: [(&str, &str); 5] = [
    ("tools/call", "name"),
    ("prompts/get", "name"),
    ("resources/read", "uri"),
    ("resources/subscribe", "uri"),
    ("resources/unsubscribe", "uri"),
];

/// A client request naming a tool, prompt or resource, with arguments of any shape: the
/// top-level members and those of `params` each in a shuffled order.
fn named_request() -> impl Strategy<Value = (Id, &'static str, String, String)> {
    (
        plain_id(),
        prop::sample::select(NAMED_METHODS.to_vec()),
        "[^\"\\\\\\x00-\\x1f]{0,24}",
        json_value(),
        prop::option::of(json_value()),
        any::<bool>(),
        gaps(),
    )
        .prop_flat_map(
            |(id, (method, field), name, arguments, meta, pretty, gaps)| {
                let mut params = vec![
                    (field, written(&Value::String(name.clone()), false)),
                    ("arguments", written(&arguments, pretty)),
                ];
                if let Some(meta) = meta {
                    params.push(("_meta", written(&meta, pretty)));
                }
                Just(params).prop_shuffle().prop_flat_map(move |params| {
                    let top = vec![
                        ("jsonrpc", "\"2.0\"".to_owned()),
                        ("id", written(&id_json(&id), false)),
                        ("method", written(&Value::String(method.to_owned()), false)),
                        ("params", object(&params, &gaps[20..])),
                    ];
                    let (id, name, gaps) = (id.clone(), name.clone(), gaps.clone());
                    Just(top)
                        .prop_shuffle()
                        .prop_map(move |top| (id.clone(), field, name.clone(), object(&top, &gaps)))
                })
            },
        )
}

proptest! {
    #![proptest_config(config())]

    /// The spliced answer is the answer with the client's id, whatever the rest holds.
    #[test]
    fn splice_answer_equals_the_reparsed_answer_with_the_clients_id(
        (up, msg) in plain_id().prop_flat_map(answer_to),
        down in any_id(),
    ) {
        let spliced = splice::answer(msg.as_bytes(), &up, &down);
        prop_assert!(spliced.is_some(), "a plain answer was not spliced: {msg:?}");
        let mut expected = parsed(msg.as_bytes());
        expected["id"] = id_json(&down);
        prop_assert_eq!(parsed(&spliced.unwrap_or_default()), expected);
    }

    /// Splicing the proxy's own id back in changes no byte.
    #[test]
    fn splice_answer_with_the_same_id_is_the_identity(
        (up, msg) in plain_id().prop_flat_map(answer_to),
    ) {
        let spliced = splice::answer(msg.as_bytes(), &up, &up);
        prop_assert_eq!(spliced.as_deref(), Some(msg.as_bytes()));
    }

    /// An answer to another request is never spliced.
    #[test]
    fn splice_answer_refuses_another_requests_answer(
        (up, msg) in plain_id().prop_flat_map(answer_to),
        other in plain_id(),
    ) {
        prop_assume!(other != up);
        prop_assert_eq!(splice::answer(msg.as_bytes(), &other, &up), None);
    }

    /// A request read from its bytes has the id and name serde_json reads, and rewriting its id
    /// and name in the bytes gives the request parsed, changed and serialised again.
    #[test]
    fn splice_request_rewrite_equals_the_reparsed_request_with_new_id_and_name(
        (id, field, name, msg) in named_request(),
        new_id in any_id(),
        new_name in text(),
    ) {
        let read = splice::request(msg.as_bytes(), 64, |_| true);
        prop_assert!(read.is_some(), "a plain request was not read: {msg:?}");
        let Some(read) = read else { unreachable!() };
        prop_assert_eq!(&read.id, &id);
        let found = read.param_str(msg.as_bytes(), field);
        prop_assert_eq!(found.as_ref().map(|(_, text)| *text), Some(name.as_str()));
        let Some((span, _)) = found else { unreachable!() };
        let out = read.rewrite(msg.as_bytes(), &new_id, span, &new_name);
        let mut expected = parsed(msg.as_bytes());
        expected["id"] = id_json(&new_id);
        expected["params"][field] = Value::String(new_name);
        prop_assert_eq!(parsed(&out), expected);
    }
}

// ---------------------------------------------------------------------------------------------
// Session ids

fn claims() -> impl Strategy<Value = Claims> {
    (
        any::<u8>(),
        any::<u64>(),
        prop::string::string_regex(".{0,40}").unwrap_or_else(|e| panic!("{e}")),
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec(any::<u8>(), 0..32),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::option::of(any::<u32>()),
    )
        .prop_map(
            |(shard, issued_at, version, init_params, bindings, principal, member)| Claims {
                shard,
                member,
                issued_at,
                version,
                init_params: init_params.into(),
                bindings,
                principal,
            },
        )
}

/// A key from 32 generated bytes (the key itself has no `Debug`, so the bytes are the input).
fn session_key(bytes: &[u8; 32]) -> SessionKey {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    SessionKey::from_hex(&hex).unwrap_or_else(|e| panic!("{e}"))
}

proptest! {
    #![proptest_config(config())]

    /// Any shard, a restarted proxy or another instance holding the key rebuilds the session
    /// exactly as it was sealed.
    #[test]
    fn session_id_opens_to_the_claims_it_was_sealed_from(
        key in any::<[u8; 32]>(),
        claims in claims(),
    ) {
        let key = session_key(&key);
        let id = key.seal(&claims);
        prop_assert!(id.bytes().all(|b| b.is_ascii_graphic()), "{id}");
        prop_assert_eq!(key.open(&id), Some(claims));
    }

    /// An id sealed with one key does not open with another.
    #[test]
    fn session_id_does_not_open_with_another_key(
        key in any::<[u8; 32]>(),
        other in any::<[u8; 32]>(),
        claims in claims(),
    ) {
        prop_assume!(other != key);
        let sealed = session_key(&key).seal(&claims);
        prop_assert_eq!(session_key(&other).open(&sealed), None);
    }
}

proptest! {
    #![proptest_config(config_every_bit())]

    /// One bit flipped anywhere in the id's text (the shard prefix included) and it never opens:
    /// every bit of the id is tried.
    #[test]
    fn session_id_with_a_flipped_bit_in_its_text_never_opens(
        key in any::<[u8; 32]>(),
        claims in claims(),
    ) {
        let key = session_key(&key);
        let id = key.seal(&claims);
        for bit in 0..id.len() * 8 {
            let mut bytes = id.clone().into_bytes();
            bytes[bit / 8] ^= 1 << (bit % 8);
            // A flipped top bit leaves ASCII: no client can send that as a header's text.
            if let Ok(edited) = String::from_utf8(bytes) {
                prop_assert_eq!(key.open(&edited), None, "opened with bit {} flipped", bit);
            }
        }
    }

    /// One bit flipped in the nonce, the ciphertext or the tag, written back as valid base64,
    /// and it never opens: every bit is tried.
    #[test]
    fn session_id_with_a_flipped_bit_in_its_sealed_bytes_never_opens(
        key in any::<[u8; 32]>(),
        claims in claims(),
    ) {
        let key = session_key(&key);
        let id = key.seal(&claims);
        // The clear prefix: the shard, and in a fleet `.{member}.` after it.
        let (prefix, body) = id.split_at(if claims.member.is_some() { 12 } else { 2 });
        let sealed = URL_SAFE_NO_PAD.decode(body).unwrap_or_else(|e| panic!("{e}"));
        for bit in 0..sealed.len() * 8 {
            let mut edited = sealed.clone();
            edited[bit / 8] ^= 1 << (bit % 8);
            let edited = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(&edited));
            prop_assert_eq!(key.open(&edited), None, "opened with sealed bit {} flipped", bit);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// List cursors

fn list_cursor() -> impl Strategy<Value = Cursor> {
    (
        any::<u64>(),
        any::<u32>(),
        prop::sample::select(vec![
            ListKind::Tools,
            ListKind::Prompts,
            ListKind::Resources,
            ListKind::ResourceTemplates,
        ]),
    )
        .prop_map(|(generation, offset, kind)| Cursor {
            generation,
            offset,
            kind,
        })
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

proptest! {
    #![proptest_config(config())]

    /// A cursor names the same position when the client sends it back, in either letter case.
    #[test]
    fn cursor_decodes_to_the_position_it_encodes(c in list_cursor()) {
        let text = cursor::encode(&c);
        prop_assert_eq!(cursor::decode(&text), Ok(c));
        prop_assert_eq!(cursor::decode(&text.to_ascii_uppercase()), Ok(c));
    }

    /// One bit flipped in any of the cursor's bytes and it is refused, never read as another
    /// position: every bit is tried.
    #[test]
    fn cursor_with_a_flipped_bit_in_its_bytes_is_refused(c in list_cursor()) {
        let bytes = hex_bytes(&cursor::encode(&c));
        for bit in 0..bytes.len() * 8 {
            let mut edited = bytes.clone();
            edited[bit / 8] ^= 1 << (bit % 8);
            let edited: String = edited.iter().map(|b| format!("{b:02x}")).collect();
            let decoded = cursor::decode(&edited);
            prop_assert!(decoded.is_err(), "bit {} flipped read as {:?}", bit, decoded);
        }
    }

    /// One bit flipped in the cursor's text is refused, unless all it did was change a hex
    /// letter's case (which names the same bytes): every bit is tried.
    #[test]
    fn cursor_with_a_flipped_bit_in_its_text_is_refused(c in list_cursor()) {
        let text = cursor::encode(&c);
        for bit in 0..text.len() * 8 {
            let mut bytes = text.clone().into_bytes();
            bytes[bit / 8] ^= 1 << (bit % 8);
            let Ok(edited) = String::from_utf8(bytes) else { continue };
            let decoded = cursor::decode(&edited);
            if edited.eq_ignore_ascii_case(&text) {
                prop_assert_eq!(decoded, Ok(c));
            } else {
                prop_assert!(decoded.is_err(), "bit {} flipped read as {:?}", bit, decoded);
            }
        }
    }
}
