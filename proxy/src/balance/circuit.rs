//! The circuit of one replica: ejection after consecutive failures, half-open once the
//! ejection runs out, closed again by an answer; and the pause a replica asks for itself
//! (`Retry-After`), which keeps it out at least that long.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// First ejection of a failing replica; doubles on each further ejection, up to the max.
pub(super) const EJECT_MIN: Duration = Duration::from_secs(5);
pub(super) const EJECT_MAX: Duration = Duration::from_secs(60);
/// Longest pause a replica's own request for one (HTTP `Retry-After`, parsed by the transport)
/// keeps it out: the circuit's own longest ejection. One replica's header never keeps it out
/// longer than the circuit would for failures that go on; one still unavailable by then says
/// so again to the request the half-open circuit lets through, and is held again.
pub const HOLD_MAX: Duration = EJECT_MAX;

/// What a request's outcome did to a replica.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed.
    None,
    /// Taken out for this long after consecutive failures.
    Ejected(Duration),
    /// Back after an ejection.
    Restored,
}

/// One replica's circuit as one shard sees it.
#[derive(Debug, Default)]
pub struct Circuit {
    consecutive_failures: Cell<u32>,
    ejections: Cell<u32>,
    ejected_until: Cell<Option<Instant>>,
    /// The longest pause the replica asked for since its last success or ejection.
    asked: Cell<Option<Duration>>,
    /// The end of the pause the replica itself asked for: until then an answer (one already on
    /// its way, a health check) does not close its circuit.
    held_until: Cell<Option<Instant>>,
    /// When it last answered anything (an exchange, a health check).
    answered_at: Cell<Option<Instant>>,
}

impl Circuit {
    /// True unless ejected at `now` (an ejection that has run out is half-open: closed here).
    pub fn closed(&self, now: Instant) -> bool {
        self.ejected_until.get().is_none_or(|t| now >= t)
    }

    /// True while a pause the replica asked for (`Retry-After`) runs.
    pub fn paused(&self, now: Instant) -> bool {
        self.held_until.get().is_some_and(|t| now < t)
    }

    /// How long it stays ejected after `now` (zero when it is not).
    pub fn ejected_for(&self, now: Instant) -> Duration {
        self.ejected_until
            .get()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// Ejections in a row (reset once it answers again).
    pub fn ejections(&self) -> u32 {
        self.ejections.get()
    }

    /// Failures in a row.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.get()
    }

    /// True when the replica answered anything after `sent`.
    pub fn answered_since(&self, sent: Option<Instant>) -> bool {
        self.answered_at
            .get()
            .zip(sent)
            .is_some_and(|(answered, sent)| answered > sent)
    }

    /// The replica answered: the failures in a row end, and an ejection ends unless the
    /// replica's own pause still runs.
    pub fn succeeded(&self, now: Instant) -> Transition {
        self.answered_at.set(Some(now));
        self.consecutive_failures.set(0);
        self.asked.set(None);
        if self.held_until.get().is_some_and(|t| now < t) {
            // The replica asked for this pause; an answer that was already on its way, or a
            // sessionless health check, does not cut it short.
            return Transition::None;
        }
        self.held_until.set(None);
        if self.ejected_until.take().is_some() {
            self.ejections.set(0);
            return Transition::Restored;
        }
        Transition::None
    }

    /// The replica asked to get no work for `pause` (it answered "unavailable, retry after"):
    /// the failure that comes with it counts as usual, and whenever that ejects the replica the
    /// ejection lasts at least `pause`; an ejection already in force is lengthened to it. The
    /// request decides whether to eject (one answer of one request does not take a replica
    /// out), the replica how long. Capped at [`HOLD_MAX`], so no value keeps it out for good.
    pub fn asked_pause(&self, pause: Duration, now: Instant) {
        let pause = pause.min(HOLD_MAX);
        if pause.is_zero() {
            return;
        }
        match self.ejected_until.get() {
            Some(until) if now < until => {
                let end = now + pause;
                self.ejected_until.set(Some(until.max(end)));
                self.hold_until(end);
            }
            _ => self
                .asked
                .set(Some(self.asked.get().map_or(pause, |a| a.max(pause)))),
        }
    }

    fn hold_until(&self, end: Instant) {
        let held = self.held_until.get().map_or(end, |h| h.max(end));
        self.held_until.set(Some(held));
    }

    /// The replica failed; `threshold` failures in a row eject it.
    pub fn failed(&self, threshold: u32, now: Instant) -> Transition {
        // While the circuit is open a failure says nothing new: exchanges begun before it
        // opened, health checks, calls the panic rule let through. Counted, each would take
        // the replica out again for twice as long while it is down, and keep it out long after
        // it answers again. The half-open trial, once the ejection has run out, decides.
        if self.ejected_until.get().is_some_and(|t| now < t) {
            return Transition::None;
        }
        let failures = self.consecutive_failures.get() + 1;
        self.consecutive_failures.set(failures);
        // A half-open replica that fails again is ejected at once, for longer.
        let half_open = self.ejected_until.get().is_some_and(|t| now >= t);
        if failures >= threshold || half_open {
            let n = self.ejections.get();
            self.ejections.set(n + 1);
            let backoff = (EJECT_MIN * 2u32.saturating_pow(n)).min(EJECT_MAX);
            let asked = self.asked.take().unwrap_or_default();
            if !asked.is_zero() {
                self.hold_until(now + asked);
            }
            // Never shorter than an ejection already in force (one the replica asked for).
            let end = now + backoff.max(asked);
            let end = self.ejected_until.get().map_or(end, |t| t.max(end));
            self.ejected_until.set(Some(end));
            self.consecutive_failures.set(0);
            return Transition::Ejected(end.saturating_duration_since(now));
        }
        Transition::None
    }
}
