//! `Host` values as the admin listener matches them, and the `[proxy] admin_allowed_hosts`
//! entries that list the names it answers besides loopback and IP addresses (`admin::host`
//! applies them to each request).

/// `host[:port]` or `[v6][:port]` split into the name and the port (empty when none); `None`
/// when the port is not digits.
pub fn split_host(host: &str) -> Option<(&str, &str)> {
    let name_end = if host.starts_with('[') {
        host.find(']')? + 1
    } else {
        host.find(':').unwrap_or(host.len())
    };
    let (name, rest) = host.split_at(name_end);
    let port = match rest.strip_prefix(':') {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p,
        Some(_) => return None,
        None if rest.is_empty() => "",
        None => return None,
    };
    (!name.is_empty()).then_some((name, port))
}

/// Checks one `[proxy] admin_allowed_hosts` entry: a `Host` value, a name with an optional
/// port (without one, any port matches). Returns it lower-cased.
pub fn check_allowed_host(entry: &str) -> Result<String, String> {
    let lower = entry.trim().to_ascii_lowercase();
    let shaped = split_host(&lower).is_some_and(|(name, _)| {
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
    });
    if shaped {
        Ok(lower)
    } else {
        Err(format!(
            "admin allowed host \"{entry}\" is not a host; write the name (and port) scrapers \
             put in Host, e.g. \"mcp-proxy.internal:9090\" (no scheme, no path)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_allowed_hosts_are_refused_with_an_example() {
        for bad in [
            "http://x.internal",
            "x.internal/metrics",
            "x:port",
            "",
            "a b",
        ] {
            let e = check_allowed_host(bad).expect_err(bad);
            assert!(e.contains("mcp-proxy.internal:9090"), "{e}");
        }
    }
}
