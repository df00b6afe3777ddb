//! Reading and rewriting JSON-RPC messages in their bytes, without parsing them into a tree.
//!
//! A response on its way back only needs its id swapped from the proxy's to the client's; a
//! request on its way out only needs its id swapped and, for the methods that name a tool, prompt
//! or resource, that name mapped to the server's own. A scan of the top-level object (and of
//! `params`) finds those members; nested values (a result or arguments, however large) are
//! skipped, string- and bracket-aware, and copied as they came. Anything unusual (escaped keys or
//! values, repeated members, a top level that is not one object) gets `None`, and the caller takes
//! the full parse. The bracket-aware skip does not check the grammar inside those values, so a
//! message taken this way is also checked whole by simd-json's tape builder (validation without a
//! tree), and on that tape for a member name repeated in any object: a malformed message, or one
//! with a repeated name anywhere, takes the full parse too, which refuses it.

use std::cell::RefCell;
use std::io::Write;
use std::ops::Range;

use super::jsonrpc::Id;

/// The top-level members of a message that decide how it is relayed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TopLevel {
    /// Byte span of the `id` value.
    pub id: Option<Range<usize>>,
    /// A `method` member is present (a request or notification).
    pub method: bool,
    /// A `result` or `error` member is present.
    pub outcome: bool,
}

/// The answer to the proxy's request `up` with the client's id `down` spliced in; `None` when
/// `msg` is not a plain, well-formed response to `up`.
pub fn answer(msg: &[u8], up: &Id, down: &Id) -> Option<Vec<u8>> {
    let top = top_level(msg)?;
    let span = top.id.filter(|_| top.outcome && !top.method)?;
    (id_is(&msg[span.clone()], up) && well_formed(msg)).then(|| replace_id(msg, span, down))
}

/// Whether `msg` is one well-formed JSON document (grammar and UTF-8) in which no object names a
/// member twice, checked without building a tree: a repeated name, even deep in values this
/// module copies as they came, would mean one thing to the proxy and another to the peer that
/// keeps the last (the full parse refuses it; see `duplicate_keys`). simd-json unescapes strings
/// in place, so it works on a copy kept per thread.
pub fn well_formed(msg: &[u8]) -> bool {
    struct Scratch {
        input: Vec<u8>,
        buffers: simd_json::Buffers,
        tape: Option<simd_json::Tape<'static>>,
    }
    // A shard validates answers one at a time; the scratch is reused so the common case allocates
    // nothing, and dropped after an outsized answer so one large result does not pin its memory.
    const KEEP_AT_MOST: usize = 1 << 20;
    thread_local! {
        static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
            input: Vec::new(),
            buffers: simd_json::Buffers::default(),
            tape: None,
        });
    }
    SCRATCH.with_borrow_mut(|s| {
        s.input.clear();
        s.input.extend_from_slice(msg);
        s.input.resize(msg.len() + simd_json::INPUT_PADDING, 0);
        let mut tape = s.tape.take().unwrap_or_else(simd_json::Tape::null).reset();
        let ok = simd_json::fill_tape_padded(&mut s.input, msg.len(), &mut s.buffers, &mut tape)
            .is_ok()
            && super::duplicate_keys::in_tape(&tape.0).is_none();
        s.tape = Some(tape.reset());
        if s.input.capacity() > KEEP_AT_MOST {
            *s = Scratch {
                input: Vec::new(),
                buffers: simd_json::Buffers::default(),
                tape: None,
            };
        }
        ok
    })
}

/// Scans the top-level object of `msg`; `None` when it is not a plain object.
pub fn top_level(msg: &[u8]) -> Option<TopLevel> {
    let mut top = TopLevel::default();
    whole_object(msg, usize::MAX, |scan, key| {
        let value = scan.value()?;
        let seen = match key {
            b"id" => top.id.replace(value).is_some(),
            b"method" => std::mem::replace(&mut top.method, true),
            // Both present is malformed; the full parse decides what that means.
            b"result" | b"error" => std::mem::replace(&mut top.outcome, true),
            _ => false,
        };
        (!seen).then_some(())
    })?;
    Some(top)
}

/// A request read from its bytes: what routing needs, and where to rewrite it.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The client's id.
    pub id: Id,
    /// The method, as sent (it had no escapes).
    pub method: &'a str,
    id_span: Range<usize>,
    /// `params.name` and `params.uri`, the members that name what a request is for.
    name: Option<Range<usize>>,
    uri: Option<Range<usize>>,
}

/// Reads a plain request: `"jsonrpc":"2.0"`, an integer or escape-free string id, an escape-free
/// method that `taken` accepts, object params, nested no deeper than `max_depth`, and
/// well-formed as a whole. `None` for anything else (notifications, responses, other methods,
/// the unusual, the invalid): the full parse then decides, and gives the error where there is
/// one. The method is looked at before the whole-message check, so a message the caller would
/// not take anyway does not pay for it ahead of its full parse.
pub fn request(msg: &[u8], max_depth: usize, taken: impl Fn(&str) -> bool) -> Option<Request<'_>> {
    let (mut version, mut id, mut method, mut params) = (None, None, None, false);
    let (mut name, mut uri) = (None, None);
    whole_object(msg, max_depth, |scan, key| {
        let slot = match key {
            // Params are read in the same pass, for the members routing looks up.
            b"params" if !std::mem::replace(&mut params, true) => {
                return scan.object(|scan, key| {
                    let value = scan.value()?;
                    let slot = match key {
                        b"name" => &mut name,
                        b"uri" => &mut uri,
                        _ => return Some(()),
                    };
                    slot.replace(value).is_none().then_some(())
                });
            }
            b"jsonrpc" => &mut version,
            b"id" => &mut id,
            b"method" => &mut method,
            b"params" | b"result" | b"error" => return None,
            _ => {
                scan.value()?;
                return Some(());
            }
        };
        let value = scan.value()?;
        slot.replace(value).is_none().then_some(())
    })?;
    if version.map(|v| &msg[v]) != Some(&br#""2.0""#[..]) {
        return None;
    }
    let id_span = id?;
    let id = plain_id(&msg[id_span.clone()])?;
    let method = plain_str(&msg[method?]).filter(|m| taken(m))?;
    well_formed(msg).then_some(Request {
        id,
        method,
        id_span,
        name,
        uri,
    })
}

impl<'a> Request<'a> {
    /// The span and text of `params.name` (`uri` for `"uri"`), when there once as an
    /// escape-free string.
    pub fn param_str(&self, msg: &'a [u8], field: &str) -> Option<(Range<usize>, &'a str)> {
        let span = match field {
            "name" => self.name.clone(),
            "uri" => self.uri.clone(),
            _ => None,
        }?;
        let text = plain_str(&msg[span.clone()])?;
        Some((span, text))
    }

    /// `msg` with its id replaced by `id` and the string at `span` (from [`Request::param_str`])
    /// by `text`.
    pub fn rewrite(&self, msg: &[u8], id: &Id, span: Range<usize>, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + text.len() + 16);
        let (first, second) = if self.id_span.start < span.start {
            (self.id_span.clone(), span)
        } else {
            (span, self.id_span.clone())
        };
        let write = |out: &mut Vec<u8>, at: &Range<usize>| {
            if *at == self.id_span {
                id.write_json(out);
            } else {
                super::jsonrpc::write_json_string(out, text);
            }
        };
        out.extend_from_slice(&msg[..first.start]);
        write(&mut out, &first);
        out.extend_from_slice(&msg[first.end..second.start]);
        write(&mut out, &second);
        out.extend_from_slice(&msg[second.end..]);
        out
    }
}

/// An id written as an integer that fits an i64, or as a string without escapes.
fn plain_id(text: &[u8]) -> Option<Id> {
    if text.first() == Some(&b'"') {
        return plain_str(text).map(|s| Id::Str(s.to_owned()));
    }
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok().map(Id::Num)
}

/// The text of a JSON string without escapes (so its bytes are its value).
fn plain_str(text: &[u8]) -> Option<&str> {
    let inner = text.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') {
        return None;
    }
    std::str::from_utf8(inner).ok()
}

/// Scans `msg` as one object, nested no deeper than `max_depth`, and nothing else around it;
/// `member` reads each member's value (or refuses the member).
fn whole_object<'a>(
    msg: &'a [u8],
    max_depth: usize,
    member: impl FnMut(&mut Scan<'a>, &'a [u8]) -> Option<()>,
) -> Option<()> {
    let mut scan = Scan {
        b: msg,
        at: 0,
        room: max_depth,
    };
    scan.space();
    scan.object(member)?;
    scan.space();
    (scan.at == msg.len()).then_some(())
}

/// `msg` with the value at `span` replaced by `id`.
pub fn replace_id(msg: &[u8], span: Range<usize>, id: &Id) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 16);
    out.extend_from_slice(&msg[..span.start]);
    id.write_json(&mut out);
    out.extend_from_slice(&msg[span.end..]);
    out
}

/// Whether `text` is exactly how `id` is written (integers as digits, strings without escapes).
pub fn id_is(text: &[u8], id: &Id) -> bool {
    match id {
        Id::Num(n) => {
            // 20 bytes hold any i64; writing into a stack buffer keeps the hot path allocation-free.
            let mut buf = [0u8; 20];
            let mut rest = &mut buf[..];
            write!(rest, "{n}").is_ok() && {
                let written = 20 - rest.len();
                text == &buf[..written]
            }
        }
        Id::Str(s) => {
            text.len() == s.len() + 2
                && text.first() == Some(&b'"')
                && text.last() == Some(&b'"')
                && &text[1..text.len() - 1] == s.as_bytes()
                && !s.bytes().any(|c| c == b'\\' || c == b'"' || c < 0x20)
        }
    }
}

struct Scan<'a> {
    b: &'a [u8],
    at: usize,
    /// How many more levels of objects and arrays may open below the current position.
    room: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// An object's members: `member` gets each name, reads its value (or refuses the member).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        self.room = self.room.checked_sub(1)?;
        self.space();
        if self.peek()? == b'}' {
            self.at += 1;
            self.room += 1;
            return Some(());
        }
        loop {
            let key = self.key()?;
            self.space();
            self.expect(b':')?;
            self.space();
            member(self, key)?;
            self.space();
            match self.next()? {
                b',' => self.space(),
                b'}' => {
                    self.room += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A member name; names with escapes are left to the full parse.
    fn key(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.at;
        loop {
            match self.next()? {
                b'"' => return Some(&self.b[start..self.at - 1]),
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => {}
            }
        }
    }

    /// Skips one value and returns its span.
    fn value(&mut self) -> Option<Range<usize>> {
        let start = self.at;
        match self.peek()? {
            b'"' => {
                self.at += 1;
                self.string_tail()?;
            }
            b'{' | b'[' => self.nested()?,
            _ => {
                // A number or literal runs to the next delimiter; it must not be empty.
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    let c = self.next()?;
                    if !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.')) {
                        return None;
                    }
                }
                if self.at == start {
                    return None;
                }
            }
        }
        Some(start..self.at)
    }

    /// After an opening quote: up to and including the closing one.
    fn string_tail(&mut self) -> Option<()> {
        loop {
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => {
                    self.next()?;
                }
                c if c < 0x20 => return None,
                _ => {}
            }
        }
    }

    /// An object or array, brackets balanced and matched, strings skipped whole.
    fn nested(&mut self) -> Option<()> {
        // Depth is bounded by the message size; a Vec keeps the scan iterative.
        let mut open: Vec<u8> = Vec::new();
        loop {
            match self.next()? {
                c @ (b'{' | b'[') => {
                    if open.len() == self.room {
                        return None;
                    }
                    open.push(c)
                }
                c @ (b'}' | b']') => {
                    let opener = if c == b'}' { b'{' } else { b'[' };
                    if open.pop() != Some(opener) {
                        return None;
                    }
                }
                b'"' => self.string_tail()?,
                _ => {}
            }
            if open.is_empty() {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(text: &str) -> Option<TopLevel> {
        top_level(text.as_bytes())
    }

    #[test]
    fn finds_the_id_of_a_response_past_a_nested_result() {
        let text = r#" {"jsonrpc":"2.0","result":{"content":[{"type":"text","text":"a \"}]{ b"}],"id":5},"id":17}"#;
        let t = top(text).expect("plain object");
        assert!(t.outcome && !t.method);
        assert_eq!(&text[t.id.expect("id")], "17");
    }

    #[test]
    fn tells_requests_and_notifications_from_responses() {
        let t = top(r#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#).expect("object");
        assert!(t.method && !t.outcome);
        let t = top(r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#)
            .expect("object");
        assert!(t.method && t.id.is_none());
    }

    #[test]
    fn leaves_the_unusual_to_the_full_parse() {
        for text in [
            r#"[{"id":1}]"#,
            r#"{"id":1,"id":2,"result":{}}"#,
            r#"{"i\u0064":1,"result":{}}"#,
            r#"{"id":1,"result":{}} trailing"#,
            r#"{"id":1,"result":{]}"#,
            r#"{"id":1,"result":{"#,
            r#"{"id":,"result":{}}"#,
            r#"{"id":1 "result":{}}"#,
            r#"{"id":1,"result":{},"error":{}}"#,
            "{\"id\":1,\"result\":\"a\nb\"}",
        ] {
            assert_eq!(top(text), None, "{text}");
        }
    }

    #[test]
    fn replaces_the_id_and_keeps_every_other_byte() {
        let text = r#"{"result":{"x":[1,2,{"id":3}]}, "id" : 42 ,"jsonrpc":"2.0"}"#;
        let span = top(text).and_then(|t| t.id).expect("id");
        assert!(id_is(&text.as_bytes()[span.clone()], &Id::Num(42)));
        let out = replace_id(text.as_bytes(), span, &Id::Str("client-7".into()));
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            r#"{"result":{"x":[1,2,{"id":3}]}, "id" : "client-7" ,"jsonrpc":"2.0"}"#
        );
    }

    #[test]
    fn answers_only_well_formed_responses_to_the_request() {
        let (up, down) = (Id::Num(3), Id::Str("c".into()));
        let ok =
            br#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"\u00e9"}]}}"#;
        assert_eq!(
            answer(ok, &up, &down).as_deref(),
            Some(&br#"{"jsonrpc":"2.0","id":"c","result":{"content":[{"type":"text","text":"\u00e9"}]}}"#[..])
        );
        assert_eq!(
            answer(ok, &Id::Num(4), &down),
            None,
            "another request's answer"
        );
        for broken in [
            &br#"{"jsonrpc":"2.0","id":3,"result":{"content" [1]}}"#[..],
            br#"{"jsonrpc":"2.0","id":3,"result":{"content":[1,,2]}}"#,
            br#"{"jsonrpc":"2.0","id":3,"result":{"a":tru}}"#,
            br#"{"jsonrpc":"2.0","id":3,"result":{"a":"\q"}}"#,
            b"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"a\":\"\xff\"}}",
            br#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":3,"result":{"isError":false,"isError":true}}"#,
            br#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"text":"a","t\u0065xt":"b"}]}}"#,
        ] {
            assert_eq!(
                answer(broken, &up, &down),
                None,
                "{}",
                String::from_utf8_lossy(broken)
            );
        }
    }

    #[test]
    fn matches_ids_only_as_the_proxy_writes_them() {
        assert!(id_is(b"0", &Id::Num(0)));
        assert!(id_is(b"-9223372036854775808", &Id::Num(i64::MIN)));
        assert!(!id_is(b"42.0", &Id::Num(42)));
        assert!(!id_is(b"\"42\"", &Id::Num(42)));
        assert!(id_is(b"\"p-1\"", &Id::Str("p-1".into())));
        assert!(!id_is(b"\"p\\u002d1\"", &Id::Str("p-1".into())));
    }

    fn peek(text: &str) -> Option<Request<'_>> {
        request(text.as_bytes(), 64, |_| true)
    }

    #[test]
    fn reads_a_plain_request_and_rewrites_its_id_and_name() {
        let text = r#"{"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"name":"not this","x":[1,{"name":2}]},"name":"up__echo"},"id":7}"#;
        let r = peek(text).expect("plain request");
        assert_eq!((r.id.clone(), r.method), (Id::Num(7), "tools/call"));
        let (span, name) = r.param_str(text.as_bytes(), "name").expect("params.name");
        assert_eq!(name, "up__echo");
        let out = r.rewrite(text.as_bytes(), &Id::Str("p-1".into()), span, "ech\"o");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"name":"not this","x":[1,{"name":2}]},"name":"ech\"o"},"id":"p-1"}"#
        );
        // The id may come before the name too; every other byte is kept as sent.
        let text =
            r#"{ "id" : "a" , "jsonrpc":"2.0", "method":"prompts/get","params":{"name":"p"} }"#;
        let r = peek(text).expect("plain request");
        assert_eq!(r.id, Id::Str("a".into()));
        let (span, _) = r.param_str(text.as_bytes(), "name").expect("params.name");
        let out = r.rewrite(text.as_bytes(), &Id::Num(-3), span, "q");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            r#"{ "id" : -3 , "jsonrpc":"2.0", "method":"prompts/get","params":{"name":"q"} }"#
        );
    }

    #[test]
    fn leaves_other_requests_and_the_invalid_to_the_full_parse() {
        for text in [
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":99999999999999999999,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":"a\u0062","method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"to\u006fls/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":tru}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":[[[[]]]]}}"#,
            r#"{"jsonrpc":"2.0","id":01,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":{"b":1,"b":2}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":{"b":1,"\u0062":2}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":1},"x":[{"k":1,"k":1}]}"#,
        ] {
            assert_eq!(request(text.as_bytes(), 3, |_| true), None, "{text}");
        }
        let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        assert!(request(ping, 3, |_| true).is_some());
        assert_eq!(
            request(ping, 3, |m| m == "tools/call"),
            None,
            "a method not taken"
        );
    }

    #[test]
    fn finds_a_parameter_only_when_plain_and_single() {
        let name = |text: &'static str| {
            let r = peek(text)?;
            r.param_str(text.as_bytes(), "name")
                .map(|(_, n)| n.to_owned())
        };
        assert_eq!(
            name(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}"#),
            Some("a".into())
        );
        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\u0062"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}"#,
        ] {
            assert_eq!(name(text), None, "{text}");
        }
    }
}
