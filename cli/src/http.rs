//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`: one request per connection,
//! `Content-Length` or chunked bodies. Enough for the admin API and a short MCP exchange, and
//! no async runtime to carry in a command-line tool.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::fail::Failure;

/// An `http://host:port/path` URL.
#[derive(Clone, Debug)]
pub struct Url {
    /// `host:port`.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses `text`; only plain `http` is supported (the admin port is loopback).
    pub fn parse(text: &str) -> Result<Url, Failure> {
        let rest = text.strip_prefix("http://").ok_or_else(|| {
            Failure::usage(format!(
                "\"{text}\" is not an http:// URL; write e.g. http://127.0.0.1:8085"
            ))
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(Failure::usage(format!("\"{text}\" names no host")));
        }
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Url {
            authority,
            path: path.trim_end_matches('/').to_owned(),
        })
    }

    /// This URL with `path` appended.
    pub fn join(&self, path: &str) -> Url {
        Url {
            authority: self.authority.clone(),
            path: format!("{}{path}", self.path),
        }
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request and reads the whole response.
pub fn request(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, Failure> {
    let unreachable = |e: std::io::Error| Failure::unreachable(&url.authority, e);
    let addrs: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&url.authority)
        .map_err(unreachable)?
        .collect();
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = stream
        .ok_or_else(|| unreachable(last.unwrap_or_else(|| std::io::Error::other("no address"))))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: mcpctl/{}\r\n",
        if url.path.is_empty() { "/" } else { &url.path },
        url.authority,
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(unreachable)?;
    read_response(stream).map_err(|e| {
        use std::io::ErrorKind::*;
        // A proxy that dies or stalls mid-answer is as unreachable as one that is not there.
        match e.kind() {
            ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut | WouldBlock => {
                unreachable(e)
            }
            _ => Failure::error(format!("bad answer from {}: {e}", url.authority)),
        }
    })
}

fn read_response(stream: TcpStream) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("the head ended early"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if status != 204 && status != 304 {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_port_and_path() {
        let u = Url::parse("http://127.0.0.1:8085/").expect("url");
        assert_eq!(u.authority, "127.0.0.1:8085");
        assert_eq!(u.join("/api/v1/servers").path, "/api/v1/servers");
        let u = Url::parse("http://localhost/mcp").expect("url");
        assert_eq!(u.authority, "localhost:80");
        assert_eq!(u.path, "/mcp");
        assert!(Url::parse("https://x").is_err());
        assert!(Url::parse("127.0.0.1:8085").is_err());
    }
}
