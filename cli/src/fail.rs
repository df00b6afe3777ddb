//! What went wrong, how to fix it, and the exit code that tells scripts which it was.

use std::fmt;

/// Exit codes: 0 ok, 1 error, 2 usage, 3 unreachable, 4 unauthorized, 5 not found,
/// 6 degraded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Anything else that failed.
    Error = 1,
    /// Invalid arguments (clap uses 2 as well).
    Usage = 2,
    /// The proxy could not be reached.
    Unreachable = 3,
    /// The token was missing or wrong.
    Unauthorized = 4,
    /// The server, tool or route named does not exist.
    NotFound = 5,
    /// `health`: the proxy answers but some server is not up.
    Degraded = 6,
}

/// A failure with a message that says how to fix it.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: Code,
    /// The message for people.
    pub message: String,
}

impl Failure {
    /// A general failure.
    pub fn error(message: impl Into<String>) -> Failure {
        Failure {
            code: Code::Error,
            message: message.into(),
        }
    }

    /// Invalid arguments.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: Code::Usage,
            message: message.into(),
        }
    }

    /// A connection failure to `authority`.
    pub fn unreachable(authority: &str, e: std::io::Error) -> Failure {
        Failure {
            code: Code::Unreachable,
            message: format!(
                "cannot reach mcp-proxy at {authority} ({e}); is mcp-proxy running? \
                 set MCPCTL_URL (or --admin-url) to its admin address, printed at start as \
                 `mcp-proxy admin: http://...`"
            ),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}
