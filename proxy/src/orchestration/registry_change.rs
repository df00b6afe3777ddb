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
//! at most. A key that holds no registry document is never written over: the change is
//! refused naming the key, until an operator replaces or deletes it (docs/architecture.md). Changes other members make arrive from the watch ([`follow_shared`]) and are
//! published the same way; while a write of this member is in flight they wait, so the
//! registry published last is always the newest.
//!
//! A fleet's saved workflows live in the same shared document ([`change_workflows`]): one
//! compare-and-set orders every operator change, and every member's shards hold the set in
//! memory (shard 0 sends it to the others, as for one instance without a state directory).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::{SharedDoc, SharedRegistry, WriteError};
use crate::discovery::ShardDiscovery;
use crate::registry::servers::{Registry, RegistryError};
use crate::registry::state_file;
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
    if crate::cluster::get().is_none() {
        let (next, answer) = make(&shard.registry())?;
        commit(shard, next)?;
        return Ok(answer);
    }
    let written = write_shared(shard, "registry", |workflows| {
        let (next, answer) = make(&shard.registry())?;
        let registry = next.state_doc();
        Ok((
            SharedDoc {
                registry,
                workflows,
            },
            (next, answer),
        ))
    })
    .await?;
    let (next, answer) = written;
    publish(shard, next);
    follow_waiting(shard);
    Ok(answer)
}

/// A fleet member's change of the saved workflows: `make` edits the set (each workflow as the
/// admin API took it) and answers; the set is written to the shared document, then every shard
/// of this member holds it (the other members follow through their watch).
pub async fn change_workflows<T>(
    shard: &Rc<Shard>,
    make: impl Fn(&mut BTreeMap<String, serde_json::Value>) -> T,
) -> Result<T, RegistryError> {
    if crate::cluster::get().is_none() {
        return Err(RegistryError::NotApplicable(
            "this proxy is not a fleet member: its workflows are in its state directory".into(),
        ));
    }
    let (answer, workflows) = write_shared(shard, "shared document", |mut workflows| {
        let answer = make(&mut workflows);
        let registry = shard.registry().state_doc();
        let doc = SharedDoc {
            registry,
            workflows: workflows.clone(),
        };
        Ok((doc, (answer, workflows)))
    })
    .await?;
    install_workflows(shard, &workflows);
    follow_waiting(shard);
    Ok(answer)
}

/// The one compare-and-set loop of a fleet member's changes: `make` computes the document to
/// write from the registry this member runs and the workflows it knows. A write that lost the
/// race applies the winner's document and computes again, a few times at most. On success the
/// document is what this member knows; the caller puts it in force, then follows any sighting
/// that waited on the write.
async fn write_shared<T>(
    shard: &Rc<Shard>,
    what: &str,
    make: impl Fn(BTreeMap<String, serde_json::Value>) -> Result<(SharedDoc, T), RegistryError>,
) -> Result<T, RegistryError> {
    let Some(cluster) = crate::cluster::get() else {
        return Err(RegistryError::NotApplicable(
            "this proxy is not a fleet member".into(),
        ));
    };
    for _ in 0..ATTEMPTS {
        let (base, workflows) = known_base();
        let (doc, made) = make(workflows)?;
        SHARED.with(|s| s.borrow_mut().writing += 1);
        let written = cluster.write_registry(base, &doc).await;
        SHARED.with(|s| s.borrow_mut().writing -= 1);
        match written {
            Ok(revision) => {
                SHARED.with(|s| s.borrow_mut().known = Some(written_at(revision, doc)));
                return Ok(made);
            }
            Err(WriteError::Moved(now)) => apply(shard, now),
            Err(WriteError::Unreadable(bad)) => {
                follow_waiting(shard);
                return Err(RegistryError::SharedUnreadable(bad.to_string()));
            }
            Err(e) => {
                follow_waiting(shard);
                return Err(RegistryError::Shared(e.to_string()));
            }
        }
    }
    Err(RegistryError::Shared(format!(
        "other members kept changing the {what} meanwhile"
    )))
}

/// The revision a write compares against and the workflows it keeps.
fn known_base() -> (i64, BTreeMap<String, serde_json::Value>) {
    SHARED.with(|s| match &s.borrow().known {
        Some(k) => (k.mod_revision, k.workflows.clone()),
        None => (0, BTreeMap::new()),
    })
}

/// What shard 0 knows once its write of `doc` made `revision`.
fn written_at(revision: i64, doc: SharedDoc) -> SharedRegistry {
    SharedRegistry {
        seen: revision,
        mod_revision: revision,
        doc: Some(doc.registry),
        workflows: doc.workflows,
    }
}

/// Puts the fleet's saved workflows in every shard's memory (shard 0 here, the others told).
fn install_workflows(shard: &Rc<Shard>, workflows: &BTreeMap<String, serde_json::Value>) {
    use crate::orchestration::ShardOrchestration;
    let mut all = BTreeMap::new();
    for (name, workflow) in workflows {
        let mut text = workflow.to_string().into_bytes();
        match simd_json::to_owned_value(&mut text) {
            Ok(json) => {
                all.insert(name.clone(), json);
            }
            Err(e) => log::error!("cluster: skipping the shared workflow {name}: {e}"),
        }
    }
    shard.orchestration().store.replace_memory(all.clone());
    for peer in (0..shard.nr_shards).filter(|p| *p != shard.id) {
        let all = all.clone();
        shard.mesh.tell(peer, move |owner: &Rc<Shard>| {
            crate::orchestration::fleet::told(
                owner,
                crate::orchestration::fleet::Tell::Workflows(all),
            )
        });
    }
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
        Some(dir) => state_file::save_state(dir, &next.state_doc()),
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
    // The registry the shards started with follows this sighting; its workflows are put in
    // every shard's memory now.
    let started = cluster.take_started();
    if let Some(started) = &started {
        install_workflows(shard, &started.workflows);
    }
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
    let (newer, workflows_changed) = SHARED.with(|s| match &s.borrow().known {
        Some(k) => (shared.seen > k.seen, k.workflows != shared.workflows),
        None => (true, true),
    });
    if !newer {
        return;
    }
    if workflows_changed {
        install_workflows(shard, &shared.workflows);
    }
    let running = shard.registry();
    let (next, changes) = running.follow(&cluster.bootstrap, shared.doc.as_ref());
    let seen = shared.seen;
    SHARED.with(|s| s.borrow_mut().known = Some(shared));
    // A change of the workflows alone leaves the registry as it is: nothing to republish.
    if next.entries == running.entries && next.removed_config == running.removed_config {
        return;
    }
    log::info!(
        "cluster: registry at revision {seen} ({} added, {} updated, {} removed)",
        changes.added.len(),
        changes.updated.len(),
        changes.removed.len()
    );
    publish(shard, next);
}
