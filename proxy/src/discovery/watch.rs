//! Watching a 2026-07-28 server's lists: that era has no session to carry `list_changed`, so
//! discovery opens the server's own `subscriptions/listen` for the three list changes and lists
//! the server again at each one. A stream that ends (the server restarted, or its idle timeout)
//! is opened again with backoff, and the server is listed again then too: changes made while
//! no stream was open were announced to no one.

use std::rc::Weak;
use std::time::Duration;

use simd_json::prelude::*;

use super::Discovery;
use crate::protocol::jsonrpc;
use crate::upstream::client::ReplyBody;
use crate::upstream::UpstreamHandle;

const REOPEN_MIN: Duration = Duration::from_millis(250);
/// Short, so a restarted server's new lists are seen soon after it is back.
const REOPEN_MAX: Duration = Duration::from_secs(5);
const LISTEN_PARAMS: &[u8] =
    br#"{"notifications":{"toolsListChanged":true,"promptsListChanged":true,"resourcesListChanged":true}}"#;

/// Follows `server`'s list changes while discovery's `epoch` for it lasts. Ends at once when
/// the server grants none of them (its lists are then refreshed by their `ttlMs` alone).
pub(super) async fn list_changes(
    discovery: Weak<Discovery>,
    server: usize,
    epoch: u64,
    session: UpstreamHandle,
) {
    let mut pause = REOPEN_MIN;
    let mut opened_before = false;
    loop {
        let current = || {
            discovery
                .upgrade()
                .is_some_and(|d| d.current(server, epoch))
        };
        if !current() {
            return;
        }
        let id = session.next_id();
        let body = jsonrpc::request_body(&id, "subscriptions/listen", LISTEN_PARAMS);
        let stream = match session.post(&body).await {
            Ok(reply) => match reply.body {
                ReplyBody::Stream(s) => Some(s),
                _ => None,
            },
            Err(e) => {
                log::debug!("subscriptions/listen on {}: {e}", session.name());
                None
            }
        };
        if let Some(mut stream) = stream {
            let mut acknowledged = false;
            while let Ok(Some(message)) = stream.next().await {
                let Some(d) = discovery.upgrade().filter(|d| d.current(server, epoch)) else {
                    return;
                };
                match change_of(&message) {
                    Some(Change::Acknowledged { any }) => {
                        if !any {
                            log::debug!(
                                "{} grants no list changes; its ttlMs decides",
                                session.name()
                            );
                            return;
                        }
                        acknowledged = true;
                        pause = REOPEN_MIN;
                        if opened_before {
                            d.trigger(server);
                        }
                        opened_before = true;
                    }
                    Some(Change::List) if acknowledged => d.trigger(server),
                    _ => {}
                }
            }
        }
        glommio::timer::sleep(pause).await;
        pause = (pause * 2).min(REOPEN_MAX);
    }
}

enum Change {
    /// The stream's acknowledgment; `any`: it grants at least one list change.
    Acknowledged { any: bool },
    /// A list changed.
    List,
}

fn change_of(message: &[u8]) -> Option<Change> {
    let mut buf = message.to_vec();
    let msg = jsonrpc::parse(&mut buf).ok()?;
    match msg.get_str("method")? {
        "notifications/subscriptions/acknowledged" => {
            let granted = msg.get("params").and_then(|p| p.get("notifications"));
            let any = [
                "toolsListChanged",
                "promptsListChanged",
                "resourcesListChanged",
            ]
            .iter()
            .any(|k| granted.and_then(|g| g.get_bool(*k)) == Some(true));
            Some(Change::Acknowledged { any })
        }
        m if m.ends_with("/list_changed") => Some(Change::List),
        _ => None,
    }
}
