//! How many retries a shard may still spend on one server.

use std::cell::Cell;

/// Retries a shard may spend on one server: each request earns a tenth of a retry, up to a
/// reserve of ten, so retries stay a small share of traffic when a whole fleet fails.
#[derive(Debug)]
pub struct RetryBudget {
    /// In tenths of a retry, so earning is exact.
    tenths: Cell<u32>,
}

/// Largest reserve, in tenths of a retry.
const RETRY_RESERVE_TENTHS: u32 = 100;

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            tenths: Cell::new(RETRY_RESERVE_TENTHS),
        }
    }
}

impl RetryBudget {
    /// A request was sent: a tenth of a retry earned.
    pub fn deposit(&self) {
        self.tenths
            .set((self.tenths.get() + 1).min(RETRY_RESERVE_TENTHS));
    }

    /// Takes one retry; false when the budget is spent.
    pub fn withdraw(&self) -> bool {
        let t = self.tenths.get();
        if t >= 10 {
            self.tenths.set(t - 10);
            true
        } else {
            false
        }
    }
}
