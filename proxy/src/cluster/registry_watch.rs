//! The watch thread: follows the shared registry key and hands every newer value to shard 0.
//!
//! Each round reads the key whole (a full resync), hands it over, then watches from the
//! revision after that read. When the watch breaks (etcd stopped, restarted, unreachable, or
//! the revision compacted away) the next round starts with a full read again, so a member
//! that lost etcd for a while catches up without a restart and misses nothing. Shard 0 ignores
//! a sighting that is not newer than the one it holds, so handing one over twice is harmless.
//!
//! A watch stream is silent whenever the registry does not change, so silence cannot tell a
//! quiet registry from a connection that died without a FIN or RST (a partition, a powered-off
//! etcd host, a NAT or load balancer dropping the flow): a read on such a connection never
//! returns. So no stream is trusted longer than [`WATCH_LIFETIME`]: then the round ends as if
//! the watch had broken, and the next one rereads the key on a fresh connection, which fails
//! (an outage, as above) if etcd is really gone. etcd's own progress notifications would say
//! the same, but it sends them every 10 minutes unless its operator starts it with
//! `--experimental-watch-progress-notify-interval`; TCP keepalive would not see an etcd
//! whose host answers but whose process hangs, nor a proxy in between that holds the flow.

use std::sync::Mutex;
use std::time::Duration;

use super::etcd::{Etcd, EtcdError, Range, WatchEnd};
use super::{SharedDoc, SharedRegistry, View};

/// Wait between two rounds after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// The longest one watch stream is trusted; then the key is reread on a fresh connection. A
/// change is seen within this (plus one request timeout when that connection is dead too)
/// even if the stream died silently; it costs etcd one range read and one new watch per
/// member per lifetime, a few requests a second for a large fleet.
pub const WATCH_LIFETIME: Duration = Duration::from_secs(5);

/// The registry key holds a value that is not a registry document (edited by hand, written by
/// another tool, truncated). etcd answered: the operator has to replace or delete the value,
/// and retrying the read would find the same bytes. The message names the key, what is wrong
/// and both ways out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the etcd key {key} (revision {mod_revision}) is not a registry document: {detail}; \
     look at it with `{etcdctl} get {key}`, then put a valid document there or delete it with \
     `{etcdctl} del {key}` (the fleet then serves its configuration files' servers, and the next \
     admin change writes the key anew)"
)]
pub struct UnreadableDoc {
    /// The registry key.
    pub key: String,
    /// `etcdctl` with the flags that reach the fleet's etcd.
    pub etcdctl: String,
    /// The store revision at which the value was read.
    pub seen: i64,
    /// The key's own revision: the value a later write has to replace.
    pub mod_revision: i64,
    /// What the parser said of the value.
    pub detail: String,
}

/// Why the shared registry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// etcd did not answer (a retry may).
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// etcd answered with a value that is not a registry document (a retry will not help).
    #[error(transparent)]
    Unreadable(#[from] UnreadableDoc),
}

/// Where the watch picks up from a read made before it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAt {
    /// The store revision of the read: the watch starts after it.
    pub seen: i64,
    /// The key's revision then (0: no key), readable or not: not handed over again.
    pub mod_revision: i64,
}

impl From<&SharedRegistry> for ReadAt {
    fn from(shared: &SharedRegistry) -> Self {
        ReadAt {
            seen: shared.seen,
            mod_revision: shared.mod_revision,
        }
    }
}

impl From<&UnreadableDoc> for ReadAt {
    fn from(bad: &UnreadableDoc) -> Self {
        ReadAt {
            seen: bad.seen,
            mod_revision: bad.mod_revision,
        }
    }
}

/// Reads the shared registry at `key` now.
pub fn read(etcd: &Etcd, key: &str) -> Result<SharedRegistry, ReadError> {
    Ok(registry_in(etcd, key, &etcd.range(key, false)?)?)
}

/// The registry key's revision in `range` (0: no key).
fn key_revision(range: &Range) -> i64 {
    range.kvs.first().map_or(0, |kv| kv.mod_revision)
}

/// The shared registry a range read of `key` in `etcd` found.
pub fn registry_in(etcd: &Etcd, key: &str, range: &Range) -> Result<SharedRegistry, UnreadableDoc> {
    let key = Key::in_etcd(etcd, key);
    match range.kvs.first() {
        Some(kv) => sighting(key, range.revision, kv.mod_revision, Some(&kv.value)),
        None => sighting(key, range.revision, 0, None),
    }
}

/// The registry key, and how an operator reaches it.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub key: &'a str,
    /// `etcdctl` with the flags that reach the fleet's etcd.
    pub etcdctl: &'a str,
}

impl<'a> Key<'a> {
    /// `key` in `etcd`.
    pub fn in_etcd(etcd: &'a Etcd, key: &'a str) -> Key<'a> {
        Key {
            key,
            etcdctl: etcd.etcdctl(),
        }
    }
}

/// The shared registry a value of `key` holds (`None`: no key). An empty value is no
/// document: no member writes one, and reading it as "no servers" would silently take every
/// server added through the admin API off the fleet.
pub fn sighting(
    key: Key,
    seen: i64,
    mod_revision: i64,
    value: Option<&[u8]>,
) -> Result<SharedRegistry, UnreadableDoc> {
    let unreadable = |detail: String| UnreadableDoc {
        key: key.key.to_owned(),
        etcdctl: key.etcdctl.to_owned(),
        seen,
        mod_revision,
        detail,
    };
    let doc = match value {
        None => None,
        Some(v) if v.trim_ascii().is_empty() => {
            return Err(unreadable("the value is empty".into()))
        }
        Some(v) => {
            Some(serde_json::from_slice::<SharedDoc>(v).map_err(|e| unreadable(e.to_string()))?)
        }
    };
    Ok(match doc {
        Some(doc) => SharedRegistry {
            seen,
            mod_revision,
            doc: Some(doc.registry),
            workflows: doc.workflows,
        },
        None => SharedRegistry {
            seen,
            mod_revision,
            doc: None,
            workflows: Default::default(),
        },
    })
}

/// What a member says it does while the key is unreadable.
const KEEPS_SERVING: &str = "this member keeps serving the registry it runs until a registry \
                             document is written there";

/// Says in the member's view (`GET /api/v1/cluster`) why the key's value is not followed, or
/// that it is again.
fn note(view: &Mutex<View>, registry_error: Option<String>) {
    if let Ok(mut view) = view.lock() {
        view.registry_error = registry_error;
    }
}

/// Hands a readable value to shard 0, or logs and notes an unreadable one (which is not
/// handed over: the member keeps what it runs). False once shard 0 no longer listens.
fn hand_over(
    read: Result<SharedRegistry, UnreadableDoc>,
    changes: &flume::Sender<SharedRegistry>,
    view: &Mutex<View>,
) -> bool {
    match read {
        Ok(shared) => {
            note(view, None);
            changes.send(shared).is_ok()
        }
        Err(bad) => {
            log::error!("cluster: {bad}; {KEEPS_SERVING}");
            note(view, Some(bad.to_string()));
            true
        }
    }
}

/// Follows `key` for as long as shard 0 listens on `changes`; `started` is where the read at
/// start left off (`None`: etcd did not answer then). An unreadable value is also noted in
/// `view` until a readable one replaces it.
pub fn run(
    etcd: &Etcd,
    key: &str,
    started: Option<ReadAt>,
    changes: &flume::Sender<SharedRegistry>,
    view: &Mutex<View>,
) {
    // Where the next watch starts; `None`: reread the key first.
    let mut next: Option<i64> = started.map(|s| s.seen + 1);
    // The key's revision in the last value handed over (or found unreadable): a reread that
    // finds it again has nothing new, so it is neither parsed nor handed over again.
    let mut handed: Option<i64> = started.map(|s| s.mod_revision);
    let mut outage: Option<String> = None;
    loop {
        let start = match next.take() {
            Some(start) => start,
            None => match etcd.range(key, false) {
                Ok(range) => {
                    if let Some(why) = outage.take() {
                        log::info!("cluster: etcd answers again (after: {why}); registry resynced at revision {}", range.revision);
                    }
                    let revision = key_revision(&range);
                    if handed != Some(revision) {
                        handed = Some(revision);
                        if !hand_over(registry_in(etcd, key, &range), changes, view) {
                            return;
                        }
                    }
                    range.revision + 1
                }
                Err(e) => {
                    if outage.is_none() {
                        log::warn!(
                            "cluster: {e}; serving the last registry seen until etcd answers"
                        );
                        outage = Some(e.to_string());
                    }
                    std::thread::sleep(RETRY);
                    continue;
                }
            },
        };
        let watched = etcd.watch(key, start, WATCH_LIFETIME, |value, revision| {
            let mod_revision = if value.is_some() { revision } else { 0 };
            handed = Some(mod_revision);
            hand_over(
                sighting(
                    Key::in_etcd(etcd, key),
                    revision,
                    mod_revision,
                    value.as_deref(),
                ),
                changes,
                view,
            )
        });
        match watched {
            // Shard 0 stopped listening: the proxy is going away.
            Ok(WatchEnd::Stopped) => return,
            // Whether etcd is still there is for the reread to find out.
            Ok(WatchEnd::Expired) => {}
            Err(e) => {
                log::warn!("cluster: registry watch ended: {e}");
                outage = Some(e.to_string());
                std::thread::sleep(RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = Key {
        key: "/fleet/registry",
        etcdctl: "etcdctl --endpoints=https://e1:2379,https://e2:2379 --cacert=/etc/ca.pem",
    };

    #[test]
    fn a_value_that_is_no_registry_document_names_the_key_what_is_wrong_and_the_way_out() {
        for value in [&b"{\"servers\": 7"[..], b"", b" \n"] {
            let bad = sighting(KEY, 12, 9, Some(value)).unwrap_err();
            assert_eq!((bad.seen, bad.mod_revision), (12, 9));
            let message = bad.to_string();
            assert!(
                message.starts_with(
                    "the etcd key /fleet/registry (revision 9) is not a registry document: "
                ),
                "{message}"
            );
            assert!(
                message.contains(&bad.detail) && !bad.detail.is_empty(),
                "{message}"
            );
            // The commands work as printed against this fleet's etcd.
            for verb in ["get", "del"] {
                let command = format!("`{} {verb} /fleet/registry`", KEY.etcdctl);
                assert!(message.contains(&command), "{message}");
            }
            assert!(!message.contains("unreachable"), "{message}");
            // Where the watch resumes: after this read, with this value not handed over again.
            let at = ReadAt::from(&bad);
            assert_eq!((at.seen, at.mod_revision), (12, 9));
        }
    }

    #[test]
    fn a_registry_document_and_no_key_are_read() {
        let doc = br#"{"format":1,"version":3,"servers":[],"workflows":{"w":{"steps":[]}}}"#;
        let shared = sighting(KEY, 12, 9, Some(doc)).unwrap();
        assert_eq!((shared.seen, shared.mod_revision), (12, 9));
        assert_eq!(shared.doc.map(|d| d.version), Some(3));
        assert!(shared.workflows.contains_key("w"));
        let shared = sighting(KEY, 12, 0, None).unwrap();
        assert_eq!(shared.doc, None);
    }
}
