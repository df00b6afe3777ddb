//! One MCP client connection over Streamable HTTP (HTTP/1.1 keep-alive, one request at a time).
//!
//! A [`Session`] says how requests present themselves: an initialized one sends its
//! `Mcp-Session-Id` and negotiated version, [`Session::stateless`] sends the 2026-07-28 version
//! and each request's [`Stamp`] headers instead.
//!
//! [`Conn::post`] sends one JSON-RPC message and reads the answer whichever way the server
//! chose to send it: `application/json`, or `text/event-stream` read event by event until the
//! response carrying the request's id. Every failure is sorted into a [`Failure`] kind, which is
//! what the report counts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use glommio::net::TcpStream;
use mcp_proxy::http::{ClientConn, HttpError, Limits, SseParser};
use mcp_proxy::protocol::jsonrpc::{self, Id, Kind};
use simd_json::prelude::*;

use crate::era::{Stamp, STATELESS_VERSION};

/// The protocol revision asked for at initialize.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// Revisions accepted from a server's initialize answer.
const KNOWN_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

/// What a Streamable HTTP client sends in `Accept`.
const ACCEPT: &str = "application/json, text/event-stream";

/// Largest answer body (or SSE event) read into memory.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Where to send requests: parsed from an `http://host:port/path` URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolved socket address.
    pub addr: SocketAddr,
    /// `host:port` as written, for the `Host` field.
    pub host: String,
    /// The request path, e.g. `/mcp`.
    pub path: String,
}

/// Why a URL cannot be used as a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not `http://host:port/path` (TLS is not supported by the load generator).
    #[error("unsupported URL {0:?}: expected http://HOST:PORT/PATH")]
    Syntax(String),
    /// The host did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The `host:port` part.
        host: String,
        /// The resolver error.
        source: std::io::Error,
    },
}

impl Target {
    /// Parses and resolves `url`.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| TargetError::Syntax(url.to_owned()))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host.is_empty() {
            return Err(TargetError::Syntax(url.to_owned()));
        }
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|source| TargetError::Resolve {
                host: host.to_owned(),
                source,
            })?
            .next()
            .ok_or_else(|| TargetError::Syntax(url.to_owned()))?;
        Ok(Target {
            addr,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Why one request did not get a successful answer: the kinds the report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// An HTTP status other than 200/202.
    Http(u16),
    /// A JSON-RPC error response, by code.
    Rpc(i64),
    /// A `tools/call` result with `isError: true`.
    ToolError,
    /// A 2026-07-28 `input_required` result: the server asks for input (an elicitation, a
    /// sampling) before it finishes, and the mix has no follow-up request to give it.
    InputRequired,
    /// No complete answer within the request timeout.
    Timeout,
    /// Connect failed, or the connection was reset or closed before the answer was complete.
    Connection,
    /// An answer that is not the expected JSON-RPC response (bad JSON, wrong id, no response).
    Protocol,
}

impl Failure {
    /// A short, stable key for the JSON report: `http_500`, `rpc_-32603`, `timeout`, ...
    pub fn key(&self) -> String {
        match self {
            Failure::Http(s) => format!("http_{s}"),
            Failure::Rpc(c) => format!("rpc_{c}"),
            Failure::ToolError => "tool_error".into(),
            Failure::InputRequired => "input_required".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Connection => "connection".into(),
            Failure::Protocol => "protocol".into(),
        }
    }
}

impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Timeout(_) => Failure::Timeout,
            HttpError::Truncated | HttpError::Io(_) => Failure::Connection,
            _ => Failure::Protocol,
        }
    }
}

/// What a successful exchange carried back.
#[derive(Debug, Default)]
pub struct Reply {
    /// `Mcp-Session-Id` of the answer, if any (set on initialize answers).
    pub session_id: Option<String>,
    /// `result.protocolVersion`, if the result had one (initialize answers).
    pub protocol_version: Option<String>,
}

/// An initialized MCP session, as the client must present it on later requests.
#[derive(Debug, Clone)]
pub struct Session {
    /// The `Mcp-Session-Id`; None for a server that keeps no sessions, and in 2026-07-28.
    pub id: Option<String>,
    /// The negotiated protocol revision, sent as `MCP-Protocol-Version`.
    pub version: &'static str,
    /// Which of the run's clients sends on it (2026-07-28: the identity in `_meta`).
    pub client: usize,
}

impl Session {
    /// What 2026-07-28 client `client` presents: the version and no session, with no
    /// handshake (its identity rides in each body's `_meta`).
    pub fn stateless(client: usize) -> Session {
        Session {
            id: None,
            version: STATELESS_VERSION,
            client,
        }
    }

    /// Whether requests go out in the 2026-07-28 era (no session to renew when refused).
    pub fn is_stateless(&self) -> bool {
        self.version == STATELESS_VERSION
    }
}

/// One keep-alive connection to the target.
pub struct Conn {
    /// The HTTP/1.1 client side.
    http: ClientConn<TcpStream>,
    /// Bounds on what the server may send.
    limits: Limits,
    /// What the last failed answer said (its JSON-RPC error message, tool error text or HTTP
    /// body), cut to [`SAMPLE_CHARS`]; taken by [`Conn::take_error`].
    last_error: Option<String>,
    /// Whether to keep the body of the next successful answer (for [`Conn::take_answer`]).
    keep_answer: bool,
    /// The kept answer.
    answer: Option<Vec<u8>>,
}

/// Longest error message kept as a sample.
pub const SAMPLE_CHARS: usize = 300;

impl Conn {
    /// Connects, with `timeout` bounding both the connect and every response head.
    pub async fn open(target: &Target, timeout: Duration) -> Result<Conn, Failure> {
        let stream = TcpStream::connect_timeout(target.addr, timeout)
            .await
            .map_err(|_| Failure::Connection)?;
        // Small requests and answers: Nagle would add its delay to every exchange.
        stream.set_nodelay(true).map_err(|_| Failure::Connection)?;
        let limits = Limits {
            head_timeout: timeout,
            max_body_bytes: MAX_ANSWER,
            ..Limits::default()
        };
        Ok(Conn {
            http: ClientConn::new(stream),
            limits,
            last_error: None,
            keep_answer: false,
            answer: None,
        })
    }

    /// What the last failed answer said, if it said anything.
    pub fn take_error(&mut self) -> Option<String> {
        self.last_error.take()
    }

    /// Keeps the next answer's body, for [`Conn::take_answer`].
    pub fn keep_next_answer(&mut self) {
        self.keep_answer = true;
        self.answer = None;
    }

    /// The body of the answer kept after [`Conn::keep_next_answer`].
    pub fn take_answer(&mut self) -> Option<Vec<u8>> {
        self.answer.take()
    }

    /// Whether another request may be sent on this connection.
    pub fn reusable(&self) -> bool {
        self.http.reusable()
    }

    /// POSTs one message; `id` is the request id to wait for (None for a notification, which
    /// must get 202). `stamp` gives the 2026-07-28 headers that mirror the body. The answer is
    /// judged: a JSON-RPC error or a tool error is a [`Failure`].
    pub async fn post(
        &mut self,
        target: &Target,
        session: Option<&Session>,
        stamp: Option<&Stamp>,
        body: &[u8],
        id: Option<u64>,
    ) -> Result<Reply, Failure> {
        let mut headers: [(&str, &str); 6] = [
            ("Content-Type", "application/json"),
            ("Accept", ACCEPT),
            ("", ""),
            ("", ""),
            ("", ""),
            ("", ""),
        ];
        let mut n = 2;
        if let Some(s) = session {
            headers[n] = ("MCP-Protocol-Version", s.version);
            n += 1;
            if let Some(sid) = &s.id {
                headers[n] = ("Mcp-Session-Id", sid);
                n += 1;
            }
        }
        if let Some(stamp) = stamp {
            headers[n] = ("Mcp-Method", &stamp.method);
            n += 1;
            if let Some(name) = &stamp.name {
                headers[n] = ("Mcp-Name", name);
                n += 1;
            }
        }
        self.http
            .send(
                "POST",
                &target.host,
                &target.path,
                &headers[..n],
                Some(body),
            )
            .await
            .map_err(|_| Failure::Connection)?;
        let head = self.http.read_response_head(&self.limits).await?;
        let session_id = head.header("mcp-session-id").map(str::to_owned);
        let is_sse = head
            .header("content-type")
            .is_some_and(|c| c.trim_start().starts_with("text/event-stream"));
        let status = head.status;
        if status != 200 {
            // Read the body to its end so the connection stays usable after an error status.
            let text = self.http.body(&head).read_to_end(MAX_ANSWER).await?;
            if status != 202 {
                self.last_error = Some(sample(&String::from_utf8_lossy(&text)));
            }
            return match (status, id) {
                (202, None) => Ok(Reply {
                    session_id,
                    protocol_version: None,
                }),
                _ => Err(Failure::Http(status)),
            };
        }
        let Some(id) = id else {
            self.http.body(&head).read_to_end(MAX_ANSWER).await?;
            return Ok(Reply {
                session_id,
                protocol_version: None,
            });
        };
        let keep = std::mem::take(&mut self.keep_answer);
        let mut kept = None;
        let mut said = None;
        let verdict = if is_sse {
            let mut body = self.http.body(&head);
            let mut parser = SseParser::new(MAX_ANSWER);
            let mut verdict = None;
            while let Some(piece) = body.next_chunk().await? {
                // Events after the answer are still parsed so the stream is read to its end.
                parser.push(&piece);
                while let Some(event) = parser.next_event()? {
                    if verdict.is_none() && !event.data.is_empty() {
                        let mut data = event.data.into_bytes();
                        if keep {
                            kept = Some(data.clone());
                        }
                        verdict = judge(&mut data, id, &mut said);
                    }
                }
            }
            verdict.unwrap_or(Err(Failure::Protocol))
        } else {
            let bytes = self.http.body(&head).read_to_end(MAX_ANSWER).await?;
            if keep {
                kept = Some(bytes.to_vec());
            }
            judge(&mut bytes.to_vec(), id, &mut said).unwrap_or(Err(Failure::Protocol))
        };
        self.answer = kept;
        if verdict.is_err() {
            self.last_error = said;
        }
        verdict.map(|protocol_version| Reply {
            session_id,
            protocol_version,
        })
    }
}

/// `text` cut to [`SAMPLE_CHARS`] characters, on one line.
fn sample(text: &str) -> String {
    let one_line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SAMPLE_CHARS + 1)
        .collect();
    if one_line.chars().count() > SAMPLE_CHARS {
        let cut: String = one_line.chars().take(SAMPLE_CHARS).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}

/// Judges one message: None when it is not the response to `want`; otherwise Ok with the
/// result's `protocolVersion` (if any), or the failure it reports, with what the answer said
/// about it in `said`.
fn judge(
    buf: &mut [u8],
    want: u64,
    said: &mut Option<String>,
) -> Option<Result<Option<String>, Failure>> {
    let Ok(msg) = jsonrpc::parse(buf) else {
        *said = Some("the answer is not a JSON-RPC message".into());
        return Some(Err(Failure::Protocol));
    };
    match jsonrpc::classify(&msg) {
        Ok(Kind::Response {
            id: Some(Id::Num(n)),
        }) if u64::try_from(n) == Ok(want) => {}
        // Server-to-client requests and notifications may precede the answer on a stream.
        Ok(_) => return None,
        Err(_) => return Some(Err(Failure::Protocol)),
    }
    if let Some(err) = msg.get("error") {
        let code = err.get_i64("code").unwrap_or(0);
        *said = err.get_str("message").map(sample);
        return Some(Err(Failure::Rpc(code)));
    }
    if mcp_proxy::protocol::stateless::is_input_required(&msg) {
        *said = Some(
            "the server asked for input the mix cannot give; call a tool that needs none".into(),
        );
        return Some(Err(Failure::InputRequired));
    }
    let result = msg.get("result")?;
    if result.get_bool("isError") == Some(true) {
        *said = result
            .get("content")
            .and_then(|c| c.as_array())
            .and_then(|c| c.iter().find_map(|item| item.get_str("text")))
            .map(sample);
        return Some(Err(Failure::ToolError));
    }
    Some(Ok(result.get_str("protocolVersion").map(str::to_owned)))
}

/// Runs `initialize` (request id `id`) and `notifications/initialized` on `conn`.
pub async fn initialize(conn: &mut Conn, target: &Target, id: u64) -> Result<Session, Failure> {
    let body = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"initialize\",\"params\":{{\
         \"protocolVersion\":\"{PROTOCOL_VERSION}\",\"capabilities\":{{}},\
         \"clientInfo\":{{\"name\":\"mcp-loadgen\",\"version\":\"{}\"}}}}}}",
        env!("CARGO_PKG_VERSION")
    );
    let reply = conn
        .post(target, None, None, body.as_bytes(), Some(id))
        .await?;
    let version = reply
        .protocol_version
        .as_deref()
        .and_then(|v| KNOWN_VERSIONS.iter().find(|k| **k == v))
        .copied()
        .ok_or(Failure::Protocol)?;
    let session = Session {
        id: reply.session_id,
        version,
        client: 0,
    };
    let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    conn.post(target, Some(&session), None, note, None).await?;
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/mcp").unwrap();
        assert_eq!(
            (t.addr.port(), t.host.as_str(), t.path.as_str()),
            (8080, "127.0.0.1:8080", "/mcp")
        );
        assert!(Target::parse("https://127.0.0.1:1/mcp").is_err());
        assert!(Target::parse("http:///mcp").is_err());
    }

    #[test]
    fn judges_answers() {
        let j = |s: &str, id| judge(&mut s.as_bytes().to_vec(), id, &mut None);
        assert_eq!(
            j(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#, 3),
            Some(Ok(None))
        );
        assert_eq!(j(r#"{"jsonrpc":"2.0","id":4,"result":{}}"#, 3), None);
        assert_eq!(
            j(
                r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"x"}}"#,
                3
            ),
            Some(Err(Failure::Rpc(-32603)))
        );
        assert_eq!(
            j(
                r#"{"jsonrpc":"2.0","id":3,"result":{"content":[],"isError":true}}"#,
                3
            ),
            Some(Err(Failure::ToolError))
        );
        // Unfinished: the call waits for input no request of the mix gives.
        assert_eq!(
            j(
                r#"{"jsonrpc":"2.0","id":3,"result":{"resultType":"input_required","inputRequests":{}}}"#,
                3
            ),
            Some(Err(Failure::InputRequired))
        );
        assert_eq!(Failure::InputRequired.key(), "input_required");
        assert_eq!(
            j(
                r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18"}}"#,
                1
            ),
            Some(Ok(Some("2025-06-18".into())))
        );
        assert_eq!(
            j(r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#, 1),
            None
        );
        assert_eq!(j("not json", 1), Some(Err(Failure::Protocol)));
        assert_eq!(Failure::Rpc(-32603).key(), "rpc_-32603");
        assert_eq!(Failure::Http(404).key(), "http_404");
    }
}
