//! Resource subscriptions of `subscriptions/listen` streams (2026-07-28 clients).
//!
//! A 2026-07-28 client names the resources it wants `notifications/resources/updated` for in the
//! listen request's `resourceSubscriptions`. The proxy subscribes upstream on the client's
//! behalf, through the client's *bridge session* (`mcp::bridge`), so the upstream session
//! that watches a resource is the one the client's own calls use:
//!
//! - a stateful upstream gets `resources/subscribe` in that upstream session; its
//!   `notifications/resources/updated` arrive on the session's GET stream (the relay prefixes
//!   the URI) and go to the listen streams that were granted that URI;
//! - a 2026-07-28 upstream gets its own `subscriptions/listen` with the server's URIs, read for
//!   as long as the client's stream lives.
//!
//! Listen streams sharing a bridge session share its upstream subscriptions (counted here): the
//! first one subscribes, the last one to close unsubscribes. What the upstream session holds is
//! also recorded in it (`upstream::subscriptions`), as a stateful client's own
//! subscriptions are, so a session the server forgot is re-opened with them renewed. A URI
//! whose server is unknown, hidden from the client, or did not declare `resources.subscribe`,
//! or that the upstream refuses, is left out of the acknowledgment (the spec's "subset the
//! server agreed to honor").

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use glommio::task::JoinHandle;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use crate::mcp::bridge::ShardBridge;
use crate::mcp::session::Session;
use crate::orchestration;
use crate::protocol::jsonrpc;
use crate::protocol::names;
use crate::registry::Catalog;
use crate::shard::Shard;
use crate::upstream::client::ReplyBody;
use crate::upstream::table::ShardUpstreams;
use crate::upstream::UpstreamHandle;

/// The most URIs one listen request may name; more is refused (-32602) rather than cut short,
/// so a client never mistakes a truncated grant for a refusal by the servers.
pub const MAX_URIS: usize = 256;
/// `_meta` key tagging what a `subscriptions/listen` stream carries.
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
/// The longest pause before a 2026-07-28 upstream's listen stream is opened again.
const MAX_REOPEN: Duration = Duration::from_secs(30);

/// One resource subscription granted to a listen stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The server holding the resource.
    pub server: usize,
    /// The URI as that server knows it.
    pub original: String,
    /// The URI as the client named it (prefixed).
    pub exposed: String,
}

/// The URIs a listen request's filter names in `resourceSubscriptions`, without duplicates, in
/// the client's order; an error message when the field is not a list of strings or too long.
pub fn requested(filter: Option<&Value<'_>>) -> Result<Vec<String>, String> {
    let Some(field) = filter.and_then(|f| f.get("resourceSubscriptions")) else {
        return Ok(Vec::new());
    };
    let Some(items) = field.as_array() else {
        return Err(
            "notifications.resourceSubscriptions must be an array of resource URI strings".into(),
        );
    };
    if items.len() > MAX_URIS {
        return Err(format!(
            "notifications.resourceSubscriptions names {} URIs; at most {MAX_URIS} per subscriptions/listen (open several streams)",
            items.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Some(uri) = item.as_str() else {
            return Err(format!(
                "notifications.resourceSubscriptions must hold URI strings, not {}",
                item.encode()
            ));
        };
        if !out.iter().any(|u| u == uri) {
            out.push(uri.to_owned());
        }
    }
    Ok(out)
}

/// The server and original URI behind `exposed`, when a subscription to it can be asked for:
/// the server is known and offered, visible to the client, and declared `resources.subscribe`.
/// The proxy's own resources do not change while it runs, so they are never granted.
pub fn resolve(catalog: &Catalog, session: &Session, exposed: &str) -> Option<(usize, String)> {
    resolve_with(catalog, exposed, |server| {
        session.auth.permits_server(catalog, server)
    })
}

/// [`resolve`], with the client's policy as `permits` (by server index).
fn resolve_with(
    catalog: &Catalog,
    exposed: &str,
    permits: impl Fn(usize) -> bool,
) -> Option<(usize, String)> {
    if orchestration::is_own_resource(exposed) {
        return None;
    }
    let (server, original) = catalog.resource(exposed)?;
    let allowed = permits(server) && catalog.declares(server, "resources", Some("subscribe"));
    allowed.then(|| (server, original.to_owned()))
}

/// The `notifications` object of the acknowledgment: the list changes opted in to (`wants`, in
/// the order tools, prompts, resources) and the URIs granted; an empty grant is left out.
pub fn acknowledged(wants: [bool; 3], granted: &[Grant]) -> String {
    let mut parts: Vec<String> = [
        "toolsListChanged",
        "promptsListChanged",
        "resourcesListChanged",
    ]
    .iter()
    .zip(wants)
    .filter(|(_, w)| *w)
    .map(|(k, _)| format!(r#""{k}":true"#))
    .collect();
    if !granted.is_empty() {
        let mut list = Vec::from(&b"\"resourceSubscriptions\":["[..]);
        for (i, g) in granted.iter().enumerate() {
            if i > 0 {
                list.push(b',');
            }
            jsonrpc::write_json_string(&mut list, &g.exposed);
        }
        list.push(b']');
        parts.push(String::from_utf8_lossy(&list).into_owned());
    }
    format!("{{{}}}", parts.join(","))
}

/// `notifications/resources/updated` for `exposed`, tagged with the listen request's id.
pub fn updated(id_json: &str, exposed: &str) -> Bytes {
    let mut params = format!(r#"{{"_meta":{{"{SUBSCRIPTION_ID}":{id_json}}},"uri":"#).into_bytes();
    jsonrpc::write_json_string(&mut params, exposed);
    params.push(b'}');
    jsonrpc::notification_body("notifications/resources/updated", Some(&params))
}

/// The URI of a `notifications/resources/updated` message, or `None` for any other message.
pub fn updated_uri(message: &[u8]) -> Option<String> {
    // Most of what an upstream sends unprompted is something else: no parse for those.
    let needle = b"notifications/resources/updated";
    if !message.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    let mut buf = message.to_vec();
    let msg = jsonrpc::parse(&mut buf).ok()?;
    if msg.get_str("method") != Some("notifications/resources/updated") || msg.contains_key("id") {
        return None;
    }
    msg.get("params")
        .and_then(|p| p.get_str("uri"))
        .map(str::to_owned)
}

/// Upstream subscriptions held through bridge sessions, counted by (bridge session id, server,
/// original URI): how many listen streams share each.
#[derive(Default)]
pub struct Held {
    counts: RefCell<HashMap<(String, usize, String), usize>>,
}

impl Held {
    /// Counts one more listen stream on the subscription; true when it is the first (the
    /// upstream must be asked).
    pub fn acquire(&self, session: &str, server: usize, original: &str) -> bool {
        let mut counts = self.counts.borrow_mut();
        let n = counts
            .entry((session.to_owned(), server, original.to_owned()))
            .or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts one listen stream less; true when it was the last (the upstream must be told).
    pub fn release(&self, session: &str, server: usize, original: &str) -> bool {
        let key = (session.to_owned(), server, original.to_owned());
        let mut counts = self.counts.borrow_mut();
        match counts.get_mut(&key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                counts.remove(&key);
                true
            }
            None => false,
        }
    }

    /// True while some listen stream holds a subscription through bridge session `session`.
    pub fn holds(&self, session: &str) -> bool {
        self.counts.borrow().keys().any(|(s, _, _)| s == session)
    }

    /// Forgets every subscription of `session` (it is being closed, which ends them upstream).
    pub fn forget(&self, session: &str) {
        self.counts.borrow_mut().retain(|(s, _, _), _| s != session);
    }
}

/// Where a 2026-07-28 upstream's updates go: the client's listen stream.
#[derive(Clone)]
pub struct Target {
    /// The listen stream's own session (gone when the client left).
    pub session: Weak<Session>,
    /// Its stream.
    pub stream: u64,
    /// The listen request's id, as JSON.
    pub id_json: String,
    /// Set once the acknowledgment is on the stream: nothing may precede it.
    pub ready: Rc<Cell<bool>>,
}

/// What subscribing asked upstream left behind: the grants, and the readers of 2026-07-28
/// upstreams' listen streams (cancelled when the client's stream ends).
#[derive(Default)]
pub struct Subscribed {
    /// Granted through `resources/subscribe` on stateful upstreams.
    pub stateful: Vec<Grant>,
    /// Granted by 2026-07-28 upstreams' own listen streams.
    pub stateless: Vec<Grant>,
    /// The tasks reading those streams.
    pub readers: Vec<JoinHandle<()>>,
}

/// Subscribes upstream, through the bridge session `bridge`, to the `wanted` resources
/// (server, original, exposed), and returns what was granted.
pub async fn subscribe(
    shard: &Rc<Shard>,
    bridge: &Rc<Session>,
    wanted: Vec<Grant>,
    target: &Target,
) -> Subscribed {
    let mut out = Subscribed::default();
    let mut servers: Vec<usize> = wanted.iter().map(|g| g.server).collect();
    servers.sort_unstable();
    servers.dedup();
    for server in servers {
        let grants: Vec<Grant> = wanted
            .iter()
            .filter(|g| g.server == server)
            .cloned()
            .collect();
        let Some(handle) = bridge.upstream(server) else {
            continue;
        };
        // The era of the upstream is known once its session is established.
        if let Err(e) = handle.init_result().await {
            log::info!("subscriptions/listen: server #{server} is unavailable ({e}); its resources are not granted");
            continue;
        }
        if handle.is_stateless() {
            if let Some((granted, reader)) = listen_upstream(shard, &handle, grants, target).await {
                out.stateless.extend(granted);
                out.readers.push(reader);
            }
            continue;
        }
        for grant in grants {
            let first = shard
                .bridge()
                .held
                .acquire(&bridge.id, server, &grant.original);
            if !first || ask(&handle, "resources/subscribe", &grant.original).await {
                out.stateful.push(grant);
            } else {
                shard
                    .bridge()
                    .held
                    .release(&bridge.id, server, &grant.original);
            }
        }
    }
    out
}

/// Ends stateful grants: a subscription no other listen stream of the bridge session holds is
/// ended upstream with `resources/unsubscribe`.
pub async fn unsubscribe(shard: &Rc<Shard>, bridge: &Rc<Session>, grants: Vec<Grant>) {
    for grant in grants {
        if !shard
            .bridge()
            .held
            .release(&bridge.id, grant.server, &grant.original)
        {
            continue;
        }
        let Some(handle) = bridge.upstream(grant.server) else {
            continue;
        };
        if ask(&handle, "resources/unsubscribe", &grant.original).await {
            log::info!(
                "subscriptions/listen: ended the upstream subscription to {}",
                grant.exposed
            );
        }
    }
}

/// Sends `resources/subscribe` or `resources/unsubscribe` for `uri`; true when it succeeded.
/// The upstream session keeps what it holds, to renew it if the server forgets the session.
async fn ask(handle: &UpstreamHandle, method: &str, uri: &str) -> bool {
    let subscribing = method == "resources/subscribe";
    if !subscribing {
        handle.unsubscribed(uri);
    }
    let params = crate::upstream::subscriptions::uri_params(uri);
    let answer = match handle.request(method, &params).await {
        Ok(a) => a,
        Err(e) => {
            log::info!("{method} {uri} on {} failed: {e}", handle.name());
            return false;
        }
    };
    let mut buf = answer.to_vec();
    let ok = jsonrpc::parse(&mut buf).is_ok_and(|m| m.contains_key("result"));
    if ok && subscribing {
        handle.subscribed(uri);
    }
    if !ok {
        log::info!(
            "{method} {uri} refused by {}: {}",
            handle.name(),
            String::from_utf8_lossy(&answer)
        );
    }
    ok
}

/// Opens a 2026-07-28 upstream's own `subscriptions/listen` for `grants`, waits for its
/// acknowledgment (what it grants is what the client is granted), then reads it in a task that
/// relays its updates to `target` and opens it again when the upstream ends it.
async fn listen_upstream(
    shard: &Rc<Shard>,
    handle: &UpstreamHandle,
    grants: Vec<Grant>,
    target: &Target,
) -> Option<(Vec<Grant>, JoinHandle<()>)> {
    let mut stream = open_upstream_listen(handle, &grants).await?;
    let acknowledged = loop {
        let message = stream.next().await.ok()??;
        if let Some(uris) = acknowledged_uris(&message) {
            break uris;
        }
    };
    let granted: Vec<Grant> = grants
        .into_iter()
        .filter(|g| acknowledged.iter().any(|u| *u == g.original))
        .collect();
    if granted.is_empty() {
        return None;
    }
    let prefix = shard
        .upstreams()
        .get(granted[0].server)
        .map(|u| u.config().prefix.clone())
        .unwrap_or_default();
    let handle = handle.clone();
    let target = target.clone();
    let originals = granted.clone();
    let reader = glommio::spawn_local(async move {
        let mut pause = Duration::from_millis(250);
        loop {
            loop {
                let message = match stream.next().await {
                    Ok(Some(m)) => m,
                    _ => break,
                };
                let Some(session) = target.session.upgrade() else {
                    return;
                };
                if !target.ready.get() {
                    continue;
                }
                if let Some(uri) = updated_uri(&message) {
                    if originals.iter().any(|g| g.original == uri) {
                        let exposed = names::prefix_uri(&prefix, &uri);
                        session
                            .events
                            .push(target.stream, updated(&target.id_json, &exposed));
                    }
                }
                pause = Duration::from_millis(250);
            }
            // The upstream (or its idle timeout) ended the stream: listen again while the
            // client still listens.
            loop {
                if target.session.upgrade().is_none() {
                    return;
                }
                glommio::timer::sleep(pause).await;
                pause = (pause * 2).min(MAX_REOPEN);
                if let Some(s) = open_upstream_listen(&handle, &originals).await {
                    stream = s;
                    break;
                }
            }
        }
    })
    .detach();
    Some((granted, reader))
}

/// POSTs `subscriptions/listen` with the grants' original URIs; the answer's message stream.
async fn open_upstream_listen(
    handle: &UpstreamHandle,
    grants: &[Grant],
) -> Option<Box<crate::upstream::client::MessageStream>> {
    let mut params = Vec::from(&b"{\"notifications\":{\"resourceSubscriptions\":["[..]);
    for (i, g) in grants.iter().enumerate() {
        if i > 0 {
            params.push(b',');
        }
        jsonrpc::write_json_string(&mut params, &g.original);
    }
    params.extend_from_slice(b"]}}");
    let id = handle.next_id();
    let body = jsonrpc::request_body(&id, "subscriptions/listen", &params);
    match handle.post(&body).await {
        Ok(reply) => match reply.body {
            ReplyBody::Stream(s) => Some(s),
            _ => {
                log::info!(
                    "subscriptions/listen on {} was not answered with a stream",
                    handle.name()
                );
                None
            }
        },
        Err(e) => {
            log::info!("subscriptions/listen on {} failed: {e}", handle.name());
            None
        }
    }
}

/// The URIs an upstream's `notifications/subscriptions/acknowledged` grants, or `None` for any
/// other message.
fn acknowledged_uris(message: &[u8]) -> Option<Vec<String>> {
    let mut buf = message.to_vec();
    let msg = jsonrpc::parse(&mut buf).ok()?;
    if msg.get_str("method") != Some("notifications/subscriptions/acknowledged") {
        return None;
    }
    let uris = msg
        .get("params")
        .and_then(|p| p.get("notifications"))
        .and_then(|n| n.get("resourceSubscriptions"))
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Some(uris)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(json: &str) -> Result<Vec<String>, String> {
        let mut buf = json.as_bytes().to_vec();
        let v = simd_json::to_borrowed_value(&mut buf).expect("test JSON");
        requested(Some(&v))
    }

    fn grant(exposed: &str) -> Grant {
        Grant {
            server: 0,
            original: exposed
                .split_once('+')
                .map_or(exposed, |(_, o)| o)
                .to_owned(),
            exposed: exposed.to_owned(),
        }
    }

    #[test]
    fn requested_uris_are_deduplicated_in_order() {
        assert_eq!(
            filter(r#"{"resourceSubscriptions":["a+x://1","b+y://2","a+x://1"]}"#),
            Ok(vec!["a+x://1".to_owned(), "b+y://2".to_owned()])
        );
        assert_eq!(filter(r#"{"toolsListChanged":true}"#), Ok(Vec::new()));
        assert_eq!(requested(None), Ok(Vec::new()));
    }

    #[test]
    fn malformed_or_oversized_requests_are_refused_with_a_reason() {
        let not_list = filter(r#"{"resourceSubscriptions":"a+x://1"}"#).unwrap_err();
        assert!(not_list.contains("must be an array"), "{not_list}");
        let not_string = filter(r#"{"resourceSubscriptions":["a+x://1",7]}"#).unwrap_err();
        assert!(not_string.contains("not 7"), "{not_string}");
        let many: Vec<String> = (0..=MAX_URIS).map(|i| format!("\"a+x://{i}\"")).collect();
        let too_many = filter(&format!(
            r#"{{"resourceSubscriptions":[{}]}}"#,
            many.join(",")
        ))
        .unwrap_err();
        assert!(too_many.contains("at most 256"), "{too_many}");
    }

    #[test]
    fn the_acknowledgment_lists_only_what_was_granted() {
        assert_eq!(
            acknowledged([true, false, false], &[]),
            r#"{"toolsListChanged":true}"#
        );
        assert_eq!(
            acknowledged(
                [false, false, true],
                &[grant("a+x://\"q\""), grant("b+y://2")]
            ),
            r#"{"resourcesListChanged":true,"resourceSubscriptions":["a+x://\"q\"","b+y://2"]}"#
        );
        assert_eq!(acknowledged([false; 3], &[]), "{}");
    }

    #[test]
    fn updates_carry_the_exposed_uri_and_the_subscription_id() {
        let note = updated("\"sub-1\"", "alpha+demo://r/1");
        let mut buf = note.to_vec();
        let v = simd_json::to_borrowed_value(&mut buf).expect("valid JSON");
        assert_eq!(v.get_str("method"), Some("notifications/resources/updated"));
        let params = v.get("params").expect("params");
        assert_eq!(params.get_str("uri"), Some("alpha+demo://r/1"));
        assert_eq!(
            params.get("_meta").and_then(|m| m.get_str(SUBSCRIPTION_ID)),
            Some("sub-1")
        );
    }

    #[test]
    fn only_resource_updates_yield_a_uri() {
        let update =
            br#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"demo://r/1"}}"#;
        assert_eq!(updated_uri(update).as_deref(), Some("demo://r/1"));
        let log = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"notifications/resources/updated"}}"#;
        assert_eq!(updated_uri(log), None);
        let request = br#"{"jsonrpc":"2.0","id":3,"method":"notifications/resources/updated","params":{"uri":"x"}}"#;
        assert_eq!(updated_uri(request), None);
    }

    #[test]
    fn an_upstream_acknowledgment_names_its_granted_uris() {
        let ack = br#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"notifications":{"resourceSubscriptions":["demo://a"]}}}"#;
        assert_eq!(acknowledged_uris(ack), Some(vec!["demo://a".to_owned()]));
        let bare = br#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"notifications":{}}}"#;
        assert_eq!(acknowledged_uris(bare), Some(Vec::new()));
        let other = br#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"demo://a"}}"#;
        assert_eq!(acknowledged_uris(other), None);
    }

    fn catalog() -> Catalog {
        use crate::registry::catalog::{ServerIdentity, ServerListing, ServerStatus};
        let server = |name: &str| ServerIdentity {
            name: name.to_owned(),
            prefix: name.to_owned(),
        };
        let up = |caps: &'static str| {
            ServerStatus::Up(ServerListing {
                init_result: Bytes::from(format!(r#"{{"capabilities":{caps}}}"#)),
                ..ServerListing::default()
            })
        };
        Catalog::build(
            1,
            vec![server("alpha"), server("plain"), server("gone")],
            vec![
                up(r#"{"resources":{"subscribe":true}}"#),
                up(r#"{"resources":{"listChanged":true}}"#),
                ServerStatus::Down("unreachable".into()),
            ],
        )
    }

    #[test]
    fn only_servers_that_can_be_subscribed_to_are_granted() {
        let catalog = catalog();
        let everyone = |_: usize| true;
        assert_eq!(
            resolve_with(&catalog, "alpha+demo://r/1", everyone),
            Some((0, "demo://r/1".to_owned())),
            "the prefix is taken off for the upstream"
        );
        assert_eq!(
            resolve_with(&catalog, "plain+demo://r/1", everyone),
            None,
            "no resources.subscribe"
        );
        assert_eq!(resolve_with(&catalog, "gone+demo://r/1", everyone), None);
        assert_eq!(resolve_with(&catalog, "nowhere+demo://r/1", everyone), None);
        assert_eq!(
            resolve_with(&catalog, "alpha+demo://r/1", |s| s != 0),
            None,
            "hidden by the client's policy"
        );
    }

    #[test]
    fn listen_streams_of_one_bridge_session_share_an_upstream_subscription() {
        let held = Held::default();
        assert!(held.acquire("b1", 0, "demo://a"), "the first asks upstream");
        assert!(!held.acquire("b1", 0, "demo://a"), "the second shares it");
        assert!(
            held.acquire("b2", 0, "demo://a"),
            "another session asks on its own"
        );
        assert!(held.acquire("b1", 1, "demo://a"), "so does another server");
        assert!(
            !held.release("b1", 0, "demo://a"),
            "one stream still holds it"
        );
        assert!(
            held.release("b1", 0, "demo://a"),
            "the last one unsubscribes"
        );
        assert!(
            !held.release("b1", 0, "demo://a"),
            "nothing left to release"
        );
        assert!(held.holds("b1") && held.holds("b2"));
        held.forget("b1");
        assert!(!held.holds("b1") && held.holds("b2"));
    }
}
