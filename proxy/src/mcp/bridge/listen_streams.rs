//! Open `subscriptions/listen` streams: opening one (with its acknowledgment), telling them
//! which lists changed and which granted resources were updated, and ending them.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::listen::{self, Grant, SUBSCRIPTION_ID};
use super::{BridgeSessions, ShardBridge};
use crate::auth::Identity;
use crate::mcp::routing::Answer;
use crate::mcp::session::Session;
use crate::protocol::cursor::ListKind;
use crate::protocol::jsonrpc::{self, code, Id};
use crate::protocol::stateless;
use crate::shard::Shard;

/// An open `subscriptions/listen` stream.
pub(super) struct Listener {
    /// The stream's own session (it only carries the stream); gone when the client left.
    session: std::rc::Weak<Session>,
    stream: u64,
    /// The listen request's id, as JSON: the subscription id.
    id_json: String,
    /// Opted in to tools, prompts and resources list changes.
    wants: [bool; 3],
    /// The bridge session its resource subscriptions go through, if it has any.
    bridge: Option<Rc<Session>>,
    /// Resources granted on stateful upstreams: their updates reach the bridge session.
    resources: Vec<Grant>,
}

impl BridgeSessions {
    /// Tells listeners that opted in which lists changed.
    pub fn lists_changed(&self, kinds: &[ListKind]) {
        self.listeners.borrow_mut().retain(|l| {
            let Some(session) = l.session.upgrade() else {
                return false;
            };
            let mut sent = [false; 3];
            for kind in kinds {
                let (slot, method) = match kind {
                    ListKind::Tools => (0, "notifications/tools/list_changed"),
                    ListKind::Prompts => (1, "notifications/prompts/list_changed"),
                    ListKind::Resources | ListKind::ResourceTemplates => {
                        (2, "notifications/resources/list_changed")
                    }
                };
                if l.wants[slot] && !sent[slot] {
                    sent[slot] = true;
                    let params = format!(r#"{{"_meta":{{"{SUBSCRIPTION_ID}":{}}}}}"#, l.id_json);
                    session.events.push(
                        l.stream,
                        jsonrpc::notification_body(method, Some(params.as_bytes())),
                    );
                }
            }
            true
        });
    }

    /// Ends the listen streams whose resource subscriptions go through bridge session `id`.
    pub(super) fn end_listeners_of(&self, id: &str) {
        self.listeners.borrow_mut().retain(|l| {
            let through = l.bridge.as_ref().is_some_and(|b| b.id == id);
            if through {
                l.end();
            }
            !through
        });
    }

    /// Takes what a bridge session's upstreams sent unprompted: a log message goes to the
    /// session's open calls that opted in to logs, a resource update to the listen streams
    /// granted its (prefixed) URI. False for anything else.
    pub fn unsolicited(&self, bridge: &str, message: &Bytes) -> bool {
        if self.log_to_calls(bridge, message) {
            return true;
        }
        let Some(uri) = listen::updated_uri(message) else {
            return false;
        };
        let granted = |l: &&Listener| {
            l.bridge.as_ref().is_some_and(|b| b.id == bridge)
                && l.resources.iter().any(|g| g.exposed == uri)
        };
        for l in self.listeners.borrow().iter().filter(granted) {
            if let Some(session) = l.session.upgrade() {
                session
                    .events
                    .push(l.stream, listen::updated(&l.id_json, &uri));
            }
        }
        true
    }
}

impl Listener {
    /// Ends the stream gracefully: the listen request gets its response, then the stream ends.
    pub(super) fn end(&self) {
        if let Some(session) = self.session.upgrade() {
            let result = format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{"resultType":"complete","_meta":{{"{SUBSCRIPTION_ID}":{}}}}}}}"#,
                self.id_json, self.id_json
            );
            session.events.push(self.stream, Bytes::from(result));
            session.events.finish(self.stream);
        }
    }
}

/// Opens a `subscriptions/listen` stream: the list changes the client opted in to, and the
/// updates of the resources it names that the proxy could subscribe to upstream on its behalf
/// (`mcp::bridge::listen`). The acknowledgment lists exactly what is granted.
pub(super) async fn listen(
    shard: &Rc<Shard>,
    id: &Id,
    msg: &Value<'_>,
    client: Option<&Identity>,
) -> Answer {
    let filter = msg.get("params").and_then(|p| p.get("notifications"));
    let wants = [
        "toolsListChanged",
        "promptsListChanged",
        "resourcesListChanged",
    ]
    .map(|k| filter.and_then(|f| f.get_bool(k)).unwrap_or(false));
    let uris = match listen::requested(filter) {
        Ok(uris) => uris,
        Err(why) => return Answer::Json(jsonrpc::error_body(Some(id), code::INVALID_PARAMS, &why)),
    };
    let mut id_buf = Vec::new();
    id.write_json(&mut id_buf);
    let id_json = String::from_utf8_lossy(&id_buf).into_owned();
    let n = shard.bridge().next_session.get() + 1;
    shard.bridge().next_session.set(n);
    let session = Session::new(
        shard,
        format!(
            "{}listen-{:02x}-{n}",
            crate::mcp::session::BRIDGE_PREFIX,
            shard.id
        ),
        stateless::VERSION.to_owned(),
        Bytes::from_static(b"{}"),
        Vec::new(),
    );
    session.auth.assume(client);
    let stream = session.events.open();
    let target = listen::Target {
        session: Rc::downgrade(&session),
        stream,
        id_json: id_json.clone(),
        ready: Rc::new(Cell::new(false)),
    };
    let mut subscribed = listen::Subscribed::default();
    let mut bridge = None;
    if !uris.is_empty() {
        // Upstream subscriptions go through the client's bridge session: the upstream session
        // that watches a resource is the one its calls use.
        let (caps, info) = stateless::client_meta(msg);
        let through = shard.bridge().session(shard, &caps, &info, client);
        let catalog = shard.catalog();
        let wanted: Vec<Grant> = uris
            .iter()
            .filter_map(|u| {
                listen::resolve(&catalog, &through, u).map(|(server, original)| Grant {
                    server,
                    original,
                    exposed: u.clone(),
                })
            })
            .collect();
        drop(catalog);
        if !wanted.is_empty() {
            subscribed = listen::subscribe(shard, &through, wanted, &target).await;
            bridge = Some(through);
        }
    }
    // Granted in the client's order.
    let granted: Vec<Grant> = uris
        .iter()
        .filter_map(|u| {
            subscribed
                .stateful
                .iter()
                .chain(&subscribed.stateless)
                .find(|g| g.exposed == *u)
                .cloned()
        })
        .collect();
    let ack = format!(
        r#"{{"_meta":{{"{SUBSCRIPTION_ID}":{id_json}}},"notifications":{}}}"#,
        listen::acknowledged(wants, &granted)
    );
    session.events.push(
        stream,
        jsonrpc::notification_body(
            "notifications/subscriptions/acknowledged",
            Some(ack.as_bytes()),
        ),
    );
    target.ready.set(true);
    let watching = !granted.is_empty();
    shard.bridge().listeners.borrow_mut().push(Listener {
        session: Rc::downgrade(&session),
        stream,
        id_json,
        wants,
        bridge: bridge.clone().filter(|_| watching),
        resources: subscribed.stateful.clone(),
    });
    if watching {
        // The listen session is owned by the client's response stream alone: when the client
        // goes, it is dropped, and with it this sender, which is what ends the subscriptions.
        let (tx, rx) = glommio::channels::local_channel::new_bounded(1);
        session.register_waiter(Rc::new(tx));
        let shard = shard.clone();
        let readers = std::mem::take(&mut subscribed.readers);
        let stateful = std::mem::take(&mut subscribed.stateful);
        glommio::spawn_local(async move {
            let _ = rx.recv().await;
            for reader in readers {
                reader.cancel();
            }
            shard
                .bridge()
                .listeners
                .borrow_mut()
                .retain(|l| l.session.strong_count() > 0);
            if let Some(bridge) = bridge {
                listen::unsubscribe(&shard, &bridge, stateful).await;
            }
        })
        .detach();
    } else {
        for reader in subscribed.readers {
            reader.cancel();
        }
    }
    Answer::Stream(session, stream)
}
