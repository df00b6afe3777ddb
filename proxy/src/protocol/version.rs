//! Protocol revisions the proxy speaks downstream, and how one is chosen.

/// The revisions of the stateful era, oldest first.
pub const SUPPORTED: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];

/// The newest revision the proxy speaks; offered when a client asks for one it does not know.
pub const LATEST: &str = "2025-11-25";

/// What `MCP-Protocol-Version` means when a request carries none (basic/transports.mdx).
pub const ASSUMED_WHEN_ABSENT: &str = "2025-03-26";

/// Every revision served, both eras, oldest first: the stateful ones through `initialize`,
/// 2026-07-28 per request (`protocol::stateless`). The era is chosen per request, so old and
/// new clients share one endpoint.
pub const ALL: [&str; 4] = [
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    super::stateless::VERSION,
];

/// True when `version` is one the proxy can serve, in either era.
pub fn is_supported(version: &str) -> bool {
    ALL.contains(&version)
}

/// The answer to a client's `initialize`: its own version when supported, else the latest.
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|v| SUPPORTED.iter().copied().find(|s| *s == v))
        .unwrap_or(LATEST)
}

/// True from the revision that added the SSE priming event (an id with empty data) until
/// 2026-07-28, which removed resumption.
pub fn primes_streams(version: &str) -> bool {
    version >= "2025-11-25" && !super::stateless::is_stateless_version(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_echoes_known_and_falls_back_to_latest() {
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("2026-07-28")), LATEST);
        assert_eq!(negotiate(Some("1999-01-01")), LATEST);
        assert_eq!(negotiate(None), LATEST);
    }

    #[test]
    fn both_eras_are_supported_but_initialize_stays_stateful() {
        assert!(is_supported("2025-03-26"));
        assert!(is_supported("2026-07-28"));
        assert!(!is_supported("2026-01-01"));
        assert!(primes_streams("2025-11-25") && !primes_streams("2025-06-18"));
        assert!(!primes_streams("2026-07-28"));
    }
}
