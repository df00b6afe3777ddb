//! Why an exchange with an upstream failed, and whether repeating it elsewhere is safe.

use std::time::Duration;

/// Why an exchange with an upstream failed, and whether repeating it elsewhere is safe.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made: the request never left the proxy.
    #[error("cannot connect to upstream {server} at {addr}: {source}")]
    Connect {
        /// The server's configured name.
        server: String,
        /// host:port tried.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The connection broke or timed out after the request was written.
    #[error("upstream {server} failed mid-exchange: {detail}")]
    Exchange {
        /// The server's configured name.
        server: String,
        /// What went wrong.
        detail: String,
    },
    /// The upstream did not answer within its timeout.
    #[error("upstream {server} did not answer within {timeout:?}")]
    Timeout {
        /// The server's configured name.
        server: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The upstream no longer knows the session (404, or 400 naming the session).
    #[error("upstream {server} lost the session")]
    SessionLost {
        /// The server's configured name.
        server: String,
    },
    /// The upstream answered with an HTTP error status.
    #[error("upstream {server} answered HTTP {status}: {body}")]
    Status {
        /// The server's configured name.
        server: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body, for the error message.
        body: String,
        /// The pause its `Retry-After` asked for (503, 429), if any.
        pause: Option<Duration>,
    },
    /// The upstream refused the request with a JSON-RPC error carried by an HTTP 4xx (the
    /// 2026-07-28 era answers an unknown method with 404 and a refusal with 400; some stateful
    /// servers answer a bad request so too): the error is the server's answer to the request,
    /// passed on to the client as it is.
    #[error("upstream {server} refused the request (HTTP {status}): {error}")]
    Refused {
        /// The server's configured name.
        server: String,
        /// The HTTP status.
        status: u16,
        /// The JSON-RPC error code.
        code: i64,
        /// The JSON of the response's `error` object.
        error: String,
    },
    /// The request cannot carry the credential its server takes (a client's exchanged
    /// token that could not be obtained): it never left the proxy.
    #[error("no credential for upstream {server}: {detail}")]
    Credential {
        /// The server's configured name.
        server: String,
        /// Why there is none.
        detail: String,
    },
    /// The upstream answered something that is not Streamable HTTP.
    #[error("upstream {server} broke the protocol: {detail}")]
    Protocol {
        /// The server's configured name.
        server: String,
        /// What was wrong.
        detail: String,
    },
}

/// True for the HTTP statuses that say the replica, not the request, failed: 502 Bad Gateway,
/// 503 Service Unavailable and 504 Gateway Timeout (what Envoy calls gateway failures). They
/// count against the replica's circuit like a refused connection. 500 is deliberately not one:
/// it is the application's own answer to this request (a handler that threw), and a replica
/// that answers it is up and reachable; ejecting it would move healthy traffic off a server
/// whose other tools work.
pub fn is_gateway_failure(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// True when an answer with `status`, whose `Retry-After` asked for `pause`, says the replica
/// failed: a gateway failure, or a 429 that asks for a pause. The proxy is a replica's one
/// client, so "too many requests, retry after N" is about all the work it sends there; a 429
/// without one says nothing of when to come back and stays the request's own error.
pub fn is_replica_status(status: u16, pause: Option<Duration>) -> bool {
    is_gateway_failure(status) || (status == 429 && pause.is_some())
}

impl UpstreamError {
    /// True when the replica itself failed (no answer, broken or overloaded), as opposed to
    /// the server refusing the request.
    pub fn is_replica_failure(&self) -> bool {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::Exchange { .. }
            | UpstreamError::Timeout { .. } => true,
            UpstreamError::Status { status, pause, .. } => is_replica_status(*status, *pause),
            _ => false,
        }
    }

    /// True when the request certainly never reached the upstream, so sending it again is safe.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. } | UpstreamError::SessionLost { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_error(status: u16) -> UpstreamError {
        UpstreamError::Status {
            server: "ev".into(),
            status,
            body: String::new(),
            pause: None,
        }
    }

    #[test]
    fn only_gateway_statuses_are_replica_failures() {
        for status in [502, 503, 504] {
            assert!(is_gateway_failure(status), "{status}");
            assert!(status_error(status).is_replica_failure(), "{status}");
            // The upstream may have acted on it (a 504 is often a handler still running):
            // only requests that are safe to repeat go elsewhere.
            assert!(!status_error(status).never_sent(), "{status}");
        }
        for status in [200, 202, 400, 401, 403, 404, 429, 500, 501, 505] {
            assert!(!is_gateway_failure(status), "{status}");
            assert!(!status_error(status).is_replica_failure(), "{status}");
        }
        // A 429 that asks for a pause is about the replica; a pause on a 500 changes nothing.
        let pause = Some(Duration::from_secs(3));
        assert!(is_replica_status(429, pause) && !is_replica_status(429, None));
        assert!(!is_replica_status(500, pause) && is_replica_status(503, None));
    }
}
