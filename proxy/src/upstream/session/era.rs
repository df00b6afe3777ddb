//! Which era a stateful client's upstream session is opened in, under `era = "auto"`.
//!
//! Whatever a stateful client can use directly must work through the proxy: server-initiated
//! requests (sampling, elicitation, roots) and `resources/subscribe` exist only in a stateful
//! session. So a stateful client's session starts with `initialize`; when the server answers
//! with an `Mcp-Session-Id`, that session is kept, even if the server also speaks 2026-07-28.
//! A server that opens no session (a stateless-HTTP server of the stateful era, or a
//! 2026-07-28 server answering `initialize` for older clients) offers nothing the stateless
//! era lacks, so it is called statelessly when it speaks 2026-07-28, and bridged
//! (`mcp::bridge::stateless_upstream`). A server that refuses `initialize` is a 2026-07-28-only
//! server. What a server offers is remembered per shard, so later sessions skip the detour.

use std::rc::Rc;

use super::{Established, UpstreamSession};
use crate::balance::Traffic;
use crate::upstream::error::UpstreamError;

/// The upstream session of a stateful client.
pub(super) async fn for_stateful_client(
    session: &Rc<UpstreamSession>,
    replica: usize,
    traffic: Traffic,
) -> Result<Rc<Established>, UpstreamError> {
    let client = &session.client;
    if client.offers_sessions.get() == Some(false) && client.stateless.get() == Some(true) {
        if let Some(est) = session.discover(replica, traffic).await? {
            return Ok(est);
        }
    }
    let opened = session.open_stateful(replica, traffic).await;
    match opened {
        Ok(est) if est.session_id.is_some() => {
            client.offers_sessions.set(Some(true));
            Ok(est)
        }
        Ok(est) => {
            client.offers_sessions.set(Some(false));
            if client.stateless.get() == Some(false) {
                return Ok(est);
            }
            // No session to lose: the stateless era serves the client as well, and its
            // requests need no replica binding.
            Ok(session.discover(replica, traffic).await?.unwrap_or(est))
        }
        // Refused: a 2026-07-28-only server, if it answers server/discover.
        Err(
            refused @ (UpstreamError::Status { .. }
            | UpstreamError::Refused { .. }
            | UpstreamError::Protocol { .. }),
        ) if !refused.is_replica_failure() => {
            client.offers_sessions.set(Some(false));
            match session.discover(replica, traffic).await? {
                Some(est) => Ok(est),
                None => Err(refused),
            }
        }
        Err(e) => Err(e),
    }
}
