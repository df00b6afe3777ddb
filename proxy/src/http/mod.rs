//! HTTP/1.1 framing for both sides of the proxy, and Server-Sent Events.
//!
//! # Layout
//! - [`server`]: [`ServerConn`] reads requests from downstream clients and writes responses,
//!   whole (`Content-Length`) or streamed (`Transfer-Encoding: chunked`, for SSE).
//! - [`client`]: [`ClientConn`] writes requests to an upstream server and reads its responses.
//! - [`body`]: body framing (`Content-Length`, chunked, close-delimited), shared by both sides.
//! - [`sse`]: an incremental `text/event-stream` parser and the event encoder.
//!
//! # How to use
//! Everything is generic over `S: AsyncRead + AsyncWrite + Unpin`, so the same code runs over
//! glommio's `TcpStream` and over a TLS stream. Pure parsing (heads, body decoding, SSE) never
//! touches a timer; only the functions that take [`Limits`] apply deadlines, and those need to run
//! inside a glommio executor.
//!
//! Heads are parsed with `httparse`; header values stay slices of the received bytes
//! ([`Headers`]), so reading a request costs no allocation per field.

pub mod body;
pub mod client;
pub mod server;
pub mod sse;

#[cfg(test)]
mod mock;

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};

pub use body::BodyFraming;
pub use client::{write_request, BodyReader, ClientConn, OwnedBody, ResponseHead};
pub use server::{Method, Request, ServerConn};
pub use sse::{encode_event, encode_priming, encode_retry, SseEvent, SseParser};

/// Bounds that keep one bad peer from holding a shard's memory or time.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request or response head (start line and fields), in bytes; past it: 431.
    pub max_head_bytes: usize,
    /// Most header fields in one head; past it: 431.
    pub max_headers: usize,
    /// Largest body read into memory, in bytes; past it: 413.
    pub max_body_bytes: usize,
    /// Time for the whole head to arrive once its first byte has (slowloris).
    pub head_timeout: Duration,
    /// Time for a whole request body to arrive.
    pub body_timeout: Duration,
    /// Time a keep-alive connection may sit with no byte of a next request.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 4 * 1024 * 1024,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a message could not be read; [`HttpError::status`] says what to answer.
#[derive(thiserror::Error, Debug)]
pub enum HttpError {
    /// The start line or a header field does not parse.
    #[error("malformed message head: {0}")]
    MalformedHead(&'static str),
    /// The head is longer than `max_head_bytes` or has more than `max_headers` fields.
    #[error("message head too large")]
    HeadTooLarge,
    /// The body is longer than the limit given.
    #[error("body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// Chunked transfer coding that does not follow RFC 9112 section 7.1.
    #[error("bad chunked encoding: {0}")]
    BadChunk(&'static str),
    /// The body length is ambiguous (CL with TE, conflicting or invalid CL): a smuggling risk.
    #[error("ambiguous message length: {0}")]
    AmbiguousLength(&'static str),
    /// A transfer coding other than a single `chunked`, or any in HTTP/1.0.
    #[error("unsupported transfer-encoding: only a single \"chunked\" is accepted (HTTP/1.1)")]
    UnsupportedTransferEncoding,
    /// A protocol version other than HTTP/1.0 or HTTP/1.1.
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// The head or body did not arrive in time; the payload names which.
    #[error("timed out reading the {0}")]
    Timeout(&'static str),
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed in the middle of a message")]
    Truncated,
    /// One SSE event grew past the parser's bound.
    #[error("server-sent event larger than {limit} bytes")]
    SseEventTooLarge {
        /// The bound given to the parser, in bytes.
        limit: usize,
    },
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl HttpError {
    /// The status to answer the peer with, or None when there is no one left to answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::MalformedHead(_)
            | HttpError::BadChunk(_)
            | HttpError::AmbiguousLength(_)
            // RFC 9112 suggests 501 for a coding the server does not know; any coding but a
            // lone `chunked` is also the shape of a smuggling attempt, so it is refused as a
            // bad request like the other framing faults.
            | HttpError::UnsupportedTransferEncoding => Some(400),
            HttpError::HeadTooLarge => Some(431),
            HttpError::BodyTooLarge { .. } => Some(413),
            HttpError::UnsupportedVersion => Some(505),
            HttpError::Timeout(_) => Some(408),
            HttpError::Truncated | HttpError::SseEventTooLarge { .. } | HttpError::Io(_) => None,
        }
    }
}

/// Header fields of one message, kept as ranges into the received head (no copy per field).
#[derive(Clone, Debug, Default)]
pub struct Headers {
    /// The head bytes the ranges point into.
    head: Bytes,
    /// (name, value) ranges into `head`, in arrival order.
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl Headers {
    /// Field ranges of httparse's output, as offsets from `base`, the buffer httparse read; the
    /// `head` they are later paired with must hold those bytes at the same addresses.
    fn field_ranges(
        base: *const u8,
        parsed: &[httparse::Header<'_>],
    ) -> Vec<(Range<usize>, Range<usize>)> {
        // Offsets, not slices: the parse borrows the read buffer, which must be split afterwards.
        let off = |p: *const u8| p as usize - base as usize;
        parsed
            .iter()
            .map(|h| {
                let n = off(h.name.as_ptr());
                let v = off(h.value.as_ptr());
                (n..n + h.name.len(), v..v + h.value.len())
            })
            .collect()
    }

    /// First value of `name` (case-insensitive); None when absent or not valid UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.values_of(name).next()?).ok()
    }

    /// Every UTF-8 value of `name` (case-insensitive), in arrival order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values_of(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// Raw values of `name`. Names are compared as bytes: a request looks up a dozen
    /// fields, and validating every name as UTF-8 on each lookup showed in profiles.
    fn values_of<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.fields
            .iter()
            .filter(move |(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.head[v.clone()])
    }

    /// Every field as (name, raw value), in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields.iter().map(|(n, v)| {
            // httparse only accepts token characters in names, so this never falls back.
            let name = std::str::from_utf8(&self.head[n.clone()]).unwrap_or("");
            (name, &self.head[v.clone()])
        })
    }

    /// Whether any comma-separated element of any `name` field equals `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Whether the connection stays open after this message, from its version and `Connection`.
fn keep_alive(version_minor: u8, headers: &Headers) -> bool {
    if headers.has_token("connection", "close") {
        false
    } else if version_minor == 0 {
        // HTTP/1.0 closes by default and opts in with `keep-alive`.
        headers.has_token("connection", "keep-alive")
    } else {
        true
    }
}

/// Maps an httparse failure to our error; version errors get 505, everything else 400.
fn parse_error(e: httparse::Error) -> HttpError {
    match e {
        httparse::Error::Version => HttpError::UnsupportedVersion,
        httparse::Error::TooManyHeaders => HttpError::HeadTooLarge,
        httparse::Error::HeaderName => HttpError::MalformedHead("invalid header name"),
        httparse::Error::HeaderValue => HttpError::MalformedHead("invalid header value"),
        httparse::Error::NewLine => HttpError::MalformedHead("invalid line ending"),
        httparse::Error::Status => HttpError::MalformedHead("invalid status"),
        httparse::Error::Token => HttpError::MalformedHead("invalid start line"),
    }
}

/// Whether `buf` holds the blank line that ends a head, looking only near and past `old_len`
/// (the length already scanned).
///
/// Re-parsing the whole head on every tiny read would cost O(n^2) under a byte-at-a-time
/// sender; instead only new bytes (plus the 3 before them) are scanned for the blank line.
fn head_complete(buf: &[u8], old_len: usize) -> bool {
    let from = old_len.saturating_sub(3);
    buf[from..].windows(2).any(|w| w == b"\n\n") || buf[from..].windows(3).any(|w| w == b"\n\r\n")
}

/// Reads at least one more byte into `buf`; Ok(0) means the peer closed.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    hint: usize,
) -> std::io::Result<usize> {
    const MIN_READ: usize = 8 * 1024;
    let old = buf.len();
    // Zeroing the spare room costs far less than the syscall; it keeps this free of `unsafe`.
    buf.resize(old + hint.clamp(MIN_READ, 64 * 1024), 0);
    let res = stream.read(&mut buf[old..]).await;
    let n = *res.as_ref().unwrap_or(&0);
    buf.truncate(old + n);
    res
}

/// Runs `fut` for at most `dur`; on expiry returns `HttpError::Timeout(what)`.
async fn within<T>(
    dur: Duration,
    what: &'static str,
    fut: impl Future<Output = Result<T, HttpError>>,
) -> Result<T, HttpError> {
    match glommio::timer::timeout(dur, async { Ok(fut.await) }).await {
        Ok(res) => res,
        Err(glommio::GlommioError::TimedOut(_)) => Err(HttpError::Timeout(what)),
        Err(e) => Err(HttpError::Io(e.into())),
    }
}

/// Rejects a header name or value that would let a caller inject fields (CR, LF or NUL).
fn check_field(name: &str, value: &str) -> std::io::Result<()> {
    let bad = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
    if name.is_empty() || bad(name) || bad(value) || name.contains(':') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "header field with CR, LF, NUL or bad name",
        ));
    }
    Ok(())
}

/// Appends `name: value\r\n` to `out`.
fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Runs a test future on a fresh glommio executor (needed wherever a timer is armed).
#[cfg(test)]
pub(crate) fn run_glommio<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("join executor")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(HttpError::HeadTooLarge.status(), Some(431));
        assert_eq!(HttpError::BodyTooLarge { limit: 1 }.status(), Some(413));
        assert_eq!(HttpError::AmbiguousLength("x").status(), Some(400));
        assert_eq!(HttpError::UnsupportedTransferEncoding.status(), Some(400));
        assert_eq!(HttpError::UnsupportedVersion.status(), Some(505));
        assert_eq!(HttpError::Timeout("head").status(), Some(408));
        assert_eq!(HttpError::Truncated.status(), None);
    }

    #[test]
    fn head_end_scan_resumes() {
        let b = b"GET / HTTP/1.1\r\nA: b\r\n\r\n";
        assert!(!head_complete(&b[..b.len() - 1], 0));
        assert!(head_complete(b, b.len() - 1));
        assert!(head_complete(b"GET / HTTP/1.0\n\n", 15));
    }

    /// Both sides over a real glommio socket: a JSON exchange, then an SSE stream, one connection.
    #[test]
    fn end_to_end_over_tcp() {
        run_glommio(|| async {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = glommio::spawn_local(async move {
                let mut conn = ServerConn::new(listener.accept().await.expect("accept"));
                let limits = Limits::default();
                let req = conn
                    .read_request(&limits)
                    .await
                    .expect("read")
                    .expect("request");
                assert_eq!(
                    (req.method, &req.body[..]),
                    (Method::Post, &b"{\"id\":1}"[..])
                );
                conn.write_response(
                    200,
                    &[("Content-Type", "application/json")],
                    b"{\"ok\":1}",
                    true,
                )
                .await
                .expect("write");
                let req = conn
                    .read_request(&limits)
                    .await
                    .expect("read")
                    .expect("request");
                assert_eq!(req.header("accept"), Some("text/event-stream"));
                conn.start_stream(200, &[("Content-Type", "text/event-stream")], true)
                    .await
                    .expect("start");
                conn.write_chunk(&encode_priming("0")).await.expect("chunk");
                conn.write_chunk(&encode_event(Some("1"), b"{\"n\":1}"))
                    .await
                    .expect("chunk");
                conn.finish_stream().await.expect("finish");
                assert!(conn.read_request(&limits).await.expect("read").is_none());
            });
            let stream = glommio::net::TcpStream::connect(addr)
                .await
                .expect("connect");
            let mut client = ClientConn::new(stream);
            let limits = Limits::default();
            client
                .send("POST", "x", "/mcp", &[], Some(b"{\"id\":1}"))
                .await
                .expect("send");
            let head = client.read_response_head(&limits).await.expect("head");
            let body = client.body(&head).read_to_end(1024).await.expect("body");
            assert_eq!(&body[..], b"{\"ok\":1}");
            assert!(client.reusable());
            client
                .send("GET", "x", "/mcp", &[("Accept", "text/event-stream")], None)
                .await
                .expect("send");
            let head = client.read_response_head(&limits).await.expect("head");
            assert_eq!(head.framing, BodyFraming::Chunked);
            let mut parser = SseParser::new(1024);
            let mut events = Vec::new();
            let mut body = client.body(&head);
            while let Some(piece) = body.next_chunk().await.expect("chunk") {
                parser.push(&piece);
                while let Some(e) = parser.next_event().expect("event") {
                    events.push((e.id, e.data));
                }
            }
            assert_eq!(
                events,
                [
                    (Some("0".into()), String::new()),
                    (Some("1".into()), "{\"n\":1}".into())
                ]
            );
            assert!(client.reusable());
            drop(client);
            server.await;
        });
    }

    #[test]
    fn field_injection_rejected() {
        assert!(check_field("X-A", "ok").is_ok());
        assert!(check_field("X-A", "a\r\nEvil: 1").is_err());
        assert!(check_field("X:A", "a").is_err());
    }
}
