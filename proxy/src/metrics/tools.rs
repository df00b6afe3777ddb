//! Calls per tool on this shard: counts, failures and time, for the fleet views
//! (`optimize_performance` finds hot and failing tools with them).
//!
//! A thread-local table, so recording takes no lock; the views ask every shard over the mesh
//! and add the answers up. The table is bounded: once it holds [`MAX_TOOLS`] tools, tools not
//! seen before are not counted (the catalog rarely has that many).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use super::labels::Outcome;

/// Most distinct (server, tool) pairs one shard counts.
pub const MAX_TOOLS: usize = 4096;

/// One tool's calls as counted on one shard (or added up over shards).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCounts {
    /// Server index.
    pub server: usize,
    /// The tool's name on its server.
    pub tool: String,
    /// Calls that ended.
    pub calls: u64,
    /// Calls answered with a JSON-RPC error, or not answered.
    pub errors: u64,
    /// Sum of the calls' times, in microseconds.
    pub total_us: u64,
    /// Longest call, in microseconds.
    pub max_us: u64,
}

thread_local! {
    static TABLE: RefCell<HashMap<(usize, Box<str>), ToolCounts>> = RefCell::new(HashMap::new());
}

/// Counts one call of `tool` on `server` that ended with `outcome` after `took`.
pub fn record(server: usize, tool: Box<str>, outcome: Outcome, took: Duration) {
    if outcome == Outcome::Cancelled {
        return;
    }
    let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let full = t.len() >= MAX_TOOLS;
        let key = (server, tool);
        let c = match t.get_mut(&key) {
            Some(c) => c,
            None if full => return,
            None => t.entry(key.clone()).or_insert_with(|| ToolCounts {
                server,
                tool: key.1.to_string(),
                ..ToolCounts::default()
            }),
        };
        c.calls += 1;
        if outcome != Outcome::Ok {
            c.errors += 1;
        }
        c.total_us = c.total_us.saturating_add(us);
        c.max_us = c.max_us.max(us);
    });
}

/// Everything this shard counted.
pub fn snapshot() -> Vec<ToolCounts> {
    TABLE.with(|t| t.borrow().values().cloned().collect())
}

/// Adds shards' counts up, per (server, tool).
pub fn merge(all: impl IntoIterator<Item = ToolCounts>) -> Vec<ToolCounts> {
    let mut by: HashMap<(usize, String), ToolCounts> = HashMap::new();
    for c in all {
        let e = by
            .entry((c.server, c.tool.clone()))
            .or_insert_with(|| ToolCounts {
                server: c.server,
                tool: c.tool.clone(),
                ..ToolCounts::default()
            });
        e.calls += c.calls;
        e.errors += c.errors;
        e.total_us = e.total_us.saturating_add(c.total_us);
        e.max_us = e.max_us.max(c.max_us);
    }
    let mut out: Vec<ToolCounts> = by.into_values().collect();
    out.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.tool.cmp(&b.tool)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_across_shards_and_cancelled_calls_do_not_count() {
        record(0, "echo".into(), Outcome::Ok, Duration::from_millis(2));
        record(0, "echo".into(), Outcome::Error, Duration::from_millis(4));
        record(
            0,
            "echo".into(),
            Outcome::Cancelled,
            Duration::from_millis(9),
        );
        let mine = snapshot();
        let other = vec![ToolCounts {
            server: 0,
            tool: "echo".into(),
            calls: 3,
            errors: 0,
            total_us: 3000,
            max_us: 1000,
        }];
        let merged = merge(mine.into_iter().chain(other));
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].calls, 5);
        assert_eq!(merged[0].errors, 1);
        assert_eq!(merged[0].total_us, 9000);
        assert_eq!(merged[0].max_us, 4000);
    }
}
