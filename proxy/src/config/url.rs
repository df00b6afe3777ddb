//! An upstream server's `http://` or `https://` URL, split for the HTTP client.

use std::fmt;
use std::net::Ipv6Addr;

/// An upstream `http://` or `https://` URL, split for the HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Whether to speak TLS (`https`).
    pub tls: bool,
    /// Host to connect to: a name or an IP address, IPv6 without brackets.
    pub host: String,
    /// Port to connect to; 80 or 443 when the URL has none.
    pub port: u16,
    /// Path and query for the request line; `/` when the URL has none.
    pub path: String,
    /// `host[:port]` as written in the URL, for the `Host` header.
    pub authority: String,
}

impl UpstreamUrl {
    /// Parses an upstream URL; the error says what is wrong, to be wrapped with a location.
    pub fn parse(url: &str) -> Result<UpstreamUrl, String> {
        if let Some(bad) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "url \"{url}\" contains {bad:?}; percent-encode it (space is %20)"
            ));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "url \"{url}\" has no scheme; write it as http://host:port/path or https://..."
            ));
        };
        let tls = if scheme.eq_ignore_ascii_case("http") {
            false
        } else if scheme.eq_ignore_ascii_case("https") {
            true
        } else {
            return Err(format!(
                "url \"{url}\" has unsupported scheme \"{scheme}\"; use http:// or https://"
            ));
        };
        if url.contains('#') {
            return Err(format!(
                "url \"{url}\" has a fragment (#...), which is never sent; remove it"
            ));
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(format!(
                "url \"{url}\" has credentials before '@'; remove them and set \
                 headers = {{ Authorization = \"...\" }} instead"
            ));
        }
        let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((v6, after)) = bracketed.split_once(']') else {
                return Err(format!("url \"{url}\" has an unclosed '[' in its host"));
            };
            if v6.parse::<Ipv6Addr>().is_err() {
                return Err(format!(
                    "url \"{url}\" has an invalid IPv6 address \"{v6}\"; e.g. http://[::1]:3000/mcp"
                ));
            }
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => {
                    return Err(format!(
                        "url \"{url}\" has unexpected text \"{after}\" after the IPv6 address"
                    ))
                }
            };
            (v6, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!(
                "url \"{url}\" has no host; e.g. http://127.0.0.1:3001/mcp"
            ));
        }
        if !authority.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(format!(
                "url \"{url}\" has an invalid host \"{host}\"; use a DNS name or an IP address"
            ));
        }
        let port = match port_text {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                        "url \"{url}\" has an invalid port \"{p}\"; use a number from 1 to 65535"
                    ))
                }
            },
        };
        let path = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            // A query without a path is valid in a URL but not in a request line.
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(UpstreamUrl {
            tls,
            host: host.to_owned(),
            port,
            path,
            authority: authority.to_owned(),
        })
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let u = UpstreamUrl::parse("http://127.0.0.1:3001/mcp").expect("valid");
        assert_eq!(
            u,
            UpstreamUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 3001,
                path: "/mcp".into(),
                authority: "127.0.0.1:3001".into(),
            }
        );
        let u = UpstreamUrl::parse("https://example.com").expect("valid");
        assert!(u.tls);
        assert_eq!(
            (u.port, u.path.as_str(), u.authority.as_str()),
            (443, "/", "example.com")
        );
        let u = UpstreamUrl::parse("HTTP://Example.com?x=1").expect("valid");
        assert!(!u.tls);
        assert_eq!((u.port, u.path.as_str()), (80, "/?x=1"));
        let u = UpstreamUrl::parse("http://[::1]:3000/mcp").expect("valid");
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 3000);
        assert_eq!(u.authority, "[::1]:3000");
        assert_eq!(u.to_string(), "http://[::1]:3000/mcp");
        let u = UpstreamUrl::parse("https://[2001:db8::1]/").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("2001:db8::1", 443));
    }

    #[test]
    fn url_rejections() {
        for (bad, fragment) in [
            ("ftp://h/", "unsupported scheme"),
            ("h:80/mcp", "no scheme"),
            ("http://", "no host"),
            ("http://:80/", "no host"),
            ("http://h:/", "invalid port"),
            ("http://h:0/", "invalid port"),
            ("http://h:65536/", "invalid port"),
            ("http://h:+80/", "invalid port"),
            ("http://[::1/", "unclosed"),
            ("http://[zz]/", "invalid IPv6"),
            ("http://[::1]x/", "unexpected text"),
            ("http://u:p@h/", "credentials"),
            ("http://h/a b", "percent-encode"),
            ("http://h/#top", "fragment"),
            ("http://h%41/", "invalid host"),
        ] {
            match UpstreamUrl::parse(bad) {
                Ok(u) => panic!("{bad:?} accepted as {u:?}"),
                Err(m) => assert!(m.contains(fragment), "{bad:?}: {m}"),
            }
        }
    }
}
