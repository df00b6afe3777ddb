//! `mcpctl top`: per-server rate, p50/p99, errors and health, refreshed in place.
//!
//! The rate is the change of each server's request count between two samples of
//! `/api/v1/stats`, so even `--once` takes two samples, `--interval` apart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::admin::Admin;
use crate::fail::Failure;
use crate::table::{cell, ms, Table};

fn counts(stats: &Value) -> HashMap<String, u64> {
    stats
        .get("servers")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v["requests"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// One frame: a JSON document with a row per server.
fn frame(before: &Value, after: &Value, health: &Value, elapsed: Duration) -> Value {
    let prev = counts(before);
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut rows = Vec::new();
    if let Some(servers) = health.get("servers").and_then(Value::as_object) {
        for (name, h) in servers {
            let s = &after["servers"][name];
            let requests = s["requests"].as_u64().unwrap_or(0);
            let delta = requests.saturating_sub(prev.get(name).copied().unwrap_or(0));
            rows.push(json!({
                "server": name,
                "health": h["status"],
                "state": h["state"],
                "rate": (delta as f64 / secs * 10.0).round() / 10.0,
                "p50_us": s["request"]["p50"],
                "p99_us": s["request"]["p99"],
                "requests": requests,
                "errors": s["errors"],
            }));
        }
    }
    json!({"interval_s": secs, "servers": rows})
}

fn render(frame: &Value) -> String {
    let mut t = Table::new(&[
        "SERVER", "HEALTH", "STATE", "REQ/S", "P50 MS", "P99 MS", "REQUESTS", "ERRORS",
    ]);
    for r in frame["servers"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(r.get("server")),
            cell(r.get("health")),
            cell(r.get("state")),
            cell(r.get("rate")),
            ms(r.get("p50_us")),
            ms(r.get("p99_us")),
            cell(r.get("requests")),
            cell(r.get("errors")),
        ]);
    }
    t.render()
}

/// Runs `top`; with `once`, prints one frame and returns.
pub fn run(admin: &Admin, interval: Duration, once: bool, as_json: bool) -> Result<(), Failure> {
    let mut before = admin.get("stats")?;
    let mut at = Instant::now();
    loop {
        std::thread::sleep(interval);
        let after = admin.get("stats")?;
        let health = admin.get("health")?;
        let now = Instant::now();
        let f = frame(&before, &after, &health, now - at);
        if as_json {
            println!("{f}");
        } else {
            if !once {
                // Clear the screen and go home, so the table refreshes in place.
                print!("\x1b[2J\x1b[H");
                println!(
                    "mcp-proxy at {} (every {:.1}s, Ctrl-C to quit)\n",
                    admin.url.authority,
                    interval.as_secs_f64()
                );
            }
            print!("{}", render(&f));
        }
        if once {
            return Ok(());
        }
        (before, at) = (after, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_count_deltas() {
        let before = json!({"servers": {"a": {"requests": 10}}});
        let after = json!({"servers": {"a": {"requests": 30, "errors": 1,
            "request": {"p50": 1500, "p99": 9000}}}});
        let health = json!({"servers": {"a": {"status": "up", "state": "active"}}});
        let f = frame(&before, &after, &health, Duration::from_secs(2));
        assert_eq!(f["servers"][0]["rate"], 10.0);
        let text = render(&f);
        assert!(text.contains("1.5"), "{text}");
        assert!(text.contains("9.0"), "{text}");
    }
}
