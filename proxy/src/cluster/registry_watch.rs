//! The watch thread: follows the shared registry key and hands every newer value to shard 0.
//!
//! Each round reads the key whole (a full resync), hands it over, then watches from the
//! revision after that read. When the watch breaks (etcd stopped, restarted, unreachable, or
//! the revision compacted away) the next round starts with a full read again, so a member
//! that lost etcd for a while catches up without a restart and misses nothing. Shard 0 ignores
//! a sighting that is not newer than the one it holds, so handing one over twice is harmless.

use std::time::Duration;

use super::etcd::{Etcd, EtcdError};
use super::{SharedDoc, SharedRegistry};

/// Wait between two rounds after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// Reads the shared registry at `key` now.
pub fn read(etcd: &Etcd, key: &str) -> Result<SharedRegistry, EtcdError> {
    let range = etcd.range(key, false)?;
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

/// Follows `key` for as long as shard 0 listens on `changes`; `seen` is the revision of the
/// read made at start (0: none).
pub fn run(etcd: &Etcd, key: &str, seen: i64, changes: &flume::Sender<SharedRegistry>) {
    let mut start = seen + 1;
    let mut outage: Option<String> = None;
    loop {
        if seen == 0 || outage.is_some() || start == 0 {
            match read(etcd, key) {
                Ok(shared) => {
                    if let Some(why) = outage.take() {
                        log::info!("cluster: etcd answers again (after: {why}); registry resynced at revision {}", shared.seen);
                    }
                    start = shared.seen + 1;
                    if changes.send(shared).is_err() {
                        return;
                    }
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
            }
        }
        let mut gone = false;
        let watched = etcd.watch(key, start, |value, revision| {
            let mod_revision = if value.is_some() { revision } else { 0 };
            let shared = match sighting(revision, mod_revision, value.as_deref()) {
                Ok(shared) => shared,
                Err(e) => {
                    log::error!("cluster: ignoring a registry change at revision {revision}: {e}");
                    return true;
                }
            };
            if changes.send(shared).is_err() {
                gone = true;
                return false;
            }
            true
        });
        if gone {
            return;
        }
        if let Err(e) = watched {
            log::warn!("cluster: registry watch ended: {e}");
            outage = Some(e.to_string());
            std::thread::sleep(RETRY);
        }
        // Whatever ended the watch, the next round rereads the key whole.
        start = 0;
    }
}
