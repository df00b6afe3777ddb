//! Bounded label values: whatever clients send, a label takes one of a fixed set of values,
//! so the number of series stays bounded.

/// The MCP methods a `method` label names; anything else is `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `initialize`
    Initialize,
    /// `ping`
    Ping,
    /// `tools/list`
    ToolsList,
    /// `tools/call`
    ToolsCall,
    /// `prompts/list`
    PromptsList,
    /// `prompts/get`
    PromptsGet,
    /// `resources/list`
    ResourcesList,
    /// `resources/templates/list`
    ResourcesTemplatesList,
    /// `resources/read`
    ResourcesRead,
    /// `resources/subscribe`
    ResourcesSubscribe,
    /// `resources/unsubscribe`
    ResourcesUnsubscribe,
    /// `completion/complete`
    CompletionComplete,
    /// `logging/setLevel`
    LoggingSetLevel,
    /// Any other method.
    Other,
}

impl Method {
    /// How many values there are.
    pub const COUNT: usize = 14;

    const ALL: [(Method, &'static str); Method::COUNT - 1] = [
        (Method::Initialize, "initialize"),
        (Method::Ping, "ping"),
        (Method::ToolsList, "tools/list"),
        (Method::ToolsCall, "tools/call"),
        (Method::PromptsList, "prompts/list"),
        (Method::PromptsGet, "prompts/get"),
        (Method::ResourcesList, "resources/list"),
        (Method::ResourcesTemplatesList, "resources/templates/list"),
        (Method::ResourcesRead, "resources/read"),
        (Method::ResourcesSubscribe, "resources/subscribe"),
        (Method::ResourcesUnsubscribe, "resources/unsubscribe"),
        (Method::CompletionComplete, "completion/complete"),
        (Method::LoggingSetLevel, "logging/setLevel"),
    ];

    /// The label of a JSON-RPC method name.
    pub fn of(method: &str) -> Method {
        Method::ALL
            .iter()
            .find(|(_, name)| *name == method)
            .map_or(Method::Other, |(m, _)| *m)
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        Method::ALL
            .iter()
            .find(|(m, _)| *m == self)
            .map_or("other", |(_, name)| name)
    }
}

/// How a forwarded request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with a result.
    Ok,
    /// The server answered with a JSON-RPC error.
    Error,
    /// The server could not be reached, timed out or broke the connection.
    Unavailable,
    /// The server answered with something that is not the response.
    Protocol,
    /// The client cancelled or went away first.
    Cancelled,
}

impl Outcome {
    /// How many values there are.
    pub const COUNT: usize = 5;

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Unavailable => "unavailable",
            Outcome::Protocol => "protocol",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// `Ok` or `Error` for a final JSON-RPC response as relayed to the client.
    ///
    /// Looks for the first top-level `"result"` or `"error"` member without parsing: both
    /// serializers involved write the members of the envelope before any nested value.
    pub fn of_response(body: &[u8]) -> Outcome {
        // One pass that stops at the first member name found: early in any response.
        for (i, _) in body.iter().enumerate().filter(|(_, b)| **b == b'"') {
            let rest = &body[i..];
            if rest.starts_with(b"\"result\"") {
                return Outcome::Ok;
            }
            if rest.starts_with(b"\"error\"") {
                return Outcome::Error;
            }
        }
        Outcome::Ok
    }
}

/// How a health check of a replica ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Any HTTP answer: the replica is alive.
    Ok,
    /// No answer within the check's limit (or the server's timeout).
    Timeout,
    /// No connection, or it broke before an answer.
    Unavailable,
}

impl ProbeOutcome {
    /// Every value, in label order.
    pub const ALL: [ProbeOutcome; 3] = [
        ProbeOutcome::Ok,
        ProbeOutcome::Timeout,
        ProbeOutcome::Unavailable,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ProbeOutcome::Ok => "ok",
            ProbeOutcome::Timeout => "timeout",
            ProbeOutcome::Unavailable => "unavailable",
        }
    }
}

/// Why an event stream (a GET stream, a streamed answer, a `subscriptions/listen` stream)
/// ended, as the shard writing it to the client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The proxy's side ended it: the answer was complete, or the session's stream closed
    /// (session deleted or expired, a newer GET of the session took the stream over, shutdown).
    Completed,
    /// Writing to the client failed: it went away.
    ClientClosed,
    /// The JWT it was opened with expired.
    TokenExpired,
    /// A reload stopped accepting the credential it was opened with.
    CredentialRevoked,
}

impl StreamEnd {
    /// Every value, in label order.
    pub const ALL: [StreamEnd; 4] = [
        StreamEnd::Completed,
        StreamEnd::ClientClosed,
        StreamEnd::TokenExpired,
        StreamEnd::CredentialRevoked,
    ];

    /// The reason of a stream that stopped: `ended` is what its deadline ended it for, if it
    /// did; otherwise the source ran out (`written`: every write reached the client) or a
    /// write failed. The credential wins: a write failing after it was cut says nothing new.
    pub fn of(ended: Option<crate::http::sse::Ended>, written: bool) -> StreamEnd {
        use crate::http::sse::Ended;
        match (ended, written) {
            (Some(Ended::Expired), _) => StreamEnd::TokenExpired,
            (Some(Ended::Revoked), _) => StreamEnd::CredentialRevoked,
            (None, false) => StreamEnd::ClientClosed,
            (None, true) => StreamEnd::Completed,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            StreamEnd::Completed => "completed",
            StreamEnd::ClientClosed => "client_closed",
            StreamEnd::TokenExpired => "token_expired",
            StreamEnd::CredentialRevoked => "credential_revoked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_and_unknown_is_other() {
        for (m, name) in Method::ALL {
            assert_eq!(Method::of(name), m);
            assert_eq!(m.label(), name);
        }
        assert_eq!(Method::of("tools/call2"), Method::Other);
        assert_eq!(Method::Other.label(), "other");
        assert_eq!(Method::Other as usize, Method::COUNT - 1);
    }

    #[test]
    fn response_outcomes() {
        let ok = br#"{"result":{"content":[{"type":"text","text":"\"error\": no"}]},"jsonrpc":"2.0","id":1}"#;
        assert_eq!(Outcome::of_response(ok), Outcome::Ok);
        let err = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}"#;
        assert_eq!(Outcome::of_response(err), Outcome::Error);
    }

    #[test]
    fn stream_end_reasons() {
        use crate::http::sse::Ended;
        assert_eq!(StreamEnd::of(None, true), StreamEnd::Completed);
        assert_eq!(StreamEnd::of(None, false), StreamEnd::ClientClosed);
        for written in [true, false] {
            assert_eq!(
                StreamEnd::of(Some(Ended::Expired), written),
                StreamEnd::TokenExpired
            );
            assert_eq!(
                StreamEnd::of(Some(Ended::Revoked), written),
                StreamEnd::CredentialRevoked
            );
        }
        let labels: Vec<_> = StreamEnd::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "completed",
                "client_closed",
                "token_expired",
                "credential_revoked"
            ]
        );
        for (i, r) in StreamEnd::ALL.iter().enumerate() {
            assert_eq!(
                *r as usize, i,
                "ALL is in discriminant order (handle index)"
            );
        }
    }
}
