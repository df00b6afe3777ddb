//! Putting a new live registry in force, on shard 0. The admin API's server changes and the
//! balancing changes of `proxy__balance_load` all go through [`change`].
//!
//! **One instance**: the new registry is saved in the state directory first (when there is
//! one), then published to every shard, whose discovery and catalog follow. Saving is a small
//! synchronous write and fsync: changes are rare, and doing it inline (no await between
//! computing the registry and publishing it) is what keeps two changes made on the same
//! thread from interleaving and losing one another.
//!
//! **A fleet member** (`[cluster]`): the shared registry in etcd is the store. The change is
//! computed from the registry this member runs, written with a compare-and-set on the
//! revision that registry was read at (by the control thread; shard 0 only awaits the
//! answer), then published. If another member wrote first, the change is computed again over
//! theirs (so two adds of one name: one wins, the other is refused as a conflict), a few times
//! at most. Changes other members make arrive from the watch ([`follow_shared`]) and are
//! published the same way; while a write of this member is in flight they wait, so the
//! registry published last is always the newest.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::{SharedRegistry, WriteError};
use crate::discovery::ShardDiscovery;
use crate::registry::servers::{self, Registry, RegistryError};
use crate::shard::Shard;

/// Attempts at a change while other members keep changing the shared registry.
const ATTEMPTS: usize = 5;

/// Shard 0's view of the shared registry.
#[derive(Default)]
struct Shared {
    /// The sighting the running registry follows.
    known: Option<SharedRegistry>,
    /// Writes of this member awaiting etcd's answer.
    writing: usize,
    /// The newest sighting that arrived meanwhile.
    waiting: Option<SharedRegistry>,
}

thread_local! {
    static SHARED: RefCell<Shared> = RefCell::new(Shared::default());
}

/// Makes the change `make` computes from the running registry; `make`'s own answer (an index)
/// once the change is in force.
pub async fn change<T>(
    shard: &Rc<Shard>,
    make: impl Fn(&Registry) -> Result<(Registry, T), RegistryError>,
) -> Result<T, RegistryError> {
    let Some(cluster) = crate::cluster::get() else {
        let (next, answer) = make(&shard.registry())?;
        commit(shard, next)?;
        return Ok(answer);
    };
    for _ in 0..ATTEMPTS {
        let (next, answer) = make(&shard.registry())?;
        let base = SHARED.with(|s| s.borrow().known.as_ref().map_or(0, |k| k.mod_revision));
        SHARED.with(|s| s.borrow_mut().writing += 1);
        let written = cluster.write_registry(base, &next.state_doc()).await;
        SHARED.with(|s| s.borrow_mut().writing -= 1);
        match written {
            Ok(revision) => {
                let doc = next.state_doc();
                SHARED.with(|s| {
                    s.borrow_mut().known = Some(SharedRegistry {
                        seen: revision,
                        mod_revision: revision,
                        doc: Some(doc),
                    })
                });
                publish(shard, next);
                follow_waiting(shard);
                return Ok(answer);
            }
            Err(WriteError::Moved(now)) => {
                apply(shard, now);
            }
            Err(e) => {
                follow_waiting(shard);
                return Err(RegistryError::Shared(e.to_string()));
            }
        }
    }
    Err(RegistryError::Shared(
        "other members kept changing the registry meanwhile".into(),
    ))
}

/// Saves `next` and applies it everywhere (one instance).
pub fn commit(shard: &Rc<Shard>, next: Registry) -> Result<Arc<Registry>, RegistryError> {
    save(shard, &next)?;
    Ok(publish(shard, next))
}

/// Writes `next` to the state directory, if there is one, so it outlives a restart. A fleet
/// member keeps nothing there: its store is the shared registry.
pub fn save(shard: &Shard, next: &Registry) -> Result<(), RegistryError> {
    if crate::cluster::get().is_some() {
        return Ok(());
    }
    match &shard.config.proxy.state_dir {
        Some(dir) => servers::save_state(dir, &next.state_doc()),
        None => Ok(()),
    }
}

/// Puts `next` in force on every shard (after [`save`]).
pub fn publish(shard: &Rc<Shard>, next: Registry) -> Arc<Registry> {
    let next = Arc::new(next);
    shard.publish_registry(next.clone());
    next
}

/// Shard 0 of a fleet member: publishes every newer shared registry the watch sees.
pub fn follow_shared(shard: &Rc<Shard>) {
    let Some(cluster) = crate::cluster::get() else {
        return;
    };
    // The registry the shards started with follows this sighting.
    let started = cluster.take_started();
    SHARED.with(|s| s.borrow_mut().known = started);
    let Some(changes) = cluster.take_changes() else {
        return;
    };
    let shard = shard.clone();
    glommio::spawn_local(async move {
        while let Ok(shared) = changes.recv_async().await {
            let held = SHARED.with(|s| {
                let mut s = s.borrow_mut();
                if s.writing == 0 {
                    return None;
                }
                let newer = s.waiting.as_ref().is_none_or(|w| shared.seen > w.seen);
                if newer {
                    s.waiting = Some(shared.clone());
                }
                Some(())
            });
            if held.is_none() {
                apply(&shard, shared);
            }
        }
    })
    .detach();
}

fn follow_waiting(shard: &Rc<Shard>) {
    let waiting = SHARED.with(|s| {
        let mut s = s.borrow_mut();
        if s.writing == 0 {
            s.waiting.take()
        } else {
            None
        }
    });
    if let Some(shared) = waiting {
        apply(shard, shared);
    }
}

/// Publishes `shared` if it is newer than the registry running.
fn apply(shard: &Rc<Shard>, shared: SharedRegistry) {
    let Some(cluster) = crate::cluster::get() else {
        return;
    };
    let newer = SHARED.with(|s| {
        s.borrow()
            .known
            .as_ref()
            .is_none_or(|k| shared.seen > k.seen)
    });
    if !newer {
        return;
    }
    let (next, changes) = shard
        .registry()
        .follow(&cluster.bootstrap, shared.doc.as_ref());
    log::info!(
        "cluster: registry at revision {} ({} added, {} updated, {} removed)",
        shared.seen,
        changes.added.len(),
        changes.updated.len(),
        changes.removed.len()
    );
    SHARED.with(|s| s.borrow_mut().known = Some(shared));
    publish(shard, next);
}
