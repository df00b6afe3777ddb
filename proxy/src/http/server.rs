//! The downstream side: read requests from a client connection, write responses to it.
//!
//! A [`ServerConn`] owns one connection's read buffer, so pipelined requests are safe: bytes past
//! the end of one request stay buffered for the next `read_request`.

use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

    /// Number of header fields.
    pub fn header_count(&self) -> usize {
        self.fields.len()
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

    /// Waits for the first bytes of the next request: true once some are buffered (at once
    /// when a pipelined request already is), false when the client closed, sent nothing for
    /// `idle` or `stop` resolved first (a draining shard closes idle connections). After
    /// false the connection is done: close it.
    pub async fn next_request_begins(
        &mut self,
        idle: std::time::Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let first = async {
            matches!(
                glommio::timer::timeout(idle, async {
                    Ok(read_more(&mut self.stream, &mut self.buf, 0).await)
                })
                .await,
                Ok(Ok(n)) if n > 0
            )
        };
        futures_lite::future::or(first, async {
            stop.await;
            false
        })
        .await
    }

    /// Resolves when the client goes away (end of file, reset) while its request is served;
    /// never while it stays. A client that half-closes after its request is taken as gone, as
    /// nginx takes it. Bytes it sends meanwhile (a pipelined request) are kept for the next
    /// [`read_request`](Self::read_request); past `max_buffered` of them nothing more is read
    /// and the client is taken as present. Dropping this future loses nothing: each read goes
    /// to a local buffer and is appended whole.
    pub async fn gone(&mut self, max_buffered: usize) {
        let mut scratch = [0u8; 2048];
        while self.buf.len() < max_buffered {
            match self.stream.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => self.buf.extend_from_slice(&scratch[..n]),
            }
        }
        futures_lite::future::pending::<()>().await
    }

    /// Reads the next request, body included.
    ///
    /// Ok(None) when the peer closed between requests or sent nothing for `idle_timeout`.
    /// `head_timeout` bounds the head from its first byte, `body_timeout` the body.
    /// `Expect: 100-continue` is answered before the body is read.
    /// After an error, answer with [`HttpError::status`] (if any) and close: where the next
    /// request would start is unknown.
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
        // Most heads arrive whole in one read; arming a timer for them would cost a wake-up each.
        let buffered = if head_complete(&self.buf, 0) {
            self.parse_head(limits)?
        } else {
            None
        };
        let head = match buffered {
            Some(head) => head,
            None => match within(limits.head_timeout, "head", self.read_head(limits)).await? {
                Some(head) => head,
                None => return Ok(None),
            },
        };
        // Set first: an error response to this request must follow its version's rules too.
        self.http10 = head.version_minor == 0;
        // RFC 9112 section 3.2: exactly one Host, or 400 (routing and DNS-rebinding checks use it).
        let hosts = head
            .fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
            .count();
        if hosts > 1 || (hosts == 0 && head.version_minor == 1) {
            return Err(HttpError::MalformedHead("missing or repeated Host"));
        }
        let framing = request_framing(&head.fields)?;
        let keep_alive = keep_alive(head.version_minor, &head.fields);
        if head.version_minor == 0 && framing == BodyFraming::Chunked {
            // RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
            return Err(HttpError::UnsupportedTransferEncoding);
        }
        if let BodyFraming::Length(n) = framing {
            if n > limits.max_body_bytes as u64 {
                return Err(HttpError::BodyTooLarge {
                    limit: limits.max_body_bytes,
                });
            }
        }
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
        let body = match framing {
            // A body already buffered whole needs no timer.
            BodyFraming::Length(n) if self.buf.len() as u64 >= n => {
                self.read_body(framing, limits).await?
            }
            BodyFraming::Empty => Bytes::new(),
            _ => within(limits.body_timeout, "body", self.read_body(framing, limits)).await?,
        };
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
        let ranges = Headers::field_ranges(self.buf.as_ptr(), req.headers);
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
    /// close the connection after `finish_stream`. `keep_alive = false` adds `Connection: close`
    /// to a chunked stream too (the caller closes after it).
    pub async fn start_stream(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        keep_alive: bool,
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(256);
        let mode = if self.http10 {
            StreamMode::UntilClose
        } else {
            StreamMode::Chunked
        };
        self.push_head(
            &mut out,
            status,
            headers,
            keep_alive && mode == StreamMode::Chunked,
        )?;
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

    /// Reads and drops whatever the client still sends, for at most `linger` or `max_bytes`,
    /// before the caller closes. Closing a socket with unread input makes the kernel answer
    /// with a reset, which can destroy an error response the client has not read yet (a
    /// slowloris client still trickling its head never sees its 408); lingering lets the
    /// answer arrive first, as Apache's and nginx's lingering close do.
    pub async fn linger(&mut self, linger: std::time::Duration, max_bytes: usize) {
        let mut scratch = [0u8; 2048];
        let mut drained = 0;
        let _ = glommio::timer::timeout(linger, async {
            while drained < max_bytes {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
            Ok(())
        })
        .await;
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

// The tests are as long as the code; they live next to it in their own file.
#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
