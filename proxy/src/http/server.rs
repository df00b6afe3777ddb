//! The downstream side: read requests from a client connection, write responses to it.
//!
//! A [`ServerConn`] owns one connection's read buffer, so pipelined requests are safe: bytes past
//! the end of one request stay buffered for the next `read_request`.

use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::body::{request_framing, BodyDecoder, BodyFraming, Decoded};
use super::{
    check_field, head_complete, keep_alive, parse_error, push_field, read_more, within, Headers,
    HttpError, Limits,
};

/// Header slots kept on the stack; larger `max_headers` falls back to the heap.
const STACK_HEADERS: usize = 64;

/// Request method; the ones Streamable HTTP uses get their own variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`: open an SSE stream.
    Get,
    /// `POST`: send a JSON-RPC message.
    Post,
    /// `DELETE`: end a session.
    Delete,
    /// `OPTIONS`: CORS preflight.
    Options,
    /// `HEAD`.
    Head,
    /// Anything else, as sent.
    Other(String),
}

impl Method {
    /// Maps the request-line token; methods are case-sensitive (RFC 9110 section 9.1).
    fn parse(s: &str) -> Self {
        match s {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_owned()),
        }
    }
}

/// One complete request, body included.
#[derive(Debug)]
pub struct Request {
    /// The request method.
    pub method: Method,
    /// The request target as sent (path and query for origin-form).
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Header fields.
    fields: Headers,
    /// The whole body (empty when there was none).
    pub body: Bytes,
    /// Whether the client wants the connection kept open after the response.
    pub keep_alive: bool,
}

impl Request {
    /// First value of header `name` (case-insensitive); None if absent or not UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.fields.get(name)
    }

    /// Every value of header `name` (case-insensitive), e.g. repeated `Accept` fields.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields.get_all(name)
    }

    /// All header fields.
    pub fn fields(&self) -> &Headers {
        &self.fields
    }

    /// The target's path, without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The target's query (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// How the current streamed response is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamMode {
    /// `Transfer-Encoding: chunked` (HTTP/1.1 clients).
    Chunked,
    /// Raw bytes ended by closing the connection (HTTP/1.0 clients know no chunked coding).
    UntilClose,
}

/// The head of a request, before its body is read.
struct RequestHead {
    /// The parsed method.
    method: Method,
    /// The request target.
    target: String,
    /// 0 or 1.
    version_minor: u8,
    /// The header fields.
    fields: Headers,
}

/// One downstream connection: parses requests, writes responses.
pub struct ServerConn<S> {
    /// The connection.
    stream: S,
    /// Bytes read but not yet consumed (a partial head, or the next pipelined request).
    buf: BytesMut,
    /// Whether the last request was HTTP/1.0 (changes keep-alive and streaming framing).
    http10: bool,
    /// Set between `start_stream` and `finish_stream`.
    streaming: Option<StreamMode>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerConn<S> {
    /// Wraps an accepted connection.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            http10: false,
            streaming: None,
        }
    }

    /// The connection, e.g. to shut it down.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Gives the connection back; buffered unread bytes are dropped.
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Reads the next request, body included.
    ///
    /// Ok(None) when the peer closed between requests or sent nothing for `idle_timeout`.
    /// `head_timeout` bounds the head from its first byte, `body_timeout` the body.
    /// `Expect: 100-continue` is answered before the body is read.
    pub async fn read_request(&mut self, limits: &Limits) -> Result<Option<Request>, HttpError> {
        if self.buf.is_empty() {
            let idle = glommio::timer::timeout(limits.idle_timeout, async {
                Ok(read_more(&mut self.stream, &mut self.buf, 0).await)
            })
            .await;
            match idle {
                Ok(Ok(0)) | Err(glommio::GlommioError::TimedOut(_)) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => return Err(HttpError::Io(e.into())),
            }
        }
        let Some(head) = within(limits.head_timeout, "head", self.read_head(limits)).await? else {
            return Ok(None);
        };
        let framing = request_framing(&head.fields)?;
        let mut keep_alive = keep_alive(head.version_minor, &head.fields);
        if head.version_minor == 0 && framing == BodyFraming::Chunked {
            // RFC 9112 section 6.1: chunked in HTTP/1.0 may be a smuggling attempt; close after.
            keep_alive = false;
        }
        if let BodyFraming::Length(n) = framing {
            if n > limits.max_body_bytes as u64 {
                return Err(HttpError::BodyTooLarge {
                    limit: limits.max_body_bytes,
                });
            }
        }
        self.http10 = head.version_minor == 0;
        if framing != BodyFraming::Empty
            && head.version_minor == 1
            && self.buf.is_empty()
            && head.fields.has_token("expect", "100-continue")
        {
            // The client holds the body back until told to go on.
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
            self.stream.flush().await?;
        }
        let body = within(limits.body_timeout, "body", self.read_body(framing, limits)).await?;
        Ok(Some(Request {
            method: head.method,
            target: head.target,
            version_minor: head.version_minor,
            fields: head.fields,
            body,
            keep_alive,
        }))
    }

    /// Reads until a whole head is buffered, then parses and consumes it.
    /// Ok(None) when the peer closed having sent only blank lines.
    async fn read_head(&mut self, limits: &Limits) -> Result<Option<RequestHead>, HttpError> {
        let mut scanned = 0;
        loop {
            if head_complete(&self.buf, scanned) {
                if let Some(head) = self.parse_head(limits)? {
                    return Ok(Some(head));
                }
            }
            if self.buf.len() >= limits.max_head_bytes {
                return Err(HttpError::HeadTooLarge);
            }
            scanned = self.buf.len();
            if read_more(&mut self.stream, &mut self.buf, 0).await? == 0 {
                // Blank lines before a request line are allowed (RFC 9112 section 2.2).
                return if self.buf.iter().all(|&b| b == b'\r' || b == b'\n') {
                    Ok(None)
                } else {
                    Err(HttpError::Truncated)
                };
            }
        }
    }

    /// Parses a head at the front of the buffer; None when it is not complete yet.
    fn parse_head(&mut self, limits: &Limits) -> Result<Option<RequestHead>, HttpError> {
        let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
        let mut heap = Vec::new();
        let slots: &mut [httparse::Header<'_>] = if limits.max_headers <= STACK_HEADERS {
            &mut stack[..limits.max_headers]
        } else {
            heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
            &mut heap
        };
        let mut req = httparse::Request::new(slots);
        let len = match req.parse(&self.buf).map_err(parse_error)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
        if len > limits.max_head_bytes {
            return Err(HttpError::HeadTooLarge);
        }
        let (Some(method), Some(target), Some(version_minor)) = (req.method, req.path, req.version)
        else {
            return Err(HttpError::MalformedHead("incomplete request line"));
        };
        let method = Method::parse(method);
        let target = target.to_owned();
        let ranges = Headers::from_parsed(self.buf.as_ptr(), req.headers);
        // `split_to` keeps the bytes where they are, so the ranges stay valid in `head`.
        let head = self.buf.split_to(len).freeze();
        Ok(Some(RequestHead {
            method,
            target,
            version_minor,
            fields: Headers {
                head,
                fields: ranges,
            },
        }))
    }

    /// Reads a body of the given framing, within `max_body_bytes`.
    async fn read_body(
        &mut self,
        framing: BodyFraming,
        limits: &Limits,
    ) -> Result<Bytes, HttpError> {
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => Ok(Bytes::new()),
            BodyFraming::Length(n) => {
                // Checked against max_body_bytes by the caller, so this fits in memory.
                let n = usize::try_from(n).map_err(|_| HttpError::BodyTooLarge {
                    limit: limits.max_body_bytes,
                })?;
                while self.buf.len() < n {
                    let want = n - self.buf.len();
                    if read_more(&mut self.stream, &mut self.buf, want).await? == 0 {
                        return Err(HttpError::Truncated);
                    }
                }
                // One contiguous slice of the read buffer: no copy.
                Ok(self.buf.split_to(n).freeze())
            }
            BodyFraming::Chunked | BodyFraming::UntilClose => {
                let mut decoder = BodyDecoder::new(framing, limits.max_head_bytes);
                let mut body = BytesMut::new();
                loop {
                    match decoder.decode(&mut self.buf)? {
                        Decoded::Data(d) => {
                            if body.len() + d.len() > limits.max_body_bytes {
                                return Err(HttpError::BodyTooLarge {
                                    limit: limits.max_body_bytes,
                                });
                            }
                            body.extend_from_slice(&d);
                        }
                        Decoded::Done => return Ok(body.freeze()),
                        Decoded::NeedMore => {
                            if read_more(&mut self.stream, &mut self.buf, 0).await? == 0 {
                                decoder.on_eof()?;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes a whole response with `Content-Length`, head and body in one write.
    ///
    /// `headers` are the extra fields; framing fields (`Content-Length`, `Transfer-Encoding`,
    /// `Connection`) are added here. `keep_alive = false` adds `Connection: close`.
    pub async fn write_response(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        keep_alive: bool,
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(
            128 + headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>()
                + body.len(),
        );
        self.push_head(&mut out, status, headers, keep_alive)?;
        // 1xx, 204 and 304 never carry a body (RFC 9110 section 6.4.1).
        let bodiless = status < 200 || status == 204 || status == 304;
        if !bodiless {
            write!(out, "Content-Length: {}\r\n", body.len())?;
        }
        out.extend_from_slice(b"\r\n");
        if !bodiless {
            out.extend_from_slice(body);
        }
        self.send(&out).await
    }

    /// Starts a streamed response (`Transfer-Encoding: chunked`, e.g. for `text/event-stream`).
    ///
    /// For an HTTP/1.0 client the body is sent raw with `Connection: close`, and the caller must
    /// close the connection after `finish_stream`.
    pub async fn start_stream(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(256);
        let mode = if self.http10 {
            StreamMode::UntilClose
        } else {
            StreamMode::Chunked
        };
        self.push_head(&mut out, status, headers, mode == StreamMode::Chunked)?;
        if mode == StreamMode::Chunked {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.streaming = Some(mode);
        self.send(&out).await
    }

    /// Sends one piece of a streamed response in one write, flushed (a client waits for it).
    /// Empty data is skipped: an empty chunk would end the body.
    pub async fn write_chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self.streaming {
            Some(StreamMode::Chunked) => {
                let mut out = Vec::with_capacity(data.len() + 20);
                write!(out, "{:x}\r\n", data.len())?;
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
                self.send(&out).await
            }
            Some(StreamMode::UntilClose) => self.send(data).await,
            None => Err(not_streaming()),
        }
    }

    /// Ends a streamed response (the zero-length chunk; nothing for a close-delimited one).
    pub async fn finish_stream(&mut self) -> std::io::Result<()> {
        match self.streaming.take() {
            Some(StreamMode::Chunked) => self.send(b"0\r\n\r\n").await,
            Some(StreamMode::UntilClose) => Ok(()),
            None => Err(not_streaming()),
        }
    }

    /// Status line, caller's fields and the `Connection` field.
    fn push_head(
        &self,
        out: &mut Vec<u8>,
        status: u16,
        headers: &[(&str, &str)],
        keep_alive: bool,
    ) -> std::io::Result<()> {
        write!(out, "HTTP/1.1 {status} {}\r\n", reason(status))?;
        for (name, value) in headers {
            check_field(name, value)?;
            if ["content-length", "transfer-encoding", "connection"]
                .iter()
                .any(|f| name.eq_ignore_ascii_case(f))
            {
                // Framing is ours to write; a second, different one is how responses get split.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "framing header passed to response writer",
                ));
            }
            push_field(out, name, value);
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.http10 {
            // HTTP/1.0 closes unless told otherwise.
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        Ok(())
    }

    /// One write of a whole buffer, flushed (TLS streams hold data until flushed).
    async fn send(&mut self, out: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(out).await?;
        self.stream.flush().await
    }
}

/// Error for stream calls made outside `start_stream` .. `finish_stream`.
fn not_streaming() -> std::io::Error {
    std::io::Error::other("no streamed response in progress")
}

/// Reason phrase for the statuses this proxy sends; clients ignore it anyway.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::http::mock::MockStream;
    use crate::http::run_glommio;

    /// Reads every request from `input` (fed `step` bytes at a time) until a clean end or error.
    fn read_all(
        input: &'static [u8],
        step: usize,
        limits: Limits,
    ) -> (Vec<Request>, Option<HttpError>, Vec<u8>) {
        run_glommio(move || async move {
            let mut conn = ServerConn::new(MockStream::new(input, step));
            let mut reqs = Vec::new();
            let err = loop {
                match conn.read_request(&limits).await {
                    Ok(Some(r)) => reqs.push(r),
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            (reqs, err, conn.into_inner().written())
        })
    }

    fn read_one(input: &'static [u8]) -> Result<Request, HttpError> {
        let (mut reqs, err, _) = read_all(input, 1024, Limits::default());
        match err {
            Some(e) => Err(e),
            None => Ok(reqs.remove(0)),
        }
    }

    #[test]
    fn byte_by_byte_request_with_body() {
        let input = b"POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\naccept: text/event-stream\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
        let (reqs, err, _) = read_all(input, 1, Limits::default());
        assert!(err.is_none(), "{err:?}");
        let r = &reqs[0];
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.path(), "/mcp");
        assert_eq!(r.query(), Some("x=1"));
        assert_eq!(r.header("HOST"), Some("a"));
        assert_eq!(
            r.headers("accept").collect::<Vec<_>>(),
            ["application/json", "text/event-stream"]
        );
        assert_eq!(&r.body[..], b"{\"a\":1}");
        assert!(r.keep_alive);
    }

    #[test]
    fn pipelined_requests_in_one_read() {
        let input = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\nDELETE /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;e=1\r\nx\r\n0\r\nT: v\r\n\r\n";
        for step in [1, 5, input.len()] {
            let (reqs, err, _) = read_all(input, step, Limits::default());
            assert!(err.is_none(), "{err:?}");
            let got: Vec<_> = reqs
                .iter()
                .map(|r| (r.method.clone(), r.target.as_str(), &r.body[..]))
                .collect();
            assert_eq!(
                got,
                [
                    (Method::Post, "/a", &b"abc"[..]),
                    (Method::Get, "/b", b""),
                    (Method::Delete, "/c", b"x")
                ]
            );
        }
    }

    #[test]
    fn smuggling_and_malformed_heads() {
        let cases: &[(&[u8], u16)] = &[
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"GET / HTTP/1.1\r\nX-A: a\r\n  folded\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ];
        for (input, status) in cases {
            let input: &'static [u8] = input;
            let err = read_one(input).unwrap_err();
            assert_eq!(
                err.status(),
                Some(*status),
                "{:?}: {err:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn oversized_head_and_body() {
        let small = Limits {
            max_head_bytes: 64,
            max_headers: 2,
            max_body_bytes: 4,
            ..Limits::default()
        };
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", 431),
            (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 431),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde", 413),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 413),
        ];
        for (input, status) in cases {
            let input: &'static [u8] = input;
            for step in [1, 1000] {
                let (_, err, _) = read_all(input, step, small.clone());
                assert_eq!(
                    err.and_then(|e| e.status()),
                    Some(*status),
                    "{:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn truncated_messages() {
        for input in [
            &b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            b"GET / HTTP/1.1\r\nHost:",
        ] {
            assert!(matches!(read_one(input), Err(HttpError::Truncated)));
        }
        // Closing after blank lines, or right away, is a clean end.
        let (reqs, err, _) = read_all(b"\r\n", 1, Limits::default());
        assert!(reqs.is_empty() && err.is_none());
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |input: &'static [u8]| read_one(input).unwrap().keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!ka(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
    }

    #[test]
    fn expect_continue_answered_before_body() {
        let (reqs, _, written) = read_all(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
            1,
            Limits::default(),
        );
        assert_eq!(&reqs[0].body[..], b"hi");
        assert_eq!(written, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn idle_and_head_timeouts() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(20),
            head_timeout: Duration::from_millis(20),
            ..Limits::default()
        };
        let l = limits.clone();
        let idle = run_glommio(move || async move {
            ServerConn::new(MockStream::hanging(b"", 1))
                .read_request(&l)
                .await
                .map(|r| r.is_none())
        });
        assert!(idle.unwrap());
        let slow = run_glommio(move || async move {
            ServerConn::new(MockStream::hanging(b"GET / HT", 1))
                .read_request(&limits)
                .await
                .map(|_| ())
        });
        assert_eq!(slow.unwrap_err().status(), Some(408));
    }

    fn written_by(
        http10: bool,
        f: impl FnOnce(
            &mut ServerConn<MockStream>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>,
    ) -> Vec<Vec<u8>> {
        let mut conn = ServerConn::new(MockStream::new(b"", 1));
        conn.http10 = http10;
        futures_lite::future::block_on(f(&mut conn));
        conn.into_inner().writes
    }

    #[test]
    fn response_is_one_write() {
        let writes = written_by(false, |c| {
            Box::pin(async {
                c.write_response(200, &[("Content-Type", "application/json")], b"{}", true)
                    .await
                    .unwrap()
            })
        });
        assert_eq!(
            writes,
            [
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                    .to_vec()
            ]
        );
        let writes = written_by(true, |c| {
            Box::pin(async { c.write_response(202, &[], b"", false).await.unwrap() })
        });
        assert_eq!(
            writes.concat(),
            b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        let writes = written_by(true, |c| {
            Box::pin(async { c.write_response(204, &[], b"", true).await.unwrap() })
        });
        assert_eq!(
            writes.concat(),
            b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"
        );
        let writes = written_by(false, |c| {
            Box::pin(async {
                assert!(c
                    .write_response(200, &[("X", "a\r\nSet-Cookie: x")], b"", true)
                    .await
                    .is_err());
                assert!(c
                    .write_response(200, &[("content-length", "1")], b"", true)
                    .await
                    .is_err());
            })
        });
        assert!(writes.is_empty());
    }

    #[test]
    fn streamed_response_framing() {
        let writes = written_by(false, |c| {
            Box::pin(async {
                c.start_stream(200, &[("Content-Type", "text/event-stream")])
                    .await
                    .unwrap();
                c.write_chunk(b"data: 1\n\n").await.unwrap();
                c.write_chunk(b"").await.unwrap();
                c.write_chunk(&[b'x'; 26]).await.unwrap();
                c.finish_stream().await.unwrap();
                assert!(c.write_chunk(b"late").await.is_err());
            })
        });
        assert_eq!(
            writes.len(),
            4,
            "head, two chunks, terminator: one write each"
        );
        assert_eq!(writes[0], b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(writes[1], b"9\r\ndata: 1\n\n\r\n");
        assert!(writes[2].starts_with(b"1a\r\nxxx"));
        assert_eq!(writes[3], b"0\r\n\r\n");
        let writes = written_by(true, |c| {
            Box::pin(async {
                c.start_stream(200, &[]).await.unwrap();
                c.write_chunk(b"raw").await.unwrap();
                c.finish_stream().await.unwrap();
            })
        });
        assert_eq!(
            writes.concat(),
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nraw"
        );
    }
}
