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

/// Why a reader's session stream ran out, as the session's owner knows it: the owner's half
/// of a [`StreamEnd`] (the session layer ends streams with it; the endpoint writing the
/// stream adds what only it can tell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The stream ran its course: its answer is complete (or it is no longer kept).
    Finished,
    /// A newer reader of the same stream (a newer GET, or a resumption) took it over.
    Replaced,
    /// The session ended: DELETE, idle expiry, or evicted.
    SessionEnded,
    /// The proxy is shutting down.
    Shutdown,
    /// The server behind ended it early with a retry hint (SSE polling): the client comes back
    /// with `Last-Event-ID` for the rest.
    Polling,
}

/// Why an event stream (a GET stream, a streamed answer, a `subscriptions/listen` stream)
/// ended, as the shard writing it to the client can tell (with the owner's word, for a
/// stream relayed from another shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The stream ran its course: the answer was complete.
    Completed,
    /// Writing to the client failed: it went away.
    ClientClosed,
    /// The JWT it was opened with expired.
    TokenExpired,
    /// A reload stopped accepting the credential it was opened with.
    CredentialRevoked,
    /// A newer reader of the same stream (a newer GET of the session, a resumption) took it.
    Replaced,
    /// Its session ended: DELETE, idle expiry, or an evicted 2026-07-28 bridge session.
    SessionEnded,
    /// The proxy is shutting down.
    Shutdown,
    /// Ended early with a retry hint, as the server behind ended its stream (SSE polling);
    /// the client resumes it.
    Polling,
}

impl StreamEnd {
    /// Every value, in label order.
    pub const ALL: [StreamEnd; 8] = [
        StreamEnd::Completed,
        StreamEnd::ClientClosed,
        StreamEnd::TokenExpired,
        StreamEnd::CredentialRevoked,
        StreamEnd::Replaced,
        StreamEnd::SessionEnded,
        StreamEnd::Shutdown,
        StreamEnd::Polling,
    ];

    /// The reason of a stream that stopped: `cut` is what its deadline ended it for, if it
    /// did; `closed` why its source ran out, if it did; `written` whether every write reached
    /// the client. The credential wins: a write failing after it was cut says nothing new.
    /// The proxy ending the stream wins over the final write failing (a client that
    /// reconnects is often gone from the old connection already); but an answer whose end
    /// did not reach the client was not completed.
    pub fn of(
        cut: Option<crate::http::sse::Ended>,
        closed: Option<Closed>,
        written: bool,
    ) -> StreamEnd {
        use crate::http::sse::Ended;
        match (cut, closed, written) {
            (Some(Ended::Expired), _, _) => StreamEnd::TokenExpired,
            (Some(Ended::Revoked), _, _) => StreamEnd::CredentialRevoked,
            (None, Some(Closed::Replaced), _) => StreamEnd::Replaced,
            (None, Some(Closed::SessionEnded), _) => StreamEnd::SessionEnded,
            (None, Some(Closed::Shutdown), _) => StreamEnd::Shutdown,
            (None, _, false) => StreamEnd::ClientClosed,
            (None, Some(Closed::Polling), true) => StreamEnd::Polling,
            (None, Some(Closed::Finished) | None, true) => StreamEnd::Completed,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            StreamEnd::Completed => "completed",
            StreamEnd::ClientClosed => "client_closed",
            StreamEnd::TokenExpired => "token_expired",
            StreamEnd::CredentialRevoked => "credential_revoked",
            StreamEnd::Replaced => "replaced",
            StreamEnd::SessionEnded => "session_ended",
            StreamEnd::Shutdown => "shutdown",
            StreamEnd::Polling => "polling",
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
        let finished = Some(Closed::Finished);
        assert_eq!(StreamEnd::of(None, finished, true), StreamEnd::Completed);
        assert_eq!(
            StreamEnd::of(None, finished, false),
            StreamEnd::ClientClosed
        );
        assert_eq!(
            StreamEnd::of(None, None, false),
            StreamEnd::ClientClosed,
            "a write failed before the source ran out"
        );
        let polling = Some(Closed::Polling);
        assert_eq!(StreamEnd::of(None, polling, true), StreamEnd::Polling);
        assert_eq!(
            StreamEnd::of(None, polling, false),
            StreamEnd::ClientClosed,
            "the retry hint did not reach the client"
        );
        for (closed, reason) in [
            (Closed::Replaced, StreamEnd::Replaced),
            (Closed::SessionEnded, StreamEnd::SessionEnded),
            (Closed::Shutdown, StreamEnd::Shutdown),
        ] {
            for written in [true, false] {
                assert_eq!(StreamEnd::of(None, Some(closed), written), reason);
            }
        }
        for closed in [None, finished, Some(Closed::Replaced)] {
            for written in [true, false] {
                assert_eq!(
                    StreamEnd::of(Some(Ended::Expired), closed, written),
                    StreamEnd::TokenExpired
                );
                assert_eq!(
                    StreamEnd::of(Some(Ended::Revoked), closed, written),
                    StreamEnd::CredentialRevoked
                );
            }
        }
        let labels: Vec<_> = StreamEnd::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "completed",
                "client_closed",
                "token_expired",
                "credential_revoked",
                "replaced",
                "session_ended",
                "shutdown",
                "polling"
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
