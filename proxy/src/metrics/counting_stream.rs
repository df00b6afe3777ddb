//! A client connection that counts the bytes it moves into the shard's byte counters.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use metrics::Counter;

/// Wraps a stream; every byte read or written is added to `bytes_received_total` or
/// `bytes_sent_total` of this shard (one atomic add per read or write call).
pub struct Counted<S> {
    /// The wrapped stream.
    inner: S,
    /// Received and sent counters; `None` where metrics are not initialized.
    counters: Option<(Counter, Counter)>,
}

impl<S> Counted<S> {
    /// Counts `inner`'s traffic on this shard.
    pub fn new(inner: S) -> Counted<S> {
        Counted {
            inner,
            counters: super::byte_counters(),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

fn count(counter: Option<&Counter>, result: &Poll<io::Result<usize>>) {
    if let (Some(c), Poll::Ready(Ok(n))) = (counter, result) {
        c.increment(*n as u64);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        count(self.counters.as_ref().map(|c| &c.0), &result);
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        count(self.counters.as_ref().map(|c| &c.1), &result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        count(self.counters.as_ref().map(|c| &c.1), &result);
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
