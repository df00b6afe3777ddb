//! The door of `/mcp`: each request's credentials checked before anything else reads it, and
//! the HTTP answer when auth refuses a request.
//!
//! Auth decides (`crate::auth`, typed [`Denial`]s: at the door, when a session is opened
//! (`auth::open`), and when a session's owner is checked (`mcp::session::owner`)); this is the
//! one place a refusal becomes a status, its headers and a JSON-RPC error body, and where it
//! is counted.

use crate::auth::{self, Denial, Identity};
use crate::endpoint::http::Reply;
use crate::http::Request;
use crate::protocol::jsonrpc::{self, code};

/// Authenticates `request` and takes a token from its client's bucket on this shard.
/// `Ok(None)` when `[auth]` is off.
pub fn authenticate(request: &Request) -> Result<Option<Identity>, Denial> {
    auth::check_request(|| request.header("authorization"))
}

/// The HTTP answer to `denial`, counted in `mcp_proxy_auth_denied_total`.
pub fn refusal(denial: Denial) -> Reply {
    denial.count();
    let full = |status, headers: Vec<(&'static str, String)>, message: &str| {
        let mut headers = headers;
        headers.push(("Content-Type", "application/json".into()));
        Reply::Full {
            status,
            headers,
            body: jsonrpc::error_body(None, code::INVALID_REQUEST, message),
        }
    };
    // With [auth.oauth], every challenge points to the Protected Resource Metadata, where an
    // OAuth client finds the authorization server (MCP authorization, RFC 9728 section 5.1).
    let needed = match &denial {
        Denial::InsufficientScope { scope, .. } => Some(scope.as_str()),
        _ => None,
    };
    let resource = crate::auth::oauth::challenge(needed)
        .map(|params| format!(", {params}"))
        .unwrap_or_default();
    match denial {
        Denial::Missing => full(
            401,
            vec![("WWW-Authenticate", format!(r#"Bearer realm="mcp-proxy"{resource}"#))],
            "missing credentials: send Authorization: Bearer <API key or JWT>",
        ),
        Denial::Invalid { message, .. } => full(
            401,
            vec![("WWW-Authenticate", format!(r#"Bearer realm="mcp-proxy", error="invalid_token", error_description="{}"{resource}"#, message.replace(['"', '\\'], "'")))],
            &message,
        ),
        Denial::Forbidden { message, .. } => full(
            403,
            vec![("WWW-Authenticate", format!(r#"Bearer realm="mcp-proxy", error="insufficient_scope"{resource}"#))],
            &message,
        ),
        Denial::InsufficientScope { scope, message, .. } => {
            let scoped = if resource.is_empty() {
                format!(r#", scope="{scope}""#)
            } else {
                resource
            };
            full(
                403,
                vec![("WWW-Authenticate", format!(r#"Bearer realm="mcp-proxy", error="insufficient_scope"{scoped}"#))],
                &message,
            )
        }
        Denial::RateLimited { client, retry_after } => {
            // Retry-After is whole seconds; round up so a client that waits gets a token.
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            full(
                429,
                vec![("Retry-After", secs.to_string())],
                &format!("rate limit of client \"{client}\" exceeded; retry after {secs} s or ask for a higher rate_limit"),
            )
        }
        Denial::TooManySessions { client, max } => full(
            429,
            Vec::new(),
            &format!("client \"{client}\" already has {max} open sessions (max_sessions = {max}); end one with DELETE or ask for a higher limit"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parts(reply: Reply) -> (u16, Vec<(&'static str, String)>, String) {
        match reply {
            Reply::Full {
                status,
                headers,
                body,
            } => (status, headers, String::from_utf8_lossy(&body).into_owned()),
            _ => panic!("a refusal is a full answer"),
        }
    }

    fn header(headers: &[(&'static str, String)], name: &str) -> Option<String> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn refusals_answer_with_their_status_a_bearer_challenge_and_a_json_rpc_error() {
        let (status, headers, body) = parts(refusal(Denial::Missing));
        assert_eq!(status, 401);
        assert_eq!(
            header(&headers, "www-authenticate").as_deref(),
            Some(r#"Bearer realm="mcp-proxy""#)
        );
        assert_eq!(
            header(&headers, "content-type").as_deref(),
            Some("application/json")
        );
        assert!(body.contains("missing credentials"), "{body}");
        assert!(body.contains(&code::INVALID_REQUEST.to_string()), "{body}");

        let (status, headers, _) = parts(refusal(Denial::Invalid {
            reason: "expired",
            message: r#"token "x" expired"#.into(),
        }));
        assert_eq!(status, 401);
        assert_eq!(
            header(&headers, "www-authenticate").as_deref(),
            Some(
                r#"Bearer realm="mcp-proxy", error="invalid_token", error_description="token 'x' expired""#
            ),
            "the description cannot break out of its quotes"
        );

        let (status, headers, _) = parts(refusal(Denial::Forbidden {
            client: Some("a".into()),
            reason: "session_mismatch",
            message: "other credentials".into(),
        }));
        assert_eq!(status, 403);
        assert!(header(&headers, "www-authenticate")
            .is_some_and(|v| v.contains(r#"error="insufficient_scope""#)));

        let (status, _, body) = parts(refusal(Denial::TooManySessions {
            client: "a".into(),
            max: 2,
        }));
        assert_eq!(status, 429);
        assert!(body.contains("max_sessions = 2"), "{body}");
    }

    #[test]
    fn a_rate_limited_client_is_told_whole_seconds_rounded_up() {
        for (wait, secs) in [(1, "1"), (1000, "1"), (1001, "2"), (2500, "3")] {
            let (status, headers, _) = parts(refusal(Denial::RateLimited {
                client: "a".into(),
                retry_after: Duration::from_millis(wait),
            }));
            assert_eq!(status, 429);
            assert_eq!(
                header(&headers, "retry-after").as_deref(),
                Some(secs),
                "{wait} ms"
            );
        }
    }
}
