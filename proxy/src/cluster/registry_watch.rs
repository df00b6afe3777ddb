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

use std::time::Duration;

use super::etcd::{Etcd, EtcdError, Range, WatchEnd};
use super::{SharedDoc, SharedRegistry};

/// Wait between two rounds after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// The longest one watch stream is trusted; then the key is reread on a fresh connection. A
/// change is seen within this (plus one request timeout when that connection is dead too)
/// even if the stream died silently; it costs etcd one range read and one new watch per
/// member per lifetime, a few requests a second for a large fleet.
pub const WATCH_LIFETIME: Duration = Duration::from_secs(5);

/// Reads the shared registry at `key` now.
pub fn read(etcd: &Etcd, key: &str) -> Result<SharedRegistry, EtcdError> {
    registry_in(&etcd.range(key, false)?)
}

/// The registry key's revision in `range` (0: no key).
fn key_revision(range: &Range) -> i64 {
    range.kvs.first().map_or(0, |kv| kv.mod_revision)
}

/// The shared registry a range read of its key found.
fn registry_in(range: &Range) -> Result<SharedRegistry, EtcdError> {
    match range.kvs.first() {
        Some(kv) => sighting(range.revision, kv.mod_revision, Some(&kv.value)),
        None => sighting(range.revision, 0, None),
    }
}

/// The shared registry a value of the key holds (`None`: no key; an empty value is an empty
/// document).
pub fn sighting(
    seen: i64,
    mod_revision: i64,
    value: Option<&[u8]>,
) -> Result<SharedRegistry, EtcdError> {
    let doc = match value {
        Some(v) if !v.is_empty() => Some(serde_json::from_slice::<SharedDoc>(v).map_err(|e| {
            EtcdError::Protocol(format!(
                "the shared registry is not a registry document: {e}"
            ))
        })?),
        _ => None,
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

/// Follows `key` for as long as shard 0 listens on `changes`; `started` is the registry read
/// at start (`None`: etcd did not answer then).
pub fn run(
    etcd: &Etcd,
    key: &str,
    started: Option<&SharedRegistry>,
    changes: &flume::Sender<SharedRegistry>,
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
                        match registry_in(&range) {
                            Ok(shared) => {
                                if changes.send(shared).is_err() {
                                    return;
                                }
                            }
                            Err(e) => log::error!(
                                "cluster: ignoring the registry at revision {revision}: {e}"
                            ),
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
            let shared = match sighting(revision, mod_revision, value.as_deref()) {
                Ok(shared) => shared,
                Err(e) => {
                    log::error!("cluster: ignoring a registry change at revision {revision}: {e}");
                    return true;
                }
            };
            changes.send(shared).is_ok()
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
