//! Why a request is refused, and the count of refusals (`mcp_proxy_auth_denied_total`).
//!
//! The endpoint turns a [`Denial`] into its HTTP answer (`endpoint::gate`); auth only says what
//! was refused and why.

use std::time::Duration;

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No credentials.
    Missing,
    /// Credentials that do not authenticate (401); `reason` is the metric label.
    Invalid {
        /// Metric label.
        reason: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Authenticated but not allowed (403).
    Forbidden {
        /// The client, when known.
        client: Option<String>,
        /// Metric label.
        reason: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A valid token without the scopes a client is granted by (403, so the client can ask
    /// its authorization server for them: OAuth step-up).
    InsufficientScope {
        /// The client whose scopes are missing.
        client: String,
        /// The scopes needed, space-separated.
        scope: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Over the client's rate (429).
    RateLimited {
        /// The client.
        client: String,
        /// When a token will be there.
        retry_after: Duration,
    },
    /// The client has as many sessions as it may (429).
    TooManySessions {
        /// The client.
        client: String,
        /// Its limit.
        max: usize,
    },
}

impl Denial {
    /// The client refused (when known) and the `reason` label of the refusal.
    pub fn labels(&self) -> (Option<&str>, &'static str) {
        match self {
            Denial::Missing => (None, "missing"),
            Denial::Invalid { reason, .. } => (None, reason),
            Denial::Forbidden { client, reason, .. } => (client.as_deref(), reason),
            Denial::InsufficientScope { client, .. } => (Some(client), "insufficient_scope"),
            Denial::RateLimited { client, .. } => (Some(client), "rate_limited"),
            Denial::TooManySessions { client, .. } => (Some(client), "too_many_sessions"),
        }
    }

    /// Counts this refusal in `mcp_proxy_auth_denied_total`.
    pub fn count(&self) {
        let (client, reason) = self.labels();
        count_denial(client, reason);
    }
}

/// Counts a refusal in `mcp_proxy_auth_denied_total`.
pub fn count_denial(client: Option<&str>, reason: &'static str) {
    metrics::counter!(
        crate::metrics::names::AUTH_DENIED,
        "client" => client.unwrap_or("unknown").to_owned(),
        "reason" => reason
    )
    .increment(1);
}
