//! Whether this shard is stopping, as the connections it serves need to know.
//!
//! On SIGTERM each shard stops accepting and calls [`begin`]: from then on every answer says
//! `Connection: close`, and connections waiting for their next request (idle keep-alive) are
//! closed at once, woken by [`started`]. Only requests in flight keep the shard, so the process
//! exits as soon as they are answered. [`finish`] marks the shard's executor as ending, after
//! which nothing may be spawned on it (see [`running`]).

use std::cell::Cell;
use std::rc::Rc;

use glommio::sync::Semaphore;

/// One shard's drain state.
struct Drain {
    /// Raised once the shard stops accepting.
    draining: Cell<bool>,
    /// Raised once the shard's own work is done and its executor is about to end.
    finished: Cell<bool>,
    /// Never has a permit: closed when draining begins, which wakes every waiter at once.
    /// Its waiters are intrusive (no allocation per idle connection).
    signal: Rc<Semaphore>,
}

thread_local! {
    static DRAIN: Drain = Drain {
        draining: Cell::new(false),
        finished: Cell::new(false),
        signal: Rc::new(Semaphore::new(0)),
    };
}

/// Starts draining this shard: connections close when idle, answers say `Connection: close`.
pub fn begin() {
    DRAIN.with(|d| {
        d.draining.set(true);
        d.signal.close();
    });
}

/// True once this shard drains.
pub fn draining() -> bool {
    DRAIN.with(|d| d.draining.get())
}

/// Resolves when this shard starts draining (at once if it has).
pub async fn started() {
    let signal = DRAIN.with(|d| d.signal.clone());
    // No permit is ever given: this returns only with the error of a closed semaphore.
    let _ = signal.acquire(1).await;
}

/// Marks this shard's executor as ending: tasks are no longer spawned on it.
pub fn finish() {
    DRAIN.with(|d| d.finished.set(true));
}

/// True while tasks may be spawned on this shard. Guards dropped while the executor tears down
/// its leftover tasks must not spawn (there is no executor to spawn on by then).
pub fn running() -> bool {
    DRAIN.try_with(|d| !d.finished.get()).unwrap_or(false)
}
