//! An in-memory stream for tests: reads come out in pieces of at most `step` bytes (to exercise
//! partial reads), writes are recorded one entry per `poll_write` call (to check batching).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// A scripted peer: fixed input, recorded output.
pub(crate) struct MockStream {
    /// Bytes the peer sends us.
    input: Vec<u8>,
    /// How much of `input` has been read.
    pos: usize,
    /// Largest piece one read returns.
    step: usize,
    /// Each write call's bytes, in order.
    pub(crate) writes: Vec<Vec<u8>>,
    /// Once `input` is used up: stay silent forever (true) or close (false).
    hang_at_end: bool,
}

impl MockStream {
    /// A peer that sends `input` in pieces of at most `step` bytes, then closes.
    pub(crate) fn new(input: &[u8], step: usize) -> Self {
        Self {
            input: input.to_vec(),
            pos: 0,
            step: step.max(1),
            writes: Vec::new(),
            hang_at_end: false,
        }
    }

    /// A peer that sends `input` like [`MockStream::new`], then neither sends nor closes.
    pub(crate) fn hanging(input: &[u8], step: usize) -> Self {
        Self {
            hang_at_end: true,
            ..Self::new(input, step)
        }
    }

    /// Everything written so far, concatenated.
    pub(crate) fn written(&self) -> Vec<u8> {
        self.writes.concat()
    }
}

impl AsyncRead for MockStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.pos == self.input.len() && self.hang_at_end {
            // Never woken: the caller's timer is what ends the wait.
            return Poll::Pending;
        }
        let n = (self.input.len() - self.pos).min(self.step).min(buf.len());
        let start = self.pos;
        buf[..n].copy_from_slice(&self.input[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for MockStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writes.push(buf.to_vec());
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
