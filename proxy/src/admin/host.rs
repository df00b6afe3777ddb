//! Which `Host` and `Origin` the admin listener answers, so a web page cannot read it.
//!
//! A page on `http://evil.example` whose name the attacker re-points at 127.0.0.1 (DNS
//! rebinding) is, to the browser, same-origin with the admin listener: it can read
//! `/metrics`, `/stats`, `/healthz` (server names, replica URLs, errors) and call the API if it
//! ever learns the token. Such a request always carries the attacker's name in `Host`, and its
//! `Origin` (when the browser sends one) is the attacker's page. So every admin request, on
//! every route, must name the listener by:
//! - a loopback name: `localhost`, `127.0.0.1`, `[::1]`, any port;
//! - an IP address literal, any port: no page can be served from a name that *is* an address
//!   of someone else's machine, so an address in `Host` is never a rebinding (this is what lets
//!   a scraper reach an admin bound to `0.0.0.0` by `10.0.0.5:9090`);
//! - a name listed in `[proxy] admin_allowed_hosts` (how remote scrapers that use a DNS name
//!   get in);
//! - or, in a fleet, the admin address this member publishes (`host:port`, the host of its
//!   `advertise` URL when the admin listener is bound to a wildcard address): the name the
//!   operator gave the fleet to reach it by, so the other members' probes and `mcpctl --all`
//!   are answered without listing it again.
//!
//! A request without `Host` is answered (only HTTP/1.0 may omit it, and browsers never do).
//! `Origin`, when present, must pass the same rule as on `/mcp`
//! ([`ProxyConfig::origin_allowed`]: loopback origins and `[proxy] allowed_origins`).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::config::admin_host::split_host;
use crate::config::ProxyConfig;
use crate::http::Request;

use super::{stats::json_str, Response};

/// The refusal of a request whose `Host` or `Origin` the admin listener does not answer, or
/// `None` when it may be routed.
pub fn refusal(config: &ProxyConfig, request: &Request) -> Option<Response> {
    if let Some(host) = request.headers("host").find(|h| !host_allowed(config, h)) {
        return Some(Response::json(
            403,
            format!(
                r#"{{"error":{},"kind":"forbidden"}}"#,
                json_str(&format!(
                    "host {host} is not allowed on the admin listener; reach it by localhost \
                     or an IP address, or add \"{host}\" to [proxy] admin_allowed_hosts"
                ))
            ),
        ));
    }
    if let Some(origin) = request
        .headers("origin")
        .find(|o| !config.origin_allowed(o))
    {
        return Some(Response::json(
            403,
            format!(
                r#"{{"error":{},"kind":"forbidden"}}"#,
                json_str(&format!(
                    "origin {origin} is not allowed; add it to [proxy] allowed_origins"
                ))
            ),
        ));
    }
    None
}

/// Whether the admin listener answers a request whose `Host` is `host` (see the module).
pub fn host_allowed(config: &ProxyConfig, host: &str) -> bool {
    let Some((name, port)) = split_host(host.trim()) else {
        return false;
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<Ipv4Addr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<Ipv6Addr>().is_ok())
        || config.admin_allowed_hosts.iter().any(|allowed| {
            split_host(allowed).is_some_and(|(a_name, a_port)| {
                a_name.eq_ignore_ascii_case(name) && (a_port.is_empty() || a_port == port)
            })
        })
        || crate::cluster::get()
            .and_then(|c| c.identity.admin.as_deref())
            .is_some_and(|published| same_host(published, name, port))
}

/// Whether `name:port` is `published` (`host:port`), the name compared without case.
fn same_host(published: &str, name: &str, port: &str) -> bool {
    split_host(published)
        .is_some_and(|(p_name, p_port)| p_name.eq_ignore_ascii_case(name) && p_port == port)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::admin_host::check_allowed_host;

    fn config(allowed: &[&str]) -> ProxyConfig {
        ProxyConfig {
            admin_allowed_hosts: allowed
                .iter()
                .map(|h| check_allowed_host(h).expect("valid"))
                .collect(),
            ..ProxyConfig::default()
        }
    }

    #[test]
    fn loopback_names_and_addresses_are_answered_other_names_are_not() {
        let c = config(&[]);
        for host in [
            "localhost",
            "localhost:9090",
            "LOCALHOST:9090",
            "127.0.0.1:9090",
            "[::1]:9090",
            "[::1]",
            "10.0.0.5:9090",
            "0.0.0.0:9090",
            "[2001:db8::5]:9090",
        ] {
            assert!(host_allowed(&c, host), "{host} refused");
        }
        for host in [
            "evil.example",
            "evil.example:9090",
            "localhost.evil.example:9090",
            "127.0.0.1.nip.io:9090",
            "localhost:90x",
            "[::1",
            "",
            ":9090",
            "0x7f.1:9090",
        ] {
            assert!(!host_allowed(&c, host), "{host} answered");
        }
    }

    #[test]
    fn listed_hosts_are_answered_with_their_port_or_any_when_none_is_listed() {
        let c = config(&["Scrape.Internal:9091", "metrics.internal"]);
        assert!(host_allowed(&c, "scrape.internal:9091"));
        assert!(!host_allowed(&c, "scrape.internal:9092"));
        assert!(!host_allowed(&c, "scrape.internal"));
        assert!(host_allowed(&c, "METRICS.internal"));
        assert!(host_allowed(&c, "metrics.internal:9090"));
        assert!(!host_allowed(&c, "evil.metrics.internal"));
    }

    #[test]
    fn the_published_admin_address_is_matched_by_name_and_port() {
        assert!(same_host(
            "proxy-1.internal:9090",
            "PROXY-1.internal",
            "9090"
        ));
        assert!(!same_host(
            "proxy-1.internal:9090",
            "proxy-1.internal",
            "9091"
        ));
        assert!(!same_host(
            "proxy-1.internal:9090",
            "proxy-2.internal",
            "9090"
        ));
        assert!(!same_host("proxy-1.internal:9090", "proxy-1.internal", ""));
    }
}
