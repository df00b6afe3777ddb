//! Server-Sent Events (`text/event-stream`): an incremental parser and the encoder.
//!
//! The parser follows the WHATWG HTML "event stream interpretation" rules, with one deliberate
//! difference: a block that set only an `id` (or `retry`, or `event`) is still reported. MCP
//! servers prime a stream with an id and empty data so a client can resume; a proxy relaying
//! events must see that id. Callers skip events whose `data` is empty if they only want messages.
//! Ids are reported per event (not carried over like the spec's "last event ID"): the caller
//! keeps the last one it saw.

use std::future::Future;
use std::io::Write as _;
use std::pin::{pin, Pin};
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use futures_lite::future::poll_fn;

use super::HttpError;

/// The UTF-8 byte order mark, which may open a stream and is then ignored.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id` field, if this event had one (may be empty: a reset).
    pub id: Option<String>,
    /// The `event` field (type), if any; absent means `message`.
    pub event: Option<String>,
    /// The data lines joined with `\n` (empty for a priming event).
    pub data: String,
    /// The `retry` field, in milliseconds, if a valid one was sent.
    pub retry: Option<u64>,
}

/// Fields collected since the last dispatch.
#[derive(Debug, Default)]
struct Pending {
    /// The event being built.
    event: SseEvent,
    /// Whether any field that makes the block worth reporting was seen.
    any: bool,
}

impl Pending {
    /// Bytes held by the event being built.
    fn size(&self) -> usize {
        let e = &self.event;
        e.data.len()
            + e.id.as_ref().map_or(0, String::len)
            + e.event.as_ref().map_or(0, String::len)
    }

    /// Applies one line (without its terminator); returns the event when the line was blank.
    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            if !std::mem::take(&mut self.any) {
                return None;
            }
            let mut event = std::mem::take(&mut self.event);
            // Every data line appended a '\n'; the spec drops the last one.
            if event.data.ends_with('\n') {
                event.data.pop();
            }
            return Some(event);
        }
        if line[0] == b':' {
            return None; // a comment, typically a keep-alive ping
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let text = || String::from_utf8_lossy(value);
        match field {
            b"data" => {
                self.event.data.push_str(&text());
                self.event.data.push('\n');
            }
            b"event" => self.event.event = Some(text().into_owned()),
            b"id" if !value.contains(&0) => self.event.id = Some(text().into_owned()),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Too many digits for u64 is as good as no retry at all.
                match text().parse() {
                    Ok(ms) => self.event.retry = Some(ms),
                    Err(_) => return None,
                }
            }
            _ => return None, // unknown fields are ignored
        }
        self.any = true;
        None
    }
}

/// Incremental `text/event-stream` parser: push bytes as they arrive, then take events.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes pushed but not yet split into lines; consumed up to `pos`.
    buf: Vec<u8>,
    /// Start of the unconsumed part of `buf`.
    pos: usize,
    /// The last line ended in CR at the end of the input: a following LF belongs to it.
    skip_lf: bool,
    /// Whether the stream's first bytes were checked for a BOM.
    bom_checked: bool,
    /// Largest event (pending fields plus an unfinished line) before giving up, in bytes.
    max_event: usize,
    /// The event being built.
    pending: Pending,
    /// Set once the bound was exceeded; the stream is not trusted after that.
    failed: bool,
}

impl SseParser {
    /// A parser refusing any single event larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            skip_lf: false,
            bom_checked: false,
            max_event: max_event_bytes,
            pending: Pending::default(),
            failed: false,
        }
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop consumed bytes before growing, so the buffer stays about one event long.
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, Ok(None) when more bytes are needed; Err once an event is too big.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, HttpError> {
        let too_big = HttpError::SseEventTooLarge {
            limit: self.max_event,
        };
        if self.failed {
            return Err(too_big);
        }
        if !self.bom_checked {
            let rest = &self.buf[self.pos..];
            if rest.len() < BOM.len() && BOM.starts_with(rest) {
                return Ok(None); // could still become a BOM
            }
            if rest.starts_with(BOM) {
                self.pos += BOM.len();
            }
            self.bom_checked = true;
        }
        loop {
            if self.skip_lf && self.pos < self.buf.len() {
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                }
                self.skip_lf = false;
            }
            let rest = &self.buf[self.pos..];
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if rest.len() + self.pending.size() > self.max_event {
                    self.failed = true;
                    return Err(too_big);
                }
                return Ok(None);
            };
            let start = self.pos;
            self.pos += end + 1;
            if self.buf[start + end] == b'\r' {
                // CRLF counts as one line end; the LF may not have arrived yet.
                match self.buf.get(self.pos) {
                    Some(b'\n') => self.pos += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            let event = self.pending.line(&self.buf[start..start + end]);
            if self.pending.size() > self.max_event {
                self.failed = true;
                return Err(too_big);
            }
            if event.is_some() {
                return Ok(event);
            }
        }
    }
}

/// Encodes one `message` event: `id: ..` if given, one `data:` line per line of `data`, blank line.
pub fn encode_event(id: Option<&str>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + id.map_or(0, str::len) + 16);
    if let Some(id) = id {
        push_id(&mut out, id);
    }
    let mut rest = data;
    loop {
        // Any of CRLF, LF or CR ends a line on the wire, so each becomes its own data line.
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        let line = &rest[..end.unwrap_or(rest.len())];
        out.extend_from_slice(if line.is_empty() { b"data:" } else { b"data: " });
        out.extend_from_slice(line);
        out.push(b'\n');
        let Some(end) = end else { break };
        let skip = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.push(b'\n');
    Bytes::from(out)
}

/// Encodes a priming event: an id with empty data, which a client may resume from.
pub fn encode_priming(id: &str) -> Bytes {
    let mut out = Vec::with_capacity(id.len() + 12);
    push_id(&mut out, id);
    out.extend_from_slice(b"data:\n\n");
    Bytes::from(out)
}

/// Encodes a `retry` field telling the client how long to wait before reconnecting.
pub fn encode_retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// Something besides the clock that can end a stream: a credential a reload no longer accepts.
pub trait Revocation {
    /// Whether the stream must end now; called before each item is taken, so it must be cheap
    /// (an atomic load) while nothing changed.
    fn revoked(&mut self) -> bool;
    /// Wakes `waker` once `revoked` may answer differently; called each time the stream waits.
    fn wake_on_change(&mut self, waker: &Waker);
}

/// Why a [`Deadline`] ended its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The instant passed: the credential expired.
    Expired,
    /// The [`Revocation`] said so: a reload stopped accepting the credential.
    Revoked,
}

/// The instant a stream must end (its credential's expiry, see `crate::auth::stream_end`),
/// watched with one timer for the whole stream rather than one per event, and optionally a
/// [`Revocation`] that can end it sooner.
///
/// The timer is registered with the reactor the first time the stream waits, and again only
/// if a different task polls it; while events flow, each costs one clock read.
pub struct Deadline {
    at: Option<(Instant, glommio::timer::Timer)>,
    /// The waker the timer was registered with.
    armed: Option<Waker>,
    revocation: Option<Box<dyn Revocation>>,
    /// Set when `within` ended the stream, so the caller can say why (metrics).
    ended: Option<Ended>,
}

impl Deadline {
    /// A deadline at `at`; `None` never ends anything (and arms no timer).
    pub fn new(at: Option<Instant>) -> Deadline {
        Deadline {
            at: at.map(|at| {
                let timer =
                    glommio::timer::Timer::new(at.saturating_duration_since(Instant::now()));
                (at, timer)
            }),
            armed: None,
            revocation: None,
            ended: None,
        }
    }

    /// The same deadline, also ended by `revocation` when it says so.
    pub fn revoked_by(mut self, revocation: Option<Box<dyn Revocation>>) -> Deadline {
        self.revocation = revocation;
        self
    }

    /// Why `within` ended the stream; `None` while it has not.
    pub fn ended(&self) -> Option<Ended> {
        self.ended
    }

    /// The output of `next`, or `None` once the deadline has passed or the stream is revoked
    /// (then [`Deadline::ended`] says which). Both are looked at before `next` is polled, so an
    /// item is never taken from the source and then dropped.
    pub async fn within<F: Future>(&mut self, next: F) -> Option<F::Output> {
        let Deadline {
            at,
            armed,
            revocation,
            ended,
        } = self;
        if at.is_none() && revocation.is_none() {
            return Some(next.await);
        }
        let mut next = pin!(next);
        poll_fn(|cx| {
            if at.as_ref().is_some_and(|(at, _)| Instant::now() >= *at) {
                *ended = Some(Ended::Expired);
                return Poll::Ready(None);
            }
            if revocation.as_mut().is_some_and(|r| r.revoked()) {
                *ended = Some(Ended::Revoked);
                return Poll::Ready(None);
            }
            if let Poll::Ready(v) = next.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            // Polling the timer re-registers it with the reactor; once per waker is enough.
            if let Some((_, timer)) = at.as_mut() {
                if !armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    if Pin::new(&mut *timer).poll(cx).is_ready() {
                        *ended = Some(Ended::Expired);
                        return Poll::Ready(None);
                    }
                    *armed = Some(cx.waker().clone());
                }
            }
            if let Some(r) = revocation.as_mut() {
                r.wake_on_change(cx.waker());
            }
            Poll::Pending
        })
        .await
    }
}

/// Appends `id: ..\n`, dropping CR, LF and NUL (they would end the line or void the id).
fn push_id(out: &mut Vec<u8>, id: &str) {
    out.extend_from_slice(b"id: ");
    out.extend(id.bytes().filter(|&b| b != b'\r' && b != b'\n' && b != 0));
    // Writing to a Vec cannot fail.
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` pushed in the given pieces.
    fn parse(pieces: &[&[u8]]) -> Result<Vec<SseEvent>, HttpError> {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        for piece in pieces {
            p.push(piece);
            while let Some(e) = p.next_event()? {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn ev(id: Option<&str>, event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(Into::into),
            event: event.map(Into::into),
            data: data.into(),
            retry: None,
        }
    }

    #[test]
    fn every_split_point_and_line_ending() {
        for nl in ["\n", "\r\n", "\r"] {
            let text = [
                "\u{feff}: ping",
                "id: 1",
                "event: message",
                "data: {\"a\":1}",
                "data:  two",
                "",
                "data",
                "",
                "",
            ]
            .join(nl);
            let want = vec![
                ev(Some("1"), Some("message"), "{\"a\":1}\n two"),
                ev(None, None, ""),
            ];
            let bytes = text.as_bytes();
            assert_eq!(parse(&[bytes]).unwrap(), want, "{nl:?}");
            for i in 0..bytes.len() {
                assert_eq!(
                    parse(&[&bytes[..i], &bytes[i..]]).unwrap(),
                    want,
                    "{nl:?} split at {i}"
                );
            }
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(parse(&singles).unwrap(), want, "{nl:?} byte by byte");
        }
    }

    #[test]
    fn cr_then_lf_in_next_piece_is_one_line_end() {
        assert_eq!(
            parse(&[b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]).unwrap(),
            [ev(None, None, "a"), ev(None, None, "b")]
        );
    }

    #[test]
    fn priming_and_field_rules() {
        let got = parse(&[b"id: 42\ndata:\n\nid: 43\n\nretry: 3000\n\nretry: 3s\nfoo: bar\n:comment\n\nid: a\0b\ndata: x\n\n"]).unwrap();
        assert_eq!(got[0], ev(Some("42"), None, ""));
        assert_eq!(got[1], ev(Some("43"), None, ""));
        assert_eq!(
            got[2],
            SseEvent {
                retry: Some(3000),
                ..Default::default()
            }
        );
        // Invalid retry, unknown field and comment make no event; an id with NUL is ignored.
        assert_eq!(got[3], ev(None, None, "x"));
        assert_eq!(got.len(), 4);
        // An unterminated event is never reported.
        assert!(parse(&[b"data: half\n"]).unwrap().is_empty());
    }

    #[test]
    fn bounded() {
        let mut p = SseParser::new(16);
        p.push(&[b'a'; 40]);
        assert!(matches!(
            p.next_event(),
            Err(HttpError::SseEventTooLarge { limit: 16 })
        ));
        assert!(p.next_event().is_err(), "stays failed");
        let mut p = SseParser::new(16);
        p.push(b"data: 0123456789\ndata: 0123456789\n");
        assert!(p.next_event().is_err());
        let mut p = SseParser::new(16);
        for _ in 0..100 {
            p.push(b"data: 0123\n\n");
            assert_eq!(p.next_event().unwrap().unwrap().data, "0123");
        }
    }

    #[test]
    fn encode_round_trip() {
        assert_eq!(
            &encode_event(Some("7"), b"{\"x\":1}")[..],
            b"id: 7\ndata: {\"x\":1}\n\n"
        );
        assert_eq!(
            &encode_event(None, b"a\r\nb\rc\n")[..],
            b"data: a\ndata: b\ndata: c\ndata:\n\n"
        );
        assert_eq!(&encode_priming("s-1")[..], b"id: s-1\ndata:\n\n");
        assert_eq!(&encode_retry(500)[..], b"retry: 500\n\n");
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode_priming("p\r\n"));
        wire.extend_from_slice(&encode_event(Some("1"), b"line1\nline2"));
        wire.extend_from_slice(&encode_event(None, b""));
        wire.extend_from_slice(&encode_retry(10));
        let got = parse(&[&wire]).unwrap();
        assert_eq!(got[0], ev(Some("p"), None, ""));
        assert_eq!(got[1], ev(Some("1"), None, "line1\nline2"));
        assert_eq!(got[2], ev(None, None, ""));
        assert_eq!(got[3].retry, Some(10));
    }

    #[test]
    fn without_a_deadline_everything_passes() {
        let mut d = Deadline::new(None);
        let got = futures_lite::future::block_on(d.within(async { 7 }));
        assert_eq!(got, Some(7));
        assert_eq!(d.ended(), None);
    }

    #[test]
    fn a_passed_deadline_takes_nothing_from_the_source() {
        super::super::run_glommio(|| async {
            let mut d = Deadline::new(Some(Instant::now()));
            let polled = std::cell::Cell::new(false);
            let got = d
                .within(async {
                    polled.set(true);
                    1
                })
                .await;
            assert_eq!(got, None);
            assert_eq!(d.ended(), Some(Ended::Expired));
            assert!(
                !polled.get(),
                "an item taken after the deadline would be lost"
            );
        });
    }

    #[test]
    fn events_flow_until_the_deadline_ends_an_idle_stream() {
        super::super::run_glommio(|| async {
            let (tx, rx) = glommio::channels::local_channel::new_unbounded::<u32>();
            let producer = glommio::spawn_local(async move {
                for i in 0..3 {
                    glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                    if tx.try_send(i).is_err() {
                        return;
                    }
                }
                // Then the source stays open and silent, like an idle GET stream.
                futures_lite::future::pending::<()>().await;
                drop(tx);
            })
            .detach();
            let at = Instant::now() + std::time::Duration::from_millis(200);
            let mut d = Deadline::new(Some(at));
            let read = async { Ok(read_until_end(&mut d, &rx).await) };
            // Only the deadline can end this stream; the outer timeout catches one that fails.
            let got = glommio::timer::timeout(std::time::Duration::from_secs(10), read)
                .await
                .expect("the deadline ended the idle stream");
            assert_eq!(
                got,
                vec![0, 1, 2],
                "events before the deadline are delivered"
            );
            assert!(
                Instant::now() >= at,
                "the stream ended by the timer, not early"
            );
            assert_eq!(d.ended(), Some(Ended::Expired), "ended by the clock");
            producer.cancel();
        });
    }

    /// Every item `d` lets through from `rx`, until `d` (or the channel) ends the stream.
    async fn read_until_end(
        d: &mut Deadline,
        rx: &glommio::channels::local_channel::LocalReceiver<u32>,
    ) -> Vec<u32> {
        let mut got = Vec::new();
        while let Some(item) = d.within(rx.recv()).await.flatten() {
            got.push(item);
        }
        got
    }

    /// A revocation flipped by the test, waking the stream like the auth watcher does.
    struct Flag(std::rc::Rc<std::cell::RefCell<(bool, Option<Waker>)>>);

    impl Revocation for Flag {
        fn revoked(&mut self) -> bool {
            self.0.borrow().0
        }
        fn wake_on_change(&mut self, waker: &Waker) {
            self.0.borrow_mut().1 = Some(waker.clone());
        }
    }

    #[test]
    fn events_flow_until_a_revocation_ends_the_idle_stream() {
        super::super::run_glommio(|| async {
            let (tx, rx) = glommio::channels::local_channel::new_unbounded::<u32>();
            let flag = std::rc::Rc::new(std::cell::RefCell::new((false, None::<Waker>)));
            let mut d = Deadline::new(None).revoked_by(Some(Box::new(Flag(flag.clone()))));
            let revoker = {
                let flag = flag.clone();
                glommio::spawn_local(async move {
                    for i in 0..3 {
                        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                        if tx.try_send(i).is_err() {
                            return;
                        }
                    }
                    // The source stays open and silent; only the revocation can end the stream.
                    glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                    let waker = {
                        let mut f = flag.borrow_mut();
                        f.0 = true;
                        f.1.take()
                    };
                    waker.expect("the idle stream asked to be woken").wake();
                    futures_lite::future::pending::<()>().await;
                    drop(tx);
                })
                .detach()
            };
            let read = async { Ok(read_until_end(&mut d, &rx).await) };
            let got = glommio::timer::timeout(std::time::Duration::from_secs(10), read)
                .await
                .expect("the revocation ended the idle stream");
            assert_eq!(
                got,
                vec![0, 1, 2],
                "events before the revocation are delivered"
            );
            assert_eq!(d.ended(), Some(Ended::Revoked), "ended by the revocation");
            revoker.cancel();
        });
    }
}
