//! How long the proxy waits for one upstream answer.
//!
//! A server's `timeout` bounds the whole answer to a request: from sending it until the final
//! response has arrived, however the answer is framed (a JSON body trickling in, an SSE stream).
//! Only progress moves the deadline: a `notifications/progress` on the request's stream gives
//! the server `timeout` again from that moment, as the MCP specification allows
//! (basic/lifecycle.mdx, "Timeouts": implementations may reset the clock on progress but
//! should still enforce a maximum). That maximum is [`MAX_EXTENSION`] times the timeout from
//! the request being sent. Keep-alive comments, priming events, log messages and anything else
//! on the stream do not move it: a server that sends only those is as hung as a silent one.

use std::future::Future;
use std::time::{Duration, Instant};

/// The longest an answer may take with progress, as a multiple of the server's `timeout`.
pub const MAX_EXTENSION: u32 = 10;

/// The moment an upstream answer is given up on.
#[derive(Clone, Copy, Debug)]
pub struct AnswerDeadline {
    /// When the answer is given up on unless progress moves it.
    at: Instant,
    /// The farthest progress may move `at`.
    limit: Instant,
    /// The server's timeout: what each progress notification grants from its arrival.
    timeout: Duration,
}

/// The answer did not arrive in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

impl AnswerDeadline {
    /// The deadline of a request sent now to a server whose timeout is `timeout`.
    pub fn start(timeout: Duration) -> AnswerDeadline {
        AnswerDeadline::from(Instant::now(), timeout)
    }

    fn from(sent: Instant, timeout: Duration) -> AnswerDeadline {
        AnswerDeadline {
            at: sent + timeout,
            limit: sent + timeout.saturating_mul(MAX_EXTENSION),
            timeout,
        }
    }

    /// The server reported progress at `now`: it gets its timeout again, within the maximum.
    pub fn progressed(&mut self, now: Instant) {
        self.at = self.at.max(now + self.timeout).min(self.limit);
    }

    /// Time left before the answer is given up on (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The server's timeout, for the error message.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `work` until it ends or the deadline passes. Work that is ready at once (bytes
    /// already buffered) ends even when no time is left.
    pub async fn within<T>(&self, work: impl Future<Output = T>) -> Result<T, Expired> {
        let work = async { Ok(work.await) };
        let late = async {
            glommio::timer::sleep(self.remaining()).await;
            Err(Expired)
        };
        futures_lite::future::or(work, late).await
    }
}

impl AnswerDeadline {
    /// The next message of the answer, from `next`, within the deadline; a progress
    /// notification moves the deadline on.
    pub async fn next_message<T: MaybeMessage, E>(
        &mut self,
        next: impl Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, Expired> {
        let got = self.within(next).await?;
        if let Ok(Some(message)) = got.as_ref().map(MaybeMessage::message) {
            if is_progress(message) {
                self.progressed(Instant::now());
            }
        }
        Ok(got)
    }
}

/// What reading an answer gives: a message, or something else (its end, a pause).
pub trait MaybeMessage {
    /// The message's JSON, if it is one.
    fn message(&self) -> Option<&[u8]>;
}

impl MaybeMessage for Option<bytes::Bytes> {
    fn message(&self) -> Option<&[u8]> {
        self.as_deref()
    }
}

/// True when `message` (one JSON-RPC message from a request's stream) is a progress
/// notification. The substring test keeps every other message free of a parse; the few that
/// pass it are parsed so that a result or a log line quoting the method name does not count.
pub fn is_progress(message: &[u8]) -> bool {
    const METHOD: &[u8] = b"notifications/progress";
    if !message.windows(METHOD.len()).any(|w| w == METHOD) {
        return false;
    }
    let mut copy = message.to_vec();
    let Ok(value) = crate::protocol::jsonrpc::parse(&mut copy) else {
        return false;
    };
    use simd_json::prelude::*;
    value.get_str("method") == Some("notifications/progress") && value.get("id").is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_moves_the_deadline_up_to_the_maximum_only() {
        let sent = Instant::now();
        let timeout = Duration::from_secs(3);
        let mut d = AnswerDeadline::from(sent, timeout);
        assert_eq!(d.at, sent + timeout);
        d.progressed(sent + Duration::from_secs(2));
        assert_eq!(d.at, sent + Duration::from_secs(5));
        // Progress never shortens what was granted.
        d.progressed(sent + Duration::from_secs(1));
        assert_eq!(d.at, sent + Duration::from_secs(5));
        d.progressed(sent + Duration::from_secs(29));
        assert_eq!(d.at, sent + timeout * MAX_EXTENSION);
    }

    #[test]
    fn only_a_progress_notification_is_progress() {
        assert!(is_progress(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#
        ));
        assert!(!is_progress(
            br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"notifications/progress"}}"#
        ));
        assert!(!is_progress(
            br#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"notifications/progress"}]}}"#
        ));
        assert!(!is_progress(b": keep-alive"));
    }
}
