//! A setting the process replaces on reload while every shard reads it on its hot path.
//!
//! [`Reloadable`] is one process-wide slot with a generation number: a reload builds the new
//! value first and swaps it in whole, bumping the generation. Each shard keeps its own
//! [`ShardCopy`] made from the value (an acceptor, a deep copy whose refcount no other core
//! touches) and compares generations when it reads it: one atomic load while nothing changed, so
//! the hot path takes no lock. The lock is taken only by a reload and by the first read on each
//! shard after one.
//!
//! The listener's TLS configuration (`tls::listener`) and the running `[auth]` are such values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A process-wide value replaced whole by a reload; empty until the first [`replace`](Self::replace).
pub struct Reloadable<T> {
    value: RwLock<Option<Arc<T>>>,
    /// Bumped by every change, so shards notice one with an atomic load.
    generation: AtomicU64,
}

impl<T> Default for Reloadable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Reloadable<T> {
    /// An empty slot (usable in a `static`).
    pub const fn new() -> Self {
        Reloadable {
            value: RwLock::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// Puts `value` (a `T` or an `Arc<T>`) in force; shards pick it up at their next read.
    pub fn replace(&self, value: impl Into<Arc<T>>) {
        let value = value.into();
        self.update_arc(|_| Some(value));
    }

    /// Empties the slot (a setting turned off); shards pick that up at their next read.
    pub fn clear(&self) {
        self.update_arc(|_| None);
    }

    /// Puts in force the value `next` makes from the current one, with no other change in
    /// between (for a value that carries state over from the one it replaces).
    pub fn update(&self, next: impl FnOnce(Option<&Arc<T>>) -> Option<T>) {
        self.update_arc(|current| next(current).map(Arc::new));
    }

    fn update_arc(&self, next: impl FnOnce(Option<&Arc<T>>) -> Option<Arc<T>>) {
        // A panic while holding the lock cannot leave a half-written Option; take it back.
        let mut slot = self
            .value
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = next(slot.as_ref());
        // Bumped under the lock, so generations follow the order the values were written in.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The value in force (`None`: nothing installed, or cleared).
    pub fn current(&self) -> Option<Arc<T>> {
        match self.value.read() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a value is in force.
    pub fn is_set(&self) -> bool {
        self.current().is_some()
    }

    /// The number of changes so far: a shard whose copy was made at another generation remakes it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// One shard's own copy made from a [`Reloadable`], remade when the slot's generation moves.
/// Kept in a `thread_local!` `RefCell` by the module that owns the slot.
pub struct ShardCopy<U> {
    generation: u64,
    copy: U,
}

impl<U> ShardCopy<U> {
    /// The copy a shard starts with, standing for the empty slot of generation 0.
    pub const fn new(copy: U) -> Self {
        ShardCopy {
            generation: 0,
            copy,
        }
    }

    /// The copy for the value in force: one atomic load when the slot has not changed since the
    /// copy was made; otherwise `make` builds a new one from the value in force (`None` when the
    /// slot is empty) and the copy it replaces.
    pub fn refresh<T>(
        &mut self,
        slot: &Reloadable<T>,
        make: impl FnOnce(Option<Arc<T>>, &U) -> U,
    ) -> &U {
        let generation = slot.generation();
        if self.generation != generation {
            // Read after the generation: the value is at least as new as it says.
            self.copy = make(slot.current(), &self.copy);
            self.generation = generation;
        }
        &self.copy
    }

    /// The generation of the slot this copy was last made from.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_copy_follows_each_replacement_and_is_kept_while_nothing_changes() {
        let slot: Reloadable<String> = Reloadable::new();
        let mut copy = ShardCopy::new(String::from("none"));
        let mut made = 0;
        let read = |copy: &mut ShardCopy<String>, made: &mut usize| {
            copy.refresh(&slot, |value, _| {
                *made += 1;
                value.map_or_else(|| "none".into(), |v| v.to_uppercase())
            })
            .clone()
        };
        assert_eq!(read(&mut copy, &mut made), "none");
        assert_eq!(made, 0, "an empty slot at generation 0 is the initial copy");
        slot.replace(String::from("a"));
        assert_eq!(read(&mut copy, &mut made), "A");
        assert_eq!(read(&mut copy, &mut made), "A");
        assert_eq!(made, 1, "the copy is remade once per change");
        slot.replace(String::from("b"));
        assert_eq!(read(&mut copy, &mut made), "B");
        slot.clear();
        assert_eq!(read(&mut copy, &mut made), "none");
        assert!(!slot.is_set());
        assert_eq!(slot.generation(), 3);
    }

    #[test]
    fn an_update_sees_the_value_it_replaces() {
        let slot: Reloadable<Vec<u32>> = Reloadable::new();
        slot.replace(vec![1]);
        slot.update(|old| {
            let mut next = old.map_or_else(Vec::new, |o| o.to_vec());
            next.push(2);
            Some(next)
        });
        assert_eq!(slot.current().as_deref(), Some(&vec![1, 2]));
        // The copy is told what it replaces, to carry per-shard state over.
        let mut copy = ShardCopy::new(vec![0]);
        let kept = copy.refresh(&slot, |value, old| {
            let mut next = old.clone();
            next.extend(value.map_or_else(Vec::new, |v| v.to_vec()));
            next
        });
        assert_eq!(kept, &vec![0, 1, 2]);
    }
}
