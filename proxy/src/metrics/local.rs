//! Requests the proxy answers itself, without an upstream: `ping`, the merged lists, its own
//! tools and resources, and every refusal it gives (unknown tool, prompt or resource, unknown
//! method, missing parameters). Counted apart from `requests_total`, which has a `server`
//! label: a load test that only ever hits an unknown name shows up here.
//!
//! Labels are bounded: the method is one of [`Method`]'s values and the outcome `ok` or
//! `error`. Handles are resolved on first use per thread and kept in a thread-local array, so
//! counting costs one atomic add.

use std::cell::RefCell;

use metrics::Counter;

use super::labels::{Method, Outcome};
use super::names::LOCAL_ANSWERS;

/// Outcomes a local answer can have (`ok`, `error`): the first two of [`Outcome`].
const OUTCOMES: usize = 2;

thread_local! {
    static HANDLES: RefCell<[Option<Counter>; Method::COUNT * OUTCOMES]> =
        const { RefCell::new([const { None }; Method::COUNT * OUTCOMES]) };
}

/// Sets the HELP text.
pub(super) fn describe() {
    metrics::describe_counter!(
        LOCAL_ANSWERS,
        "Requests the proxy answered itself without an upstream (ping, merged lists, its own tools, refusals such as an unknown tool or method), by MCP method and outcome (ok, error)"
    );
}

/// Counts an answer the proxy gave itself to a request of `method`: `outcome` is `Ok` or
/// `Error` (any other value counts as an error).
pub fn answered(method: &str, outcome: Outcome) {
    let outcome = if outcome == Outcome::Ok {
        Outcome::Ok
    } else {
        Outcome::Error
    };
    let method = Method::of(method);
    let slot = method as usize * OUTCOMES + outcome as usize;
    HANDLES.with(|h| {
        let mut handles = h.borrow_mut();
        if let Some(handle) = handles.get_mut(slot) {
            handle
                .get_or_insert_with(|| {
                    metrics::counter!(LOCAL_ANSWERS,
                        "method" => method.label(),
                        "outcome" => outcome.label())
                })
                .increment(1);
        }
    });
}
