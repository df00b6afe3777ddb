//! Telling a server to stop work the proxy no longer waits for.
//!
//! When the proxy stops waiting for an answer that may still come (its client went away, the
//! answer's deadline passed, a workflow step was dropped), the server that is still working on
//! the request gets `notifications/cancelled` with the request's upstream id, as the client's
//! own cancellation would tell it. A 2026-07-28 upstream has no session to correlate it with
//! (closing the request's stream is the cancellation there), so it is told nothing more.

use crate::protocol::jsonrpc::{self, Id};

use super::UpstreamHandle;

/// Sends `upstream` `notifications/cancelled` for its request `id`, in a task of its own (the
/// caller may be a guard being dropped). Best effort: a failure is logged at debug level.
pub fn cancel(upstream: &UpstreamHandle, id: &Id, reason: &str) {
    if upstream.is_stateless() || !crate::shard::drain::running() {
        return;
    }
    let mut params = Vec::with_capacity(64 + reason.len());
    params.extend_from_slice(b"{\"requestId\":");
    id.write_json(&mut params);
    params.extend_from_slice(b",\"reason\":");
    jsonrpc::write_json_string(&mut params, reason);
    params.push(b'}');
    let body = jsonrpc::notification_body("notifications/cancelled", Some(&params));
    let upstream = upstream.clone();
    glommio::spawn_local(async move {
        if let Err(e) = upstream.post(&body).await {
            log::debug!(
                "upstream {}: cancellation not delivered: {e}",
                upstream.name()
            );
        }
    })
    .detach();
}

/// An upstream request in flight; dropped while armed, it cancels the request upstream.
pub struct CancelOnDrop {
    upstream: Option<UpstreamHandle>,
    id: Id,
    reason: &'static str,
}

impl CancelOnDrop {
    /// Armed for request `id` on `upstream`; `reason` is what the server is told on a drop.
    pub fn new(upstream: UpstreamHandle, id: Id, reason: &'static str) -> CancelOnDrop {
        CancelOnDrop {
            upstream: Some(upstream),
            id,
            reason,
        }
    }

    /// The request ended (answered, or failed in a way that left the server nothing to stop).
    pub fn disarm(&mut self) {
        self.upstream = None;
    }

    /// Cancels the request now, saying `reason`, unless it was disarmed.
    pub fn fire(&mut self, reason: &str) {
        if let Some(upstream) = self.upstream.take() {
            cancel(&upstream, &self.id, reason);
        }
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(upstream) = self.upstream.take() {
            cancel(&upstream, &self.id, self.reason);
        }
    }
}
