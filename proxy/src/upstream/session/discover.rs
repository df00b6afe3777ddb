//! The 2026-07-28 side of an upstream session: the `server/discover` probe that tells the
//! era a server speaks, and the envelope a stateless server gets in every request.

use std::rc::Rc;

use bytes::Bytes;
use simd_json::prelude::*;

use super::{Established, UpstreamSession};
use crate::balance::Traffic;
use crate::protocol::jsonrpc;
use crate::upstream::error::UpstreamError;

/// What a 2026-07-28 upstream gets in every request's `_meta`: the client's capabilities and
/// identity (JSON text), taken from the `initialize` params the session was opened with.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub(super) capabilities: String,
    pub(super) client_info: String,
}

impl Envelope {
    pub(super) fn of(init_params: &[u8]) -> Envelope {
        let mut buf = init_params.to_vec();
        let parsed = simd_json::to_borrowed_value(&mut buf).ok();
        let field = |key: &str, default: &str| {
            parsed
                .as_ref()
                .and_then(|p| p.get(key))
                .map_or_else(|| default.to_owned(), |v| v.encode())
        };
        Envelope {
            capabilities: field("capabilities", "{}"),
            client_info: field("clientInfo", r#"{"name":"mcp-proxy","version":"0"}"#),
        }
    }
}

impl UpstreamSession {
    /// Probes `server/discover` at 2026-07-28 (once per shard and server): a server that
    /// answers with that version is used statelessly; anything else means the stateful era,
    /// as clients of that era decide (streamable-http.mdx, "Backward Compatibility").
    pub(super) async fn discover(
        self: &Rc<Self>,
        replica: usize,
        traffic: Traffic,
    ) -> Result<Option<Rc<Established>>, UpstreamError> {
        use crate::protocol::stateless;
        let envelope = Envelope::of(&self.init_params);
        let id = self.next_id();
        let body = stateless::discover_request(&id, &envelope.capabilities, &envelope.client_info);
        let credential = self.authorization().await?;
        let mut headers = vec![("Mcp-Method", "server/discover")];
        headers.extend(credential.as_deref().map(|c| ("Authorization", c)));
        let answer = match self
            .client
            .post_with(
                replica,
                traffic,
                None,
                Some(stateless::VERSION),
                &headers,
                &body,
            )
            .await
        {
            Ok(reply) => self.await_answer(reply, &id).await,
            Err(e) if e.never_sent() => return Err(e),
            Err(e) => Err(e),
        };
        let answer = match answer {
            Ok(a) => Some(a),
            // A refusal is the stateful era's answer to the probe; a timeout, a broken
            // exchange or a gateway failure (502/503/504: the server never saw it) says
            // nothing, so `initialize` is tried without remembering a verdict.
            Err(e @ UpstreamError::Status { .. }) if e.is_replica_failure() => {
                log::debug!(
                    "upstream {}: server/discover probe failed ({e}); trying initialize",
                    self.client.name()
                );
                return Ok(None);
            }
            Err(
                UpstreamError::Status { .. }
                | UpstreamError::Refused { .. }
                | UpstreamError::Protocol { .. },
            ) => None,
            Err(e) => {
                log::debug!(
                    "upstream {}: server/discover probe failed ({e}); trying initialize",
                    self.client.name()
                );
                return Ok(None);
            }
        };
        let mut buf = answer.map(|a| a.to_vec()).unwrap_or_default();
        let result = jsonrpc::parse(&mut buf)
            .ok()
            .and_then(|m| m.get("result").cloned())
            .filter(stateless::discover_says_stateless)
            .map(|r| Bytes::from(r.encode().into_bytes()));
        let Some(init_result) = result else {
            self.client.stateless.set(Some(false));
            return Ok(None);
        };
        if self.client.stateless.get().is_none() {
            log::info!(
                "upstream {}: speaks 2026-07-28; calling it statelessly",
                self.client.name()
            );
        }
        self.client.stateless.set(Some(true));
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        let est = Rc::new(Established {
            session_id: None,
            version: stateless::VERSION.to_owned(),
            generation,
            init_result,
            replica,
            stateless: Some(envelope),
        });
        *self.state.borrow_mut() = Some(est.clone());
        Ok(Some(est))
    }
}
