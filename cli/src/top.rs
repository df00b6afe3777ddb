//! `mcpctl top`: per-server rate, p50/p99, errors and health, refreshed in place.
//!
//! The rate is the change of each server's request count between two samples of
//! `/api/v1/stats`, so even `--once` takes two samples, `--interval` apart.
//!
//! With `--replicas`, every HTTP server also gets a row per replica, indented under it, from
//! `/api/v1/servers/NAME/replicas` (one request per server per frame; the replica rate is the
//! change of its request count since the previous frame, like the server's). A server whose
//! replicas could not be read gets a marker line instead, and the rest of the frame stands.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::admin::Admin;
use crate::fail::Failure;
use crate::replicas::probes;
use crate::table::{cell, ms, Table};

/// One sample of each HTTP server's replicas: the API's answer, or why it could not be had.
type Replicas = HashMap<String, Result<Value, String>>;

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

/// Requests per second, one decimal.
fn rate(delta: u64, secs: f64) -> f64 {
    (delta as f64 / secs * 10.0).round() / 10.0
}

/// Reads the replicas of every HTTP server in `health` (a stdio server has none to read).
fn sample_replicas(admin: &Admin, health: &Value) -> Replicas {
    let mut out = HashMap::new();
    for (name, h) in health
        .get("servers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if h.get("replicas").is_none() {
            continue;
        }
        let path = format!("servers/{}/replicas", crate::encode(name));
        out.insert(name.clone(), admin.get(&path).map_err(|e| e.message));
    }
    out
}

/// The replica rows of one server: each replica's numbers, with its rate against `before`
/// (null when the previous sample did not have this replica at this index and URL).
fn replica_rows(before: Option<&Value>, after: &Value, secs: f64) -> Vec<Value> {
    let previous = |index: &Value, url: &Value| {
        before?["replicas"]
            .as_array()?
            .iter()
            .find(|r| &r["index"] == index && &r["url"] == url)?["requests"]
            .as_u64()
    };
    let mut rows = Vec::new();
    for r in after["replicas"].as_array().into_iter().flatten() {
        let requests = r["requests"].as_u64();
        let rate = match (requests, previous(&r["index"], &r["url"])) {
            (Some(now), Some(then)) => json!(rate(now.saturating_sub(then), secs)),
            _ => Value::Null,
        };
        rows.push(json!({
            "index": r["index"],
            "url": r["url"],
            "status": r["status"],
            "healthy": r["healthy"],
            "ejected": r["ejected"],
            "drain": r["drain"],
            "inflight": r["inflight"],
            "rate": rate,
            "requests": r["requests"],
            "errors": r["errors"],
            "p50_us": r["latency_us"]["p50"],
            "p99_us": r["latency_us"]["p99"],
            "probes": r["probes"],
            "probe_errors": r["probe_errors"],
        }));
    }
    rows
}

/// One frame: a JSON document with a row per server; with replica samples (before, after),
/// each HTTP server's row carries `replicas` (or `replicas_error` when they could not be read).
fn frame(
    before: &Value,
    after: &Value,
    health: &Value,
    elapsed: Duration,
    replicas: Option<(&Replicas, &Replicas)>,
) -> Value {
    let prev = counts(before);
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut rows = Vec::new();
    if let Some(servers) = health.get("servers").and_then(Value::as_object) {
        for (name, h) in servers {
            let s = &after["servers"][name];
            let requests = s["requests"].as_u64().unwrap_or(0);
            let delta = requests.saturating_sub(prev.get(name).copied().unwrap_or(0));
            let mut row = json!({
                "server": name,
                "health": h["status"],
                "state": h["state"],
                "rate": rate(delta, secs),
                "p50_us": s["request"]["p50"],
                "p99_us": s["request"]["p99"],
                "requests": requests,
                "errors": s["errors"],
            });
            match replicas.and_then(|(b, a)| Some((b.get(name), a.get(name)?))) {
                Some((b, Ok(a))) => {
                    let reps = replica_rows(b.and_then(|b| b.as_ref().ok()), a, secs);
                    let inflight: u64 = reps.iter().filter_map(|r| r["inflight"].as_u64()).sum();
                    row["inflight"] = inflight.into();
                    row["replicas"] = reps.into();
                }
                Some((_, Err(e))) => row["replicas_error"] = e.clone().into(),
                None => {}
            }
            rows.push(row);
        }
    }
    json!({"interval_s": secs, "replicas": replicas.is_some(), "servers": rows})
}

/// REQ/S, P50 MS, P99 MS, REQUESTS and ERRORS, read alike from a server's row and a replica's.
fn traffic_cells(row: &Value) -> [String; 5] {
    [
        cell(row.get("rate")),
        ms(row.get("p50_us")),
        ms(row.get("p99_us")),
        cell(row.get("requests")),
        cell(row.get("errors")),
    ]
}

fn render(frame: &Value) -> String {
    let with_replicas = frame["replicas"] == true;
    let mut header = vec![
        "SERVER", "HEALTH", "STATE", "REQ/S", "P50 MS", "P99 MS", "REQUESTS", "ERRORS",
    ];
    if with_replicas {
        header.extend(["INFLIGHT", "PROBES"]);
    }
    let mut t = Table::new(&header);
    for r in frame["servers"].as_array().into_iter().flatten() {
        let mut cells = vec![
            cell(r.get("server")),
            cell(r.get("health")),
            cell(r.get("state")),
        ];
        cells.extend(traffic_cells(r));
        if with_replicas {
            cells.extend([cell(r.get("inflight")), "-".to_owned()]);
        }
        t.row(cells);
        if let Some(e) = r.get("replicas_error").and_then(Value::as_str) {
            t.note(format!("  ! replicas unavailable: {e}"));
        }
        for rep in r["replicas"].as_array().into_iter().flatten() {
            let mut cells = vec![
                format!("  #{} {}", cell(rep.get("index")), cell(rep.get("url"))),
                match rep.get("healthy") {
                    Some(Value::Bool(true)) => "up".to_owned(),
                    Some(Value::Bool(false)) => "down".to_owned(),
                    other => cell(other),
                },
                cell(rep.get("status")),
            ];
            cells.extend(traffic_cells(rep));
            cells.extend([cell(rep.get("inflight")), probes(rep)]);
            t.row(cells);
        }
    }
    t.render()
}

/// Shows the table every `interval` until interrupted (or once, with `once`). When the proxy
/// stops answering (a restart, a crash), the screen says so and `top` keeps asking every
/// `interval`; the rates start again from the first answer after it is back. `--once` fails
/// at once instead, with the exit code of the failure.
pub fn run(
    admin: &Admin,
    interval: Duration,
    once: bool,
    replicas: bool,
    as_json: bool,
) -> Result<(), Failure> {
    let sample = |replicas: bool| -> Result<(Value, Value, Replicas), Failure> {
        let stats = admin.get("stats")?;
        let health = admin.get("health")?;
        let reps = if replicas {
            sample_replicas(admin, &health)
        } else {
            Replicas::new()
        };
        Ok((stats, health, reps))
    };
    // The previous sample, when the proxy answered the last time it was asked.
    let mut previous: Option<(Value, Replicas, Instant)> = None;
    loop {
        match sample(replicas) {
            Ok((after, health, reps_after)) => {
                let now = Instant::now();
                if let Some((before, reps_before, at)) = &previous {
                    let samples = replicas.then_some((reps_before, &reps_after));
                    let f = frame(before, &after, &health, now - *at, samples);
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
                }
                previous = Some((after, reps_after, now));
            }
            Err(e) if once => return Err(e),
            Err(e) => {
                previous = None;
                if as_json {
                    println!("{}", json!({"error": e.message}));
                } else {
                    print!("\x1b[2J\x1b[H");
                    println!(
                        "mcp-proxy at {} does not answer; asking again every {:.1}s \
                         (Ctrl-C to quit)\n{}",
                        admin.url.authority,
                        interval.as_secs_f64(),
                        e.message
                    );
                }
            }
        }
        std::thread::sleep(interval);
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
        let f = frame(&before, &after, &health, Duration::from_secs(2), None);
        assert_eq!(f["servers"][0]["rate"], 10.0);
        assert!(f["servers"][0].get("replicas").is_none());
        let text = render(&f);
        assert!(text.contains("1.5"), "{text}");
        assert!(text.contains("9.0"), "{text}");
        assert!(!text.contains("INFLIGHT"), "{text}");
    }

    fn replica(index: u64, url: &str, status: &str, requests: u64) -> Value {
        json!({"index": index, "url": url, "status": status, "healthy": status != "unhealthy",
            "ejected": status == "ejected", "drain": status == "drained", "inflight": index,
            "requests": requests, "errors": index, "probes": 20, "probe_errors": index * 2,
            "latency_us": {"p50": 1000 * (index + 1), "p99": 7000 * (index + 1)}})
    }

    fn answer(reps: Vec<Value>) -> Result<Value, String> {
        Ok(json!({"server": "fleet", "replicas": reps}))
    }

    #[test]
    fn replica_rows_show_state_rate_latency_and_probe_failures() {
        let stats = json!({"servers": {"fleet": {"requests": 0}, "kid": {"requests": 0}}});
        let health = json!({"servers": {
            "fleet": {"status": "up", "state": "active", "replicas": {"healthy": 3, "total": 3}},
            "kid": {"status": "up", "state": "active"}}});
        let before: Replicas = [(
            "fleet".to_owned(),
            answer(vec![
                replica(0, "http://a/mcp", "active", 100),
                replica(1, "http://b/mcp", "active", 50),
            ]),
        )]
        .into();
        let after: Replicas = [(
            "fleet".to_owned(),
            answer(vec![
                replica(0, "http://a/mcp", "active", 140),
                replica(1, "http://b/mcp", "drained", 50),
                // Not in the previous sample: no rate rather than a spike.
                replica(2, "http://c/mcp", "ejected", 9),
            ]),
        )]
        .into();
        let f = frame(
            &stats,
            &stats,
            &health,
            Duration::from_secs(4),
            Some((&before, &after)),
        );
        let fleet = &f["servers"][0];
        assert_eq!(fleet["server"], "fleet");
        assert_eq!(fleet["inflight"], 3);
        let reps = fleet["replicas"].as_array().expect("replica rows");
        assert_eq!(reps.len(), 3);
        assert_eq!(reps[0]["rate"], 10.0);
        assert_eq!(reps[1]["rate"], 0.0);
        assert_eq!(reps[2]["rate"], Value::Null);
        assert_eq!(reps[1]["status"], "drained");
        // A stdio server has no replicas to show and no marker.
        assert!(f["servers"][1].get("replicas").is_none());
        assert!(f["servers"][1].get("replicas_error").is_none());

        let text = render(&f);
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle} in\n{text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert!(text.starts_with("SERVER"), "{text}");
        assert!(
            text.lines().next().unwrap_or("").contains("PROBES"),
            "{text}"
        );
        assert_eq!(
            line("http://a/mcp").join(" "),
            "#0 http://a/mcp up active 10.0 1.0 7.0 140 0 0 20"
        );
        assert_eq!(
            line("http://b/mcp").join(" "),
            "#1 http://b/mcp up drained 0.0 2.0 14.0 50 1 1 20 (2 failed)"
        );
        assert_eq!(line("http://c/mcp")[3..5], ["ejected", "-"]);
        // Replica rows sit under their server, indented.
        let order: Vec<&str> = text.lines().map(str::trim_start).collect();
        let at = |p: &str| order.iter().position(|l| l.starts_with(p));
        assert!(at("fleet") < at("#0") && at("#2") < at("kid"), "{text}");
        assert!(text.contains("\n  #0 http://a/mcp"), "{text}");
    }

    #[test]
    fn a_server_whose_replicas_fail_gets_a_marker_and_the_frame_stands() {
        let stats = json!({"servers": {"a": {"requests": 5}, "b": {"requests": 5}}});
        let health = json!({"servers": {
            "a": {"status": "up", "state": "active", "replicas": {"healthy": 1, "total": 1}},
            "b": {"status": "up", "state": "active", "replicas": {"healthy": 1, "total": 1}}}});
        let before = Replicas::new();
        let after: Replicas = [
            (
                "a".to_owned(),
                Err("cannot reach mcp-proxy (timed out)".to_owned()),
            ),
            (
                "b".to_owned(),
                answer(vec![replica(0, "http://b/mcp", "active", 3)]),
            ),
        ]
        .into();
        let f = frame(
            &stats,
            &stats,
            &health,
            Duration::from_secs(1),
            Some((&before, &after)),
        );
        assert_eq!(
            f["servers"][0]["replicas_error"],
            "cannot reach mcp-proxy (timed out)"
        );
        assert_eq!(f["servers"][1]["replicas"][0]["url"], "http://b/mcp");
        let text = render(&f);
        assert!(
            text.contains("  ! replicas unavailable: cannot reach mcp-proxy (timed out)\nb "),
            "{text}"
        );
        assert!(text.contains("  #0 http://b/mcp"), "{text}");
    }
}
