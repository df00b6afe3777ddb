//! Message body framing (RFC 9112 section 6): how long a body is, and a decoder for it.
//!
//! The decoder is a pure state machine over a `BytesMut` read buffer: it consumes what it can,
//! hands out body bytes as zero-copy `Bytes` slices, and leaves whatever follows the body (the next
//! pipelined message) in the buffer. The I/O loops live in `server.rs` and `client.rs`.

use bytes::{Buf, Bytes, BytesMut};

use super::{Headers, HttpError};

/// Longest chunk-size line (size, extensions, CRLF) accepted; real ones are a few bytes.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// How the end of a body is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all (204, 304, 1xx, a response to HEAD, a request without length fields).
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the peer closes (a response with neither length field).
    UntilClose,
}

/// Parses `Content-Length` fields: all must agree, digits only. `single` (requests) refuses
/// repeats and lists outright: RFC 9110 lets a recipient merge identical values, but a
/// front-end that took the first of two differently-spaced values while we took the last is
/// how requests get smuggled, and no honest client sends two.
fn content_length(headers: &Headers, single: bool) -> Result<Option<u64>, HttpError> {
    let mut found: Option<u64> = None;
    for (name, value) in headers.iter() {
        if !name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let value = std::str::from_utf8(value)
            .map_err(|_| HttpError::AmbiguousLength("content-length not ASCII"))?;
        for part in value.split(',') {
            let part = part.trim();
            // `u64::from_str` would accept a leading '+'; a peer that parses differently is how
            // requests get smuggled, so only plain digits pass.
            if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::AmbiguousLength("invalid content-length"));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| HttpError::AmbiguousLength("invalid content-length"))?;
            match found {
                Some(prev) if prev != n => {
                    return Err(HttpError::AmbiguousLength("conflicting content-length"))
                }
                Some(_) if single => {
                    return Err(HttpError::AmbiguousLength(
                        "repeated content-length; send it once",
                    ))
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Whether the transfer codings are exactly `chunked`; Err when any other coding appears.
fn transfer_encoding(headers: &Headers) -> Result<bool, HttpError> {
    let mut codings = 0;
    let mut chunked = false;
    for value in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .map(|(_, v)| v)
    {
        for coding in value.split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if coding.is_empty() {
                continue;
            }
            codings += 1;
            chunked = coding.eq_ignore_ascii_case(b"chunked");
        }
    }
    // We decode no compression, and `chunked, chunked` or `chunked` followed by anything is
    // rejected rather than guessed at.
    match (codings, chunked) {
        (0, _) => Ok(false),
        (1, true) => Ok(true),
        _ => Err(HttpError::UnsupportedTransferEncoding),
    }
}

/// What the headers declare: `Some(Chunked)`, `Some(Length(n))`, or `None` when neither
/// Content-Length nor Transfer-Encoding is present. Both together are refused: RFC 9112 lets
/// TE win, but a request that carries both is the shape of request smuggling, and a gateway
/// reusing a connection after such a response must not guess either.
fn declared_framing(headers: &Headers, request: bool) -> Result<Option<BodyFraming>, HttpError> {
    let has_te = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    let cl = content_length(headers, request)?;
    if has_te && cl.is_some() {
        return Err(HttpError::AmbiguousLength(
            "both content-length and transfer-encoding",
        ));
    }
    if has_te {
        transfer_encoding(headers)?;
        return Ok(Some(BodyFraming::Chunked));
    }
    Ok(cl.map(BodyFraming::Length))
}

/// Body framing of a request; both CL and TE together is refused (request smuggling).
pub(crate) fn request_framing(headers: &Headers) -> Result<BodyFraming, HttpError> {
    Ok(match declared_framing(headers, true)? {
        None | Some(BodyFraming::Length(0)) => BodyFraming::Empty,
        Some(framing) => framing,
    })
}

/// Body framing of a response to a request that was (or not) a HEAD.
pub(crate) fn response_framing(
    status: u16,
    head_request: bool,
    headers: &Headers,
) -> Result<BodyFraming, HttpError> {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(BodyFraming::Empty);
    }
    Ok(match declared_framing(headers, false)? {
        None => BodyFraming::UntilClose,
        Some(BodyFraming::Length(0)) => BodyFraming::Empty,
        Some(framing) => framing,
    })
}

/// What one decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes, in order.
    Data(Bytes),
    /// The buffer holds no complete piece; read more.
    NeedMore,
    /// The body has ended; the buffer now starts at the next message.
    Done,
}

/// Where the decoder is within the body.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Bytes left of the current chunk's data.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkDataEnd,
    /// In the trailer section; the payload counts its bytes so far.
    Trailers(usize),
    /// Everything until EOF.
    UntilClose,
    /// Finished.
    Done,
}

/// Incremental body decoder over a read buffer.
#[derive(Debug)]
pub(crate) struct BodyDecoder {
    /// Current position in the framing.
    state: State,
    /// Most trailer bytes accepted (they are read and dropped).
    max_trailers: usize,
}

impl BodyDecoder {
    /// A decoder for `framing`; trailers beyond `max_trailers` bytes are refused.
    pub(crate) fn new(framing: BodyFraming, max_trailers: usize) -> Self {
        let state = match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::ChunkSize,
            BodyFraming::UntilClose => State::UntilClose,
        };
        Self {
            state,
            max_trailers,
        }
    }

    /// The peer closed: fine for a close-delimited body, truncation otherwise.
    pub(crate) fn on_eof(&mut self) -> Result<(), HttpError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(HttpError::Truncated),
        }
    }

    /// Consumes framing from `buf` and returns the next piece of body, if any is complete.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, HttpError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                State::Length(left) | State::ChunkData(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let rest = left - n as u64;
                    self.state = match self.state {
                        State::Length(_) if rest == 0 => State::Done,
                        State::Length(_) => State::Length(rest),
                        _ if rest == 0 => State::ChunkDataEnd,
                        _ => State::ChunkData(rest),
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                State::ChunkSize => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkDataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(HttpError::BadChunk("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers(seen) => {
                    let room = self.max_trailers.saturating_sub(seen) + 2;
                    if buf.len() >= room && !buf[..room].contains(&b'\n') {
                        return Err(HttpError::HeadTooLarge);
                    }
                    let Some(line) = take_line(buf, room)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    // Trailer fields are read and dropped: nothing here needs them, and merging
                    // them into the head would let a peer add fields after checks ran.
                    self.state = if line.is_empty() {
                        State::Done
                    } else {
                        State::Trailers(seen + line.len() + 2)
                    };
                }
            }
        }
    }
}

/// Takes one CRLF-terminated line (without the CRLF) off `buf`; Err when no line end shows up
/// within `max` bytes or the line end is a bare LF.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, HttpError> {
    let window = &buf[..buf.len().min(max)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= max {
            Err(HttpError::BadChunk("chunk line too long"))
        } else {
            Ok(None)
        };
    };
    // A bare LF is accepted by some parsers and not others: that gap is a smuggling vector.
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(HttpError::BadChunk("line not terminated by CRLF"));
    }
    let mut line = buf.split_to(lf + 1);
    line.truncate(lf - 1);
    Ok(Some(line))
}

/// Parses `chunk-size [ BWS ; chunk-ext ]`, refusing overflow, empty sizes and stray bytes.
fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::BadChunk("chunk size is not hex"));
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        // Hex digits only, so to_digit cannot fail; checked math refuses sizes past u64.
        let d = u64::from((b as char).to_digit(16).unwrap_or(0));
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(d))
            .ok_or(HttpError::BadChunk("chunk size overflows"))?;
    }
    // Only SP and HTAB may precede ';' (BWS), and extensions hold no control bytes.
    let blank = line[digits..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let rest = &line[digits + blank..];
    let control = |b: &u8| (*b < 0x20 && *b != b'\t') || *b == 0x7f;
    if !(rest.is_empty() || rest[0] == b';') || rest.iter().any(control) {
        return Err(HttpError::BadChunk("junk after chunk size"));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed `step` bytes at a time; returns the body and what is left over.
    fn decode_all(
        framing: BodyFraming,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
        let mut dec = BodyDecoder::new(framing, 1024);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Done => return Ok((body, buf.to_vec())),
                Decoded::NeedMore if fed == input.len() => {
                    dec.on_eof()?;
                    return Ok((body, buf.to_vec()));
                }
                Decoded::NeedMore => {
                    let n = step.min(input.len() - fed);
                    buf.extend_from_slice(&input[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers_bytewise() {
        let input =
            b"4;name=value\r\nWiki\r\n5 ; x\r\npedia\r\n0\r\nExpires: never\r\nX: y\r\n\r\nNEXT";
        for step in [1, 3, input.len()] {
            let (body, rest) = decode_all(BodyFraming::Chunked, input, step).unwrap();
            assert_eq!(body, b"Wikipedia");
            // Bytes of a next message may or may not have been fed yet; whatever was is kept.
            assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?}");
        }
    }

    #[test]
    fn chunked_errors() {
        let cases: &[&[u8]] = &[
            b"zz\r\n",
            b"\r\n",
            b"10000000000000000\r\n",
            b"4\r\nWikiXX",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4 junk\r\nWiki\r\n",
            b"4 \r;x\r\nWiki\r\n",
            b"4;a\x01\r\nWiki\r\n",
            b"-1\r\n",
        ];
        for case in cases {
            let err = decode_all(BodyFraming::Chunked, case, 1).unwrap_err();
            assert!(matches!(err, HttpError::BadChunk(_)), "{case:?}: {err:?}");
        }
        let long = [b'1'; MAX_CHUNK_LINE + 1];
        assert!(matches!(
            decode_all(BodyFraming::Chunked, &long, 64),
            Err(HttpError::BadChunk(_))
        ));
        assert!(matches!(
            decode_all(BodyFraming::Chunked, b"ffffffffffffffff\r\n", 1),
            Err(HttpError::Truncated)
        ));
    }

    #[test]
    fn oversized_trailers() {
        let mut input = b"0\r\n".to_vec();
        input.extend(std::iter::repeat_n(b"X-Pad: 0123456789\r\n".as_slice(), 100).flatten());
        assert!(matches!(
            decode_all(BodyFraming::Chunked, &input, 7),
            Err(HttpError::HeadTooLarge)
        ));
    }

    #[test]
    fn length_and_truncation() {
        let (body, rest) = decode_all(BodyFraming::Length(5), b"hello world", 2).unwrap();
        assert_eq!(body, b"hello");
        assert!(b" world".starts_with(&rest));
        assert!(matches!(
            decode_all(BodyFraming::Length(5), b"hel", 1),
            Err(HttpError::Truncated)
        ));
        assert!(matches!(
            decode_all(BodyFraming::Chunked, b"5\r\nhel", 1),
            Err(HttpError::Truncated)
        ));
        let (body, _) = decode_all(BodyFraming::UntilClose, b"all of it", 4).unwrap();
        assert_eq!(body, b"all of it");
        assert_eq!(decode_all(BodyFraming::Empty, b"x", 1).unwrap().0, b"");
    }

    fn headers(raw: &[u8]) -> Headers {
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let head = Bytes::copy_from_slice(raw);
        let mut req = httparse::Request::new(&mut fields);
        req.parse(&head).unwrap();
        let ranges = Headers::field_ranges(head.as_ptr(), req.headers);
        Headers {
            head: head.clone(),
            fields: ranges,
        }
    }

    #[test]
    fn request_framing_rules() {
        let f = |raw: &str| {
            request_framing(&headers(format!("POST / HTTP/1.1\r\n{raw}\r\n").as_bytes()))
        };
        assert_eq!(f("").unwrap(), BodyFraming::Empty);
        assert_eq!(
            f("Content-Length: 12\r\n").unwrap(),
            BodyFraming::Length(12)
        );
        assert_eq!(
            f("Transfer-Encoding: Chunked\r\n").unwrap(),
            BodyFraming::Chunked
        );
        for bad in [
            "Content-Length: 12\r\nContent-Length: 13\r\n",
            "Content-Length: 12, 13\r\n",
            "Content-Length: +12\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: 99999999999999999999\r\n",
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            "Content-Length: 12\r\nContent-Length: 12\r\n",
            "Content-Length: 12, 12\r\n",
            "Content-Length: 12 , 12\r\n",
            "Content-Length: \r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 1 2\r\n",
        ] {
            assert!(
                matches!(f(bad), Err(HttpError::AmbiguousLength(_))),
                "{bad}"
            );
        }
        for bad in [
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ] {
            assert!(
                matches!(f(bad), Err(HttpError::UnsupportedTransferEncoding)),
                "{bad}"
            );
        }
    }

    #[test]
    fn response_framing_rules() {
        let h = headers(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(
            response_framing(200, false, &h).unwrap(),
            BodyFraming::Length(5)
        );
        assert_eq!(response_framing(200, true, &h).unwrap(), BodyFraming::Empty);
        assert_eq!(
            response_framing(204, false, &h).unwrap(),
            BodyFraming::Empty
        );
        let none = headers(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            response_framing(200, false, &none).unwrap(),
            BodyFraming::UntilClose
        );
    }
}
