//! The streams of a bridge session's calls in flight, and the server-to-client requests an
//! upstream sends outside any call's stream, handed to one of those calls.
//!
//! A stateful server may send a request meant for a call (server-everything's `roots/list`
//! in `get-roots-list`) on the session's GET stream instead of the call's own stream, with
//! nothing saying which call it is for. A 2026-07-28 client can be asked only within a call
//! (its `input_required` round), so the request is pushed into the stream of the oldest
//! call in flight to that server in the bridge session, where the round that follows the
//! call finds it as if the server had sent it there. A bridge session is shared only by
//! clients of one principal with the same capabilities and identity, whose upstream session
//! it is, so any of its callers may answer for it. A request that arrives while no call to
//! that server is in flight is refused at once (no client could be asked), rather than left
//! for the server's own timeout.

use std::collections::HashMap;

use bytes::Bytes;

use crate::protocol::jsonrpc::Id;

/// Where a call's stray requests go.
pub(super) enum CallStream {
    /// The call's answer has not started streaming: requests wait here.
    Waiting(Vec<Bytes>),
    /// The session stream the call's answer is relayed into.
    Open(u64),
}

/// The calls in flight of one bridge session, by client id.
#[derive(Default)]
pub(super) struct Calls {
    streams: HashMap<Id, CallStream>,
}

impl Calls {
    /// The call `client_id` is relayed into session stream `out`; what waited for it goes
    /// there first. Returns those messages.
    pub(super) fn open(&mut self, client_id: &Id, out: u64) -> Vec<Bytes> {
        match self
            .streams
            .insert(client_id.clone(), CallStream::Open(out))
        {
            Some(CallStream::Waiting(held)) => held,
            _ => Vec::new(),
        }
    }

    /// Forgets a finished call.
    pub(super) fn end(&mut self, client_id: &Id) {
        self.streams.remove(client_id);
    }

    /// Hands `message` to call `client_id`: the stream to push it into, or `None` when it
    /// was kept for the call's stream to come.
    pub(super) fn hand(&mut self, client_id: &Id, message: Bytes) -> Option<u64> {
        match self
            .streams
            .entry(client_id.clone())
            .or_insert_with(|| CallStream::Waiting(Vec::new()))
        {
            CallStream::Open(out) => Some(*out),
            CallStream::Waiting(held) => {
                held.push(message);
                None
            }
        }
    }
}

/// The order calls arrived in: bridge ids are `mcp-proxy-b{n}`, so shorter is older, then
/// the text decides.
pub(super) fn arrival(id: &Id) -> (usize, String) {
    match id {
        Id::Num(n) => (0, format!("{n:020}")),
        Id::Str(s) => (s.len(), s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_ids_order_by_arrival() {
        let older = arrival(&Id::Str("mcp-proxy-b9".into()));
        let newer = arrival(&Id::Str("mcp-proxy-b10".into()));
        assert!(older < newer);
    }

    #[test]
    fn requests_wait_for_the_calls_stream_then_go_straight_to_it() {
        let mut calls = Calls::default();
        let id = Id::Str("mcp-proxy-b1".into());
        assert_eq!(calls.hand(&id, Bytes::from_static(b"first")), None);
        assert_eq!(calls.open(&id, 7), vec![Bytes::from_static(b"first")]);
        assert_eq!(calls.hand(&id, Bytes::from_static(b"second")), Some(7));
    }
}
