//! A session's outgoing SSE streams, kept for resumption.
//!
//! Every stream (the standalone GET stream and each POST's stream) is a numbered buffer of
//! messages. Event ids are `{stream}-{seq}`, so a `Last-Event-ID` names both the stream to
//! resume and where. A reader follows a stream from a position; a newer reader of the same
//! stream displaces the older one, so each message goes out on exactly one connection.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

pub use crate::metrics::Closed;

/// The stream of server-initiated messages that a GET opens.
pub const STANDALONE: u64 = 0;
/// Messages kept per stream for a client that reconnects.
const KEEP_EVENTS: usize = 512;
/// Finished POST streams kept for resumption.
const KEEP_FINISHED: usize = 32;

#[derive(Default)]
struct Buffer {
    events: VecDeque<(u64, Bytes)>,
    next_seq: u64,
    closed: bool,
    /// Highest sequence a reader has taken, so a fresh GET starts after what was delivered.
    delivered: u64,
    epoch: u64,
    /// The upstream ended the stream early and will pick it up again (SEP-1699 polling): the
    /// readers whose claim is at most `.0` end once they have caught up, telling the client to
    /// reconnect after `.1` milliseconds. A newer claim (the client reconnecting) lifts it.
    paused: Option<(u64, u64)>,
    /// Readers, and whoever waits for the pause to be lifted.
    wakers: Vec<Waker>,
}

impl Buffer {
    fn wake(&mut self) {
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }
}

#[derive(Default)]
struct Inner {
    streams: HashMap<u64, Buffer>,
    next_stream: u64,
    finished: VecDeque<u64>,
    /// Why the session ended, once it has.
    ended: Option<Closed>,
}

impl Inner {
    /// Changes `stream`'s buffer with `change` and wakes whoever waits on it, so a reader or
    /// a waiter for the pause sees the change; nothing when the stream is gone.
    fn with_stream(&mut self, stream: u64, change: impl FnOnce(&mut Buffer)) {
        if let Some(buf) = self.streams.get_mut(&stream) {
            change(buf);
            buf.wake();
        }
    }
}

/// All SSE streams of one session.
#[derive(Default)]
pub struct EventLog {
    inner: RefCell<Inner>,
}

/// A position in a session's streams, parsed from `Last-Event-ID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The stream.
    pub stream: u64,
    /// The last sequence number the client saw.
    pub seq: u64,
}

impl Position {
    /// Parses an event id the proxy issued; `None` for anything else.
    pub fn parse(id: &str) -> Option<Position> {
        let (s, q) = id.split_once('-')?;
        Some(Position {
            stream: s.parse().ok()?,
            seq: q.parse().ok()?,
        })
    }
}

/// What a reader gets next.
pub enum Next {
    /// A message with its sequence number.
    Event(u64, Bytes),
    /// The stream is over, for this reason.
    End(Closed),
}

impl EventLog {
    /// A log with the standalone stream open.
    pub fn new() -> Self {
        let log = EventLog::default();
        {
            let mut inner = log.inner.borrow_mut();
            inner.streams.insert(
                STANDALONE,
                Buffer {
                    next_seq: 1,
                    ..Buffer::default()
                },
            );
            inner.next_stream = STANDALONE + 1;
        }
        log
    }

    /// Opens a new stream (for a POST) and returns its number.
    pub fn open(&self) -> u64 {
        let mut inner = self.inner.borrow_mut();
        let id = inner.next_stream;
        inner.next_stream += 1;
        inner.streams.insert(
            id,
            Buffer {
                next_seq: 1,
                ..Buffer::default()
            },
        );
        id
    }

    /// True when `stream` is known (live or recently finished).
    pub fn contains(&self, stream: u64) -> bool {
        self.inner.borrow().streams.contains_key(&stream)
    }

    /// Appends a message to a stream; dropped if the stream is gone.
    pub fn push(&self, stream: u64, message: Bytes) {
        self.inner.borrow_mut().with_stream(stream, |buf| {
            let seq = buf.next_seq;
            buf.next_seq += 1;
            buf.events.push_back((seq, message));
            if buf.events.len() > KEEP_EVENTS {
                buf.events.pop_front();
            }
        });
    }

    /// Marks a stream finished: readers drain it and end.
    pub fn finish(&self, stream: u64) {
        let mut inner = self.inner.borrow_mut();
        inner.with_stream(stream, |buf| buf.closed = true);
        if stream != STANDALONE {
            inner.finished.push_back(stream);
            while inner.finished.len() > KEEP_FINISHED {
                if let Some(old) = inner.finished.pop_front() {
                    inner.streams.remove(&old);
                }
            }
        }
    }

    /// Ends every stream: the session is gone, for `why`.
    pub fn end(&self, why: Closed) {
        let mut inner = self.inner.borrow_mut();
        inner.ended = Some(why);
        // Not marked closed: readers tell a stream that had finished from one the end cut.
        for buf in inner.streams.values_mut() {
            buf.wake();
        }
    }

    /// Makes the caller the only reader of `stream`; returns its claim. A claim newer than a
    /// pause (a client reconnecting) lifts it.
    pub fn claim(&self, stream: u64) -> u64 {
        let mut inner = self.inner.borrow_mut();
        match inner.streams.get_mut(&stream) {
            Some(buf) => {
                buf.epoch += 1;
                if buf.paused.is_some_and(|(until, _)| buf.epoch > until) {
                    buf.paused = None;
                }
                buf.wake();
                buf.epoch
            }
            None => 0,
        }
    }

    /// The upstream closed `stream` before its end and asks for a reconnect after
    /// `retry_ms`: its current reader (or the first, if none has claimed it yet) ends once
    /// it has caught up, so the client reconnects as it would to the server itself.
    pub fn pause(&self, stream: u64, retry_ms: u64) {
        self.inner.borrow_mut().with_stream(stream, |buf| {
            buf.paused = Some((buf.epoch.max(1), retry_ms))
        });
    }

    /// Lifts a pause without a reader reconnecting (the proxy resumes the upstream on its own).
    pub fn unpause(&self, stream: u64) {
        self.inner
            .borrow_mut()
            .with_stream(stream, |buf| buf.paused = None);
    }

    /// The reconnect delay to tell a reader that `poll_next` just ended because `stream` is
    /// paused; `None` when it ended for good.
    pub fn paused_retry(&self, stream: u64) -> Option<u64> {
        let inner = self.inner.borrow();
        inner.streams.get(&stream)?.paused.map(|(_, ms)| ms)
    }

    /// Ready once `stream` is no longer paused (lifted, gone, or its session ended).
    pub fn poll_unpaused(&self, stream: u64, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.inner.borrow_mut();
        let ended = inner.ended.is_some();
        match inner.streams.get_mut(&stream) {
            Some(buf) if buf.paused.is_some() && !ended => {
                buf.wakers.push(cx.waker().clone());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// The last sequence number handed to a reader of `stream`.
    pub fn delivered(&self, stream: u64) -> u64 {
        self.inner
            .borrow()
            .streams
            .get(&stream)
            .map_or(0, |b| b.delivered)
    }

    /// The next message after `after` for the reader holding claim `epoch`.
    pub fn poll_next(
        &self,
        stream: u64,
        after: u64,
        epoch: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Next> {
        let mut inner = self.inner.borrow_mut();
        let ended = inner.ended;
        let Some(buf) = inner.streams.get_mut(&stream) else {
            return Poll::Ready(Next::End(Closed::Finished));
        };
        if buf.epoch != epoch {
            return Poll::Ready(Next::End(Closed::Replaced));
        }
        // A session that ended still hands out what its readers have not seen.
        if let Some((seq, msg)) = buf.events.iter().find(|(s, _)| *s > after) {
            buf.delivered = buf.delivered.max(*seq);
            return Poll::Ready(Next::Event(*seq, msg.clone()));
        }
        // A stream that finished before the session ended ran its course.
        if buf.closed {
            return Poll::Ready(Next::End(Closed::Finished));
        }
        // Paused for this reader: it ends here, and `paused_retry` tells it to come back.
        if ended.is_none() && buf.paused.is_some_and(|(until, _)| epoch <= until) {
            return Poll::Ready(Next::End(Closed::Polling));
        }
        if let Some(why) = ended {
            return Poll::Ready(Next::End(why));
        }
        buf.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_fn};

    fn next(log: &EventLog, stream: u64, after: u64, epoch: u64) -> Option<(u64, Bytes)> {
        poll(log, stream, after, epoch).ok()
    }

    /// The next event, or why the stream ended (`u64::MAX` as the sequence: nothing yet).
    fn poll(log: &EventLog, stream: u64, after: u64, epoch: u64) -> Result<(u64, Bytes), Closed> {
        block_on(poll_fn(|cx| {
            match log.poll_next(stream, after, epoch, cx) {
                Poll::Ready(Next::Event(s, b)) => Poll::Ready(Ok((s, b))),
                Poll::Ready(Next::End(why)) => Poll::Ready(Err(why)),
                Poll::Pending => Poll::Ready(Ok((u64::MAX, Bytes::new()))),
            }
        }))
    }

    #[test]
    fn a_reader_resumes_after_the_last_seen_event() {
        let log = EventLog::new();
        let s = log.open();
        let epoch = log.claim(s);
        log.push(s, Bytes::from_static(b"a"));
        log.push(s, Bytes::from_static(b"b"));
        log.finish(s);
        assert_eq!(next(&log, s, 0, epoch).unwrap().1, "a");
        assert_eq!(next(&log, s, 1, epoch).unwrap().1, "b");
        assert!(
            next(&log, s, 2, epoch).is_none(),
            "finished stream ends after its last event"
        );
        let again = log.claim(s);
        assert_eq!(
            next(&log, s, 1, again).unwrap().1,
            "b",
            "a reconnecting reader replays from its position"
        );
    }

    #[test]
    fn a_newer_reader_displaces_the_older() {
        let log = EventLog::new();
        let first = log.claim(STANDALONE);
        let second = log.claim(STANDALONE);
        log.push(STANDALONE, Bytes::from_static(b"x"));
        assert!(next(&log, STANDALONE, 0, first).is_none());
        assert_eq!(next(&log, STANDALONE, 0, second).unwrap().0, 1);
    }

    #[test]
    fn a_displaced_reader_is_told_it_was_replaced() {
        let log = EventLog::new();
        let first = log.claim(STANDALONE);
        let _second = log.claim(STANDALONE);
        assert_eq!(poll(&log, STANDALONE, 0, first), Err(Closed::Replaced));
        let s = log.open();
        let old = log.claim(s);
        log.push(s, Bytes::from_static(b"a"));
        let _resumed = log.claim(s);
        assert_eq!(
            poll(&log, s, 0, old),
            Err(Closed::Replaced),
            "a resumption displaces the POST stream's reader, unread events or not"
        );
    }

    #[test]
    fn the_sessions_end_reaches_readers_after_what_they_have_not_seen() {
        for why in [Closed::SessionEnded, Closed::Shutdown] {
            let log = EventLog::new();
            let epoch = log.claim(STANDALONE);
            log.push(STANDALONE, Bytes::from_static(b"x"));
            log.end(why);
            assert_eq!(poll(&log, STANDALONE, 0, epoch).map(|e| e.0), Ok(1));
            assert_eq!(poll(&log, STANDALONE, 1, epoch), Err(why));
        }
    }

    #[test]
    fn a_stream_that_finished_before_the_session_ended_ran_its_course() {
        let log = EventLog::new();
        let s = log.open();
        let epoch = log.claim(s);
        log.push(s, Bytes::from_static(b"answer"));
        log.finish(s);
        log.end(Closed::SessionEnded);
        assert_eq!(poll(&log, s, 1, epoch), Err(Closed::Finished));
        let log = EventLog::new();
        let cut = log.open();
        let epoch = log.claim(cut);
        assert_eq!(
            poll(&log, cut, 0, epoch).map(|e| e.0),
            Ok(u64::MAX),
            "an open stream waits"
        );
        log.end(Closed::SessionEnded);
        assert_eq!(poll(&log, cut, 0, epoch), Err(Closed::SessionEnded));
        assert_eq!(
            poll(&log, 99, 0, 0),
            Err(Closed::Finished),
            "a stream no longer kept"
        );
    }

    fn unpaused(log: &EventLog, stream: u64) -> bool {
        block_on(poll_fn(|cx| {
            Poll::Ready(log.poll_unpaused(stream, cx).is_ready())
        }))
    }

    #[test]
    fn a_paused_stream_ends_its_reader_and_a_reconnect_lifts_the_pause() {
        let log = EventLog::new();
        let s = log.open();
        let post = log.claim(s);
        log.push(s, Bytes::from_static(b"progress"));
        log.pause(s, 5000);
        assert_eq!(
            next(&log, s, 0, post).unwrap().1,
            "progress",
            "what came before the pause is delivered first"
        );
        assert_eq!(poll(&log, s, 1, post), Err(Closed::Polling));
        assert_eq!(
            log.paused_retry(s),
            Some(5000),
            "the reader is told to come back"
        );
        assert!(!unpaused(&log, s));
        let resumed = log.claim(s);
        assert!(unpaused(&log, s), "the client's reconnect lifts the pause");
        assert_eq!(log.paused_retry(s), None);
        log.push(s, Bytes::from_static(b"answer"));
        assert_eq!(next(&log, s, 1, resumed).unwrap().1, "answer");
    }

    #[test]
    fn a_pause_before_the_first_reader_ends_that_reader_too() {
        let log = EventLog::new();
        let s = log.open();
        log.pause(s, 1000);
        let post = log.claim(s);
        assert!(
            !unpaused(&log, s),
            "the POST's own reader is not a reconnect"
        );
        assert_eq!(poll(&log, s, 0, post), Err(Closed::Polling));
        log.unpause(s);
        assert_eq!(
            poll(&log, s, 0, post).map(|e| e.0),
            Ok(u64::MAX),
            "once the proxy resumes on its own, the reader waits again"
        );
    }

    #[test]
    fn event_ids_round_trip() {
        assert_eq!(
            Position::parse("3-17"),
            Some(Position { stream: 3, seq: 17 })
        );
        assert_eq!(Position::parse("garbage"), None);
    }
}
