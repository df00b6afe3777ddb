//! A process-wide value that a reload replaces, numbered by generation, and each shard's own
//! copy of it.
//!
//! A reload writes the [`Slot`] under its lock and then bumps its generation; a shard's
//! [`ShardCopy`] compares that generation with its own on each use (one atomic load) and takes
//! the lock only when they differ, so the hot path takes no lock and touches no refcount shared
//! by cores.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

/// The running value and its generation (0 before anything is installed).
pub struct Slot<T> {
    running: RwLock<Option<(u64, Arc<T>)>>,
    generation: AtomicU64,
}

impl<T> Slot<T> {
    /// An empty slot, at generation 0.
    pub const fn new() -> Slot<T> {
        Slot {
            running: RwLock::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// Installs what `next` makes of the running value (`None` before the first install);
    /// the two are one step under the lock, so concurrent installs cannot lose one.
    pub fn replace(&self, next: impl FnOnce(Option<&T>) -> T) {
        let mut running = self.write();
        let value = next(running.as_ref().map(|(_, v)| &**v));
        let generation = self.generation.load(Ordering::Acquire) + 1;
        *running = Some((generation, Arc::new(value)));
        self.generation.store(generation, Ordering::Release);
    }

    /// The running value, if one was installed.
    pub fn get(&self) -> Option<Arc<T>> {
        self.versioned().map(|(_, v)| v)
    }

    /// The generation of the newest install: one atomic load.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn versioned(&self) -> Option<(u64, Arc<T>)> {
        self.running.read().ok().and_then(|r| r.clone())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Option<(u64, Arc<T>)>> {
        // A panic while holding the lock cannot leave a half-written Option; take it back.
        self.running
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Slot<T> {
        Slot::new()
    }
}

/// One shard's copy of a [`Slot`]'s value (kept in a `thread_local!`).
pub struct ShardCopy<T> {
    generation: Cell<u64>,
    value: RefCell<Rc<T>>,
}

impl<T: Clone + Default> ShardCopy<T> {
    /// A copy holding `T::default()`, at generation 0.
    pub fn new() -> ShardCopy<T> {
        ShardCopy {
            generation: Cell::new(0),
            value: RefCell::new(Rc::new(T::default())),
        }
    }

    /// The copy, first brought up to date with `slot` when a new generation was installed;
    /// `refresh(old, new)` then lets the caller move whatever this shard keeps beside it.
    pub fn get(&self, slot: &Slot<T>, refresh: impl FnOnce(&T, &T)) -> Rc<T> {
        if self.generation.get() != slot.generation() {
            if let Some((generation, next)) = slot.versioned() {
                let next = Rc::new(T::clone(&next));
                refresh(&self.value.borrow(), &next);
                *self.value.borrow_mut() = next;
                self.generation.set(generation);
            }
        }
        self.value.borrow().clone()
    }

    /// The generation of the value this copy holds.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }
}

impl<T: Clone + Default> Default for ShardCopy<T> {
    fn default() -> ShardCopy<T> {
        ShardCopy::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_copy_follows_each_install_and_sees_the_old_value_when_it_moves() {
        let slot: Slot<u32> = Slot::new();
        let copy: ShardCopy<u32> = ShardCopy::new();
        let mut refreshed = Vec::new();
        assert_eq!(*copy.get(&slot, |_, _| panic!("nothing installed")), 0);
        slot.replace(|old| {
            assert_eq!(old, None);
            7
        });
        assert_eq!(*copy.get(&slot, |o, n| refreshed.push((*o, *n))), 7);
        assert_eq!(
            *copy.get(&slot, |_, _| panic!("same generation")),
            7,
            "no refresh while the generation stays"
        );
        slot.replace(|old| old.copied().unwrap_or_default() + 1);
        assert_eq!(slot.get().as_deref(), Some(&8));
        assert_eq!(*copy.get(&slot, |o, n| refreshed.push((*o, *n))), 8);
        assert_eq!(refreshed, [(0, 7), (7, 8)]);
        assert_eq!((copy.generation(), slot.generation()), (2, 2));
    }
}
