//! The upstream side: write requests to an MCP server and read its responses.
//!
//! A [`ClientConn`] is one connection of a keep-alive pool: after a response body has been read
//! to its end, [`ClientConn::reusable`] says whether the next request may go on the same socket.

use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::body::{response_framing, BodyDecoder, BodyFraming, Decoded};
use super::{
    check_field, head_complete, keep_alive, parse_error, push_field, read_more, within, Headers,
    HttpError, Limits,
};

/// Most 1xx responses accepted before the final one.
const MAX_INTERIM: usize = 16;

/// Header slots kept on the stack; larger `max_headers` falls back to the heap.
const RESPONSE_HEADERS: usize = 64;

/// Writes one request in one write call: request line, `Host`, `headers`, and `Content-Length`
/// when there is a body. Framing fields in `headers` are refused.
pub async fn write_request<S: AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<()> {
    let invalid = |what| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid("invalid request method"));
    }
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(invalid(
            "request path must be origin-form without spaces or controls",
        ));
    }
    check_field("Host", host)?;
    let extra: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let body_len = body.map_or(0, <[u8]>::len);
    let mut out =
        Vec::with_capacity(64 + method.len() + path.len() + host.len() + extra + body_len);
    write!(out, "{method} {path} HTTP/1.1\r\n")?;
    push_field(&mut out, "Host", host);
    for (name, value) in headers {
        check_field(name, value)?;
        if ["host", "content-length", "transfer-encoding"]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
        {
            // These are written here; a second copy from a caller would make the length ambiguous.
            return Err(invalid("framing header passed to request writer"));
        }
        push_field(&mut out, name, value);
    }
    if let Some(body) = body {
        write!(out, "Content-Length: {}\r\n\r\n", body.len())?;
        out.extend_from_slice(body);
    } else {
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out).await?;
    stream.flush().await
}

/// The head of a final (non-1xx) response.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Header fields.
    fields: Headers,
    /// Whether the connection may carry another request once this body is read.
    pub keep_alive: bool,
    /// How the body ends.
    pub framing: BodyFraming,
}

impl ResponseHead {
    /// First value of header `name` (case-insensitive); None if absent or not UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.fields.get(name)
    }

    /// Every value of header `name` (case-insensitive).
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields.get_all(name)
    }

    /// All header fields.
    pub fn fields(&self) -> &Headers {
        &self.fields
    }
}

/// One connection to an upstream server.
pub struct ClientConn<S> {
    /// The connection.
    stream: S,
    /// Bytes read but not yet consumed.
    buf: BytesMut,
    /// Whether the request in flight is a HEAD (its response has no body whatever it says).
    head_request: bool,
    /// Whether a next request may be sent (no exchange in flight, connection kept alive).
    reusable: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientConn<S> {
    /// Wraps a freshly opened connection.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            head_request: false,
            reusable: true,
        }
    }

    /// Whether the next request may be sent on this connection (the last response was read to
    /// its end and both sides keep the connection alive).
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// The connection, e.g. to shut it down.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Gives the connection back; buffered unread bytes are dropped.
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Sends one request (see [`write_request`]).
    pub async fn send(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<()> {
        self.reusable = false;
        self.head_request = method == "HEAD";
        write_request(&mut self.stream, method, host, path, headers, body).await
    }

    /// Reads the final response head, skipping 1xx interim responses.
    ///
    /// The first byte is awaited without a deadline: how long an upstream may work on a request is
    /// the caller's policy (wrap this call in `glommio::timer::timeout`). Once it has started,
    /// a head must arrive within `head_timeout`.
    pub async fn read_response_head(&mut self, limits: &Limits) -> Result<ResponseHead, HttpError> {
        // Interim responses are tiny; a peer sending them without end is only wasting our time.
        for _ in 0..MAX_INTERIM {
            if self.buf.is_empty() && read_more(&mut self.stream, &mut self.buf, 0).await? == 0 {
                return Err(HttpError::Truncated);
            }
            // A head that arrived whole in one read needs no timer.
            let buffered = if head_complete(&self.buf, 0) {
                self.parse_head(limits)?
            } else {
                None
            };
            let head = match buffered {
                Some(head) => head,
                None => within(limits.head_timeout, "head", self.read_head(limits)).await?,
            };
            // 101 ends HTTP on this connection, so it is final; other 1xx precede the real one.
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            if head.status == 101 {
                return Ok(ResponseHead {
                    keep_alive: false,
                    framing: BodyFraming::Empty,
                    ..head
                });
            }
            if head.framing == BodyFraming::Empty {
                self.finish(head.keep_alive);
            }
            return Ok(head);
        }
        Err(HttpError::MalformedHead("too many interim responses"))
    }

    /// A reader for the body that follows `head`.
    pub fn body(&mut self, head: &ResponseHead) -> BodyReader<'_, S> {
        BodyReader {
            decoder: BodyDecoder::new(head.framing, RESPONSE_TRAILERS),
            framing: head.framing,
            keep_alive: head.keep_alive,
            conn: self,
        }
    }

    /// Marks the exchange complete; stray bytes after a response mean the peer is confused.
    fn finish(&mut self, keep_alive: bool) {
        self.reusable = keep_alive && self.buf.is_empty();
    }

    /// Reads until one whole response head is buffered, then parses and consumes it.
    async fn read_head(&mut self, limits: &Limits) -> Result<ResponseHead, HttpError> {
        let mut scanned = 0;
        loop {
            if head_complete(&self.buf, scanned) {
                if let Some(head) = self.parse_head(limits)? {
                    return Ok(head);
                }
            }
            if self.buf.len() >= limits.max_head_bytes {
                return Err(HttpError::HeadTooLarge);
            }
            scanned = self.buf.len();
            if read_more(&mut self.stream, &mut self.buf, 0).await? == 0 {
                return Err(HttpError::Truncated);
            }
        }
    }

    /// Parses a response head at the front of the buffer; None when not complete yet.
    fn parse_head(&mut self, limits: &Limits) -> Result<Option<ResponseHead>, HttpError> {
        let mut stack = [httparse::EMPTY_HEADER; RESPONSE_HEADERS];
        let mut heap = Vec::new();
        let slots: &mut [httparse::Header<'_>] = if limits.max_headers <= RESPONSE_HEADERS {
            &mut stack[..limits.max_headers]
        } else {
            heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
            &mut heap
        };
        let mut resp = httparse::Response::new(slots);
        let len = match resp.parse(&self.buf).map_err(parse_error)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
        if len > limits.max_head_bytes {
            return Err(HttpError::HeadTooLarge);
        }
        let (Some(status), Some(version_minor)) = (resp.code, resp.version) else {
            return Err(HttpError::MalformedHead("incomplete status line"));
        };
        let ranges = Headers::field_ranges(self.buf.as_ptr(), resp.headers);
        // `split_to` keeps the bytes where they are, so the ranges stay valid in `head`.
        let head = self.buf.split_to(len).freeze();
        let fields = Headers {
            head,
            fields: ranges,
        };
        let framing = response_framing(status, self.head_request, &fields)?;
        let keep_alive = keep_alive(version_minor, &fields) && framing != BodyFraming::UntilClose;
        Ok(Some(ResponseHead {
            status,
            version_minor,
            fields,
            keep_alive,
            framing,
        }))
    }
}

/// Most trailer bytes accepted after a chunked response body.
const RESPONSE_TRAILERS: usize = 16 * 1024;

/// Reads one response body from a [`ClientConn`], as it arrives or whole.
///
/// No deadline is applied here: an SSE body may stay quiet for minutes. Callers bound the wait.
pub struct BodyReader<'a, S> {
    /// The connection the body arrives on.
    conn: &'a mut ClientConn<S>,
    /// Framing state.
    decoder: BodyDecoder,
    /// The framing, for the whole-body fast path.
    framing: BodyFraming,
    /// Whether the connection is reusable once the body has ended.
    keep_alive: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> BodyReader<'_, S> {
    /// The next piece of body as it arrives (for SSE); None once the body has ended.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        next_body_chunk(self.conn, &mut self.decoder, self.keep_alive).await
    }

    /// The whole body, refused past `max` bytes.
    pub async fn read_to_end(mut self, max: usize) -> Result<Bytes, HttpError> {
        if let BodyFraming::Length(n) = self.framing {
            if n > max as u64 {
                return Err(HttpError::BodyTooLarge { limit: max });
            }
            // Gather the whole body first so the decoder hands it out as one slice, uncopied.
            let n = n as usize;
            while self.conn.buf.len() < n {
                let want = n - self.conn.buf.len();
                if read_more(&mut self.conn.stream, &mut self.conn.buf, want).await? == 0 {
                    return Err(HttpError::Truncated);
                }
            }
        }
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        let mut total = 0;
        while let Some(piece) = self.next_chunk().await? {
            total += piece.len();
            if total > max {
                return Err(HttpError::BodyTooLarge { limit: max });
            }
            // A body that arrives as one piece is returned as is; only later pieces force a copy.
            match first.take() {
                None if rest.is_empty() => first = Some(piece),
                taken => {
                    if let Some(f) = taken {
                        rest.extend_from_slice(&f);
                    }
                    rest.extend_from_slice(&piece);
                }
            }
        }
        Ok(first.unwrap_or_else(|| rest.freeze()))
    }
}

/// A body reader that owns its connection, for streams that outlive the function that opened
/// them (an upstream SSE stream is read message by message by whoever relays it).
pub struct OwnedBody<S> {
    /// The connection the body arrives on.
    conn: ClientConn<S>,
    /// Framing state.
    decoder: BodyDecoder,
    /// Whether the connection is reusable once the body has ended.
    keep_alive: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientConn<S> {
    /// Turns the connection into a reader of the body that follows `head`.
    pub fn into_body(self, head: &ResponseHead) -> OwnedBody<S> {
        OwnedBody {
            decoder: BodyDecoder::new(head.framing, RESPONSE_TRAILERS),
            keep_alive: head.keep_alive,
            conn: self,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> OwnedBody<S> {
    /// The next piece of body as it arrives; None once the body has ended.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        next_body_chunk(&mut self.conn, &mut self.decoder, self.keep_alive).await
    }

    /// The connection, when the body was read to its end and it may carry another request.
    pub fn into_conn(self) -> Option<ClientConn<S>> {
        self.conn.reusable().then_some(self.conn)
    }
}

/// Decodes the next piece of a body, reading from the connection as needed.
async fn next_body_chunk<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut ClientConn<S>,
    decoder: &mut BodyDecoder,
    keep_alive: bool,
) -> Result<Option<Bytes>, HttpError> {
    loop {
        match decoder.decode(&mut conn.buf)? {
            Decoded::Data(d) => return Ok(Some(d)),
            Decoded::Done => {
                conn.finish(keep_alive);
                return Ok(None);
            }
            Decoded::NeedMore => {
                if read_more(&mut conn.stream, &mut conn.buf, 0).await? == 0 {
                    decoder.on_eof()?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::mock::MockStream;
    use crate::http::run_glommio;

    /// What one exchange produced: status, body pieces, and whether the connection is reusable.
    type Exchange = (u16, Vec<Vec<u8>>, bool);

    /// Sends `method` requests and reads `count` responses from `input` (fed `step` bytes at a
    /// time), each body by `next_chunk`.
    fn exchanges(
        input: &'static [u8],
        step: usize,
        method: &'static str,
        count: usize,
    ) -> Vec<Result<Exchange, HttpError>> {
        run_glommio(move || async move {
            let mut conn = ClientConn::new(MockStream::new(input, step));
            let mut out = Vec::new();
            for _ in 0..count {
                let res = async {
                    conn.send(method, "up", "/mcp", &[], None).await?;
                    let head = conn.read_response_head(&Limits::default()).await?;
                    let mut body = conn.body(&head);
                    let mut pieces = Vec::new();
                    while let Some(p) = body.next_chunk().await? {
                        pieces.push(p.to_vec());
                    }
                    Ok((head.status, pieces, conn.reusable()))
                }
                .await;
                out.push(res);
            }
            out
        })
    }

    #[test]
    fn length_responses_keep_alive_bytewise() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
        for step in [1, input.len()] {
            let got = exchanges(input, step, "POST", 2);
            let (status, pieces, reusable) = got[0].as_ref().unwrap();
            assert_eq!(
                (*status, pieces.concat(), *reusable),
                (200, b"hello".to_vec(), step == 1)
            );
            // With everything in one read the second response is already buffered: not reusable
            // mid-way, but fine once it has been read as well.
            assert_eq!(got[1].as_ref().unwrap(), &(202, vec![], true));
        }
    }

    #[test]
    fn chunked_response_streams_pieces() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n7\r\ndata: 1\r\n2;x=y\r\n\n\n\r\n0\r\nT: 1\r\n\r\n";
        let got = exchanges(input, 4, "GET", 1);
        let (status, pieces, reusable) = got[0].as_ref().unwrap();
        assert_eq!(*status, 200);
        assert!(pieces.len() > 1, "pieces arrive as they come");
        assert_eq!(pieces.concat(), b"data: 1\n\n");
        assert!(*reusable);
    }

    #[test]
    fn close_delimited_and_http10() {
        let got = exchanges(b"HTTP/1.1 200 OK\r\n\r\nuntil close", 3, "GET", 1);
        let (_, pieces, reusable) = got[0].as_ref().unwrap();
        assert_eq!(
            (pieces.concat(), *reusable),
            (b"until close".to_vec(), false)
        );
        let got = exchanges(
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
            3,
            "GET",
            1,
        );
        assert!(!got[0].as_ref().unwrap().2);
        let got = exchanges(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
            3,
            "GET",
            1,
        );
        assert!(got[0].as_ref().unwrap().2);
        let got = exchanges(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
            3,
            "GET",
            1,
        );
        assert!(!got[0].as_ref().unwrap().2);
    }

    #[test]
    fn interim_responses_skipped_and_bodiless_statuses() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (status, pieces, reusable) = exchanges(input, 1, "POST", 1).remove(0).unwrap();
        assert_eq!(
            (status, pieces.concat(), reusable),
            (200, b"ok".to_vec(), true)
        );
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(
            exchanges(input, 1, "HEAD", 1)[0].as_ref().unwrap(),
            &(200, vec![], true)
        );
        let input = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n";
        let got = exchanges(input, 2, "GET", 2);
        assert_eq!(got[0].as_ref().unwrap().0, 204);
        assert_eq!(got[1].as_ref().unwrap(), &(304, vec![], true));
    }

    #[test]
    fn broken_responses() {
        let err = |input: &'static [u8]| exchanges(input, 2, "GET", 1).remove(0).unwrap_err();
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"),
            HttpError::Truncated
        ));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
            HttpError::Truncated
        ));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::AmbiguousLength(_)
        ));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n"),
            HttpError::MalformedHead(_)
        ));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nContent-Len"),
            HttpError::Truncated
        ));
        assert!(matches!(err(b""), HttpError::Truncated));
    }

    #[test]
    fn read_to_end_limits_and_zero_copy() {
        let body = |input: &'static [u8], max: usize| {
            run_glommio(move || async move {
                let mut conn = ClientConn::new(MockStream::new(input, 3));
                let head = conn.read_response_head(&Limits::default()).await?;
                let b = conn.body(&head).read_to_end(max).await?;
                Ok::<_, HttpError>((b, conn.reusable()))
            })
        };
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 5).unwrap(),
            (Bytes::from_static(b"hello"), true)
        );
        assert!(matches!(
            body(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 4),
            Err(HttpError::BodyTooLarge { limit: 4 })
        ));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        assert_eq!(body(chunked, 6).unwrap().0, Bytes::from_static(b"abcdef"));
        assert!(matches!(
            body(chunked, 5),
            Err(HttpError::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn request_is_one_write() {
        let mut s = MockStream::new(b"", 1);
        futures_lite::future::block_on(write_request(
            &mut s,
            "POST",
            "example.com:8080",
            "/mcp",
            &[("Accept", "application/json")],
            Some(b"{}"),
        ))
        .unwrap();
        assert_eq!(s.writes, [b"POST /mcp HTTP/1.1\r\nHost: example.com:8080\r\nAccept: application/json\r\nContent-Length: 2\r\n\r\n{}".to_vec()]);
        let mut s = MockStream::new(b"", 1);
        futures_lite::future::block_on(write_request(&mut s, "GET", "h", "/", &[], None)).unwrap();
        assert_eq!(s.written(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        for (method, path, headers) in [
            ("GET X", "/", &[][..]),
            ("GET", "/a b", &[][..]),
            ("GET", "http://x/", &[][..]),
            ("GET", "/", &[("Content-Length", "3")][..]),
            ("GET", "/", &[("X", "a\nb")][..]),
        ] {
            let mut s = MockStream::new(b"", 1);
            assert!(futures_lite::future::block_on(write_request(
                &mut s, method, "h", path, headers, None
            ))
            .is_err());
            assert!(s.writes.is_empty());
        }
    }
}
