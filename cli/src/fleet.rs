//! `mcpctl --all stats|top|sessions`: every member of the fleet, asked at once and merged.
//!
//! The members come from `GET /api/v1/cluster` of the proxy `--admin-url` names; each is then
//! asked at the admin address it publishes in its membership record (the one `--admin-url`
//! names is asked there, so a member behind a port mapping still answers). Every member is
//! sent the same admin token: a fleet shares one `[proxy] admin_token` (as it shares its
//! session key); a member that refuses it is shown as `unauthorized`, not as a failure of the
//! whole command, and so is a member that cannot be reached.
//!
//! Merges: counts are summed. Latency quantiles cannot be summed or averaged (the mean of two
//! p99s is the p99 of nothing), and the members publish quantiles rather than histograms, so
//! the fleet row shows the **worst member's** quantile, labelled as such, with each member's
//! own row beside it; the fleet's `max` is exact (the largest of the members').

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::admin::Admin;
use crate::fail::{Code, Failure};
use crate::http::Url;
use crate::table::{cell, ms, request_cells, Table};
use crate::Out;

/// The label of merged rows.
const FLEET: &str = "(fleet)";

/// A member as `GET /api/v1/cluster` lists it, and how to ask it.
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its admin API; `None` when it publishes no admin listener.
    pub admin: Option<Admin>,
}

/// The members of the fleet `admin` belongs to.
pub fn members(admin: &Admin) -> Result<Vec<Member>, Failure> {
    let view = match admin.get("cluster") {
        Err(f) if f.code == Code::NotFound || f.message.contains("not_clustered") => {
            return Err(Failure::usage(format!(
                "--all asks every member of a fleet, and the proxy at {} runs alone ({}); \
                 drop --all, or point --admin-url at a fleet member",
                admin.url.authority, f.message
            )))
        }
        other => other?,
    };
    let own = view["name"].as_str().unwrap_or_default();
    let mut out = Vec::new();
    for m in view["members"].as_array().into_iter().flatten() {
        let name = cell(m.get("name"));
        let url = if name == own {
            Some(admin.url.clone())
        } else {
            m["admin"]
                .as_str()
                .and_then(|a| Url::parse(&format!("http://{a}")).ok())
        };
        out.push(Member {
            name,
            admin: url.map(|url| Admin {
                url,
                token: admin.token.clone(),
            }),
        });
    }
    if out.is_empty() {
        return Err(Failure::error(format!(
            "the proxy at {} lists no members (is etcd reachable? `mcpctl cluster ls` says)",
            admin.url.authority
        )));
    }
    Ok(out)
}

/// Asks every member `path` at once: each member's answer, or why it has none
/// (`unreachable: ...`, `unauthorized: ...`, `no admin listener`).
pub fn ask_all(members: &[Member], path: &str) -> Vec<Result<Value, String>> {
    std::thread::scope(|s| {
        let asks: Vec<_> = members
            .iter()
            .map(|m| s.spawn(move || ask(m, path)))
            .collect();
        asks.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("error: the request panicked".into()))
            })
            .collect()
    })
}

fn ask(member: &Member, path: &str) -> Result<Value, String> {
    let admin = member
        .admin
        .as_ref()
        .ok_or_else(|| "no admin listener".to_owned())?;
    admin.get(path).map_err(|f| {
        let kind = match f.code {
            Code::Unreachable => "unreachable",
            Code::Unauthorized => "unauthorized",
            _ => "error",
        };
        format!("{kind}: {}", f.message)
    })
}

/// The word shown for a member without an answer.
fn state(error: &str) -> &str {
    error.split(':').next().unwrap_or(error)
}

/// The fleet's sessions: each member's total and per shard, and their sum.
pub fn sessions(members: &[Member], out: &Out) {
    let answers = ask_all(members, "sessions");
    let mut rows = Vec::new();
    let mut total = 0;
    for (m, a) in members.iter().zip(&answers) {
        rows.push(match a {
            Ok(v) => {
                total += v["total"].as_u64().unwrap_or(0);
                json!({"member": m.name, "status": "ok", "total": v["total"],
                       "per_shard": v["per_shard"]})
            }
            Err(e) => json!({"member": m.name, "status": state(e), "error": e}),
        });
    }
    let v = json!({"members": rows, "total": total});
    out.print(&v, || {
        let mut t = Table::new(&["MEMBER", "SESSIONS", "PER SHARD"]);
        for r in v["members"].as_array().into_iter().flatten() {
            let per_shard: Vec<String> = r["per_shard"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Value::to_string)
                .collect();
            t.row(vec![
                cell(r.get("member")),
                if r["status"] == "ok" {
                    cell(r.get("total"))
                } else {
                    cell(r.get("status"))
                },
                per_shard.join(" "),
            ]);
        }
        t.row(vec![FLEET.to_owned(), total.to_string(), String::new()]);
        let mut text = t.render();
        text.push_str(&unanswered(&v));
        text
    });
}

/// Lines naming each member that did not answer and why.
fn unanswered(v: &Value) -> String {
    let mut text = String::new();
    for r in v["members"].as_array().into_iter().flatten() {
        if let Some(e) = r.get("error").and_then(Value::as_str) {
            text.push_str(&format!("{}: {e}\n", cell(r.get("member"))));
        }
    }
    text
}

/// The quantile names a stats answer gives per latency.
const QUANTILES: [&str; 5] = ["p50", "p90", "p99", "p99_9", "max"];

/// Merges one latency of several members: the count summed, each quantile the worst
/// member's (`max` is then exact), labelled `merge: "worst_member"`.
fn worst(latencies: &[&Value]) -> Value {
    let mut merged = Map::new();
    let count: u64 = latencies.iter().filter_map(|l| l["count"].as_u64()).sum();
    merged.insert("count".into(), count.into());
    for q in QUANTILES {
        let w = latencies
            .iter()
            .filter(|l| l["count"].as_u64().unwrap_or(0) > 0)
            .filter_map(|l| l[q].as_u64())
            .max()
            // No samples anywhere: 0, as a member itself reports an empty histogram.
            .unwrap_or(0);
        merged.insert(q.into(), w.into());
    }
    merged.insert("merge".into(), "worst_member".into());
    Value::Object(merged)
}

/// The fleet's figures from each member's `/api/v1/stats` answer: per server, requests and
/// errors summed, latencies merged by [`worst`].
fn merge_stats(answers: &[&Value]) -> Value {
    let mut names: Vec<&String> = answers
        .iter()
        .filter_map(|a| a["servers"].as_object())
        .flat_map(|m| m.keys())
        .collect();
    names.sort();
    names.dedup();
    let mut servers = Map::new();
    for name in names {
        let of: Vec<&Value> = answers
            .iter()
            .map(|a| &a["servers"][name.as_str()])
            .filter(|s| !s.is_null())
            .collect();
        let sum = |k: &str| of.iter().filter_map(|s| s[k].as_u64()).sum::<u64>();
        let lat = |k: &str| worst(&of.iter().map(|s| &s[k]).collect::<Vec<_>>());
        servers.insert(
            name.clone(),
            json!({"requests": sum("requests"), "errors": sum("errors"),
                   "request": lat("request"), "upstream": lat("upstream"),
                   "overhead": lat("overhead")}),
        );
    }
    let e2e: Vec<&Value> = answers.iter().map(|a| &a["end_to_end"]).collect();
    json!({"end_to_end": worst(&e2e), "servers": servers})
}

/// The fleet's stats: a row per member and server, and a merged row per server.
pub fn stats(members: &[Member], out: &Out) {
    let answers = ask_all(members, "stats");
    let mut rows = Vec::new();
    for (m, a) in members.iter().zip(&answers) {
        rows.push(match a {
            Ok(v) => json!({"member": m.name, "status": "ok", "stats": v}),
            Err(e) => json!({"member": m.name, "status": state(e), "error": e}),
        });
    }
    let ok: Vec<&Value> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    let v = json!({
        "members": rows,
        "fleet": merge_stats(&ok),
        "merge": "counts are summed over the members that answered; each latency quantile of \
                  the fleet is the worst member's (quantiles cannot be averaged); max is exact",
    });
    out.print(&v, || render_stats(&v));
}

fn render_stats(v: &Value) -> String {
    let mut t = Table::new(&[
        "MEMBER", "SERVER", "REQUESTS", "ERRORS", "P50 MS", "P90 MS", "P99 MS", "MAX MS",
    ]);
    let mut line = |member: String, server: &str, s: &Value| {
        let mut row = vec![member, server.to_owned()];
        row.extend(request_cells(s));
        t.row(row);
    };
    let mut e2e = String::new();
    for r in v["members"].as_array().into_iter().flatten() {
        let member = cell(r.get("member"));
        if r["status"] != "ok" {
            line(member.clone(), "-", &Value::Null);
            e2e.push_str(&format!("{member}: {}\n", cell(r.get("error"))));
            continue;
        }
        let stats = &r["stats"];
        for (name, s) in stats["servers"].as_object().into_iter().flatten() {
            line(member.clone(), name, s);
        }
        let e = &stats["end_to_end"];
        e2e.push_str(&format!(
            "{member}: end to end {} messages, p50 {} ms, p99 {} ms\n",
            cell(e.get("count")),
            ms(e.get("p50")),
            ms(e.get("p99"))
        ));
    }
    let fleet = &v["fleet"];
    for (name, s) in fleet["servers"].as_object().into_iter().flatten() {
        line(FLEET.to_owned(), name, s);
    }
    let e = &fleet["end_to_end"];
    format!(
        "{}{e2e}{FLEET}: end to end {} messages, worst member's p50 {} ms, p99 {} ms\n\
         {FLEET} rows: counts summed; P50/P90/P99 are the worst member's (quantiles are not \
         averaged), MAX is the fleet's\n",
        t.render(),
        cell(e.get("count")),
        ms(e.get("p50")),
        ms(e.get("p99"))
    )
}

/// `top --all`: each member's rate, latency and errors per server, and the fleet's (rates and
/// counts summed, quantiles the worst member's), refreshed every `interval`.
pub fn top(members: &[Member], interval: Duration, once: bool, as_json: bool) {
    let mut previous: Option<(Vec<Result<Value, String>>, Instant)> = None;
    loop {
        let now_stats = ask_all(members, "stats");
        let now = Instant::now();
        if let Some((before, at)) = &previous {
            let f = top_frame(members, before, &now_stats, now - *at);
            if as_json {
                println!("{f}");
            } else {
                if !once {
                    print!("\x1b[2J\x1b[H");
                    println!(
                        "the fleet, {} members (every {:.1}s, Ctrl-C to quit)\n",
                        members.len(),
                        interval.as_secs_f64()
                    );
                }
                print!("{}", render_top(&f));
            }
            if once {
                return;
            }
        }
        previous = Some((now_stats, now));
        std::thread::sleep(interval);
    }
}

fn top_frame(
    members: &[Member],
    before: &[Result<Value, String>],
    after: &[Result<Value, String>],
    elapsed: Duration,
) -> Value {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut rows = Vec::new();
    let mut fleet: std::collections::BTreeMap<String, (f64, u64, u64, Vec<Value>)> =
        Default::default();
    for ((m, b), a) in members.iter().zip(before).zip(after) {
        let a = match a {
            Ok(a) => a,
            Err(e) => {
                rows.push(json!({"member": m.name, "status": state(e), "error": e}));
                continue;
            }
        };
        for (name, s) in a["servers"].as_object().into_iter().flatten() {
            let requests = s["requests"].as_u64().unwrap_or(0);
            let then = b
                .as_ref()
                .ok()
                .and_then(|b| b["servers"][name.as_str()]["requests"].as_u64());
            // A member not answered before has no rate yet, rather than a spike.
            let rate = then.map(|t| round(requests.saturating_sub(t) as f64 / secs));
            let errors = s["errors"].as_u64().unwrap_or(0);
            rows.push(json!({"member": m.name, "status": "ok", "server": name,
                "rate": rate, "p50_us": s["request"]["p50"], "p99_us": s["request"]["p99"],
                "requests": requests, "errors": errors}));
            let f = fleet.entry(name.clone()).or_default();
            f.0 += rate.unwrap_or(0.0);
            f.1 += requests;
            f.2 += errors;
            f.3.push(s["request"].clone());
        }
    }
    let merged: Vec<Value> = fleet
        .into_iter()
        .map(|(name, (rate, requests, errors, lat))| {
            let w = worst(&lat.iter().collect::<Vec<_>>());
            json!({"server": name, "rate": round(rate), "p50_us": w["p50"], "p99_us": w["p99"],
                   "requests": requests, "errors": errors, "merge": "worst_member"})
        })
        .collect();
    json!({"interval_s": secs, "members": rows, "fleet": merged})
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn render_top(f: &Value) -> String {
    let mut t = Table::new(&[
        "MEMBER", "SERVER", "REQ/S", "P50 MS", "P99 MS", "REQUESTS", "ERRORS",
    ]);
    let mut notes = String::new();
    for r in f["members"].as_array().into_iter().flatten() {
        if r["status"] != "ok" {
            t.row(vec![
                cell(r.get("member")),
                cell(r.get("status")),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            notes.push_str(&format!(
                "{}: {}\n",
                cell(r.get("member")),
                cell(r.get("error"))
            ));
            continue;
        }
        t.row(top_cells(cell(r.get("member")), r));
    }
    for r in f["fleet"].as_array().into_iter().flatten() {
        t.row(top_cells(FLEET.to_owned(), r));
    }
    format!(
        "{}{notes}{FLEET} rows: rates and counts summed; P50/P99 are the worst member's\n",
        t.render()
    )
}

fn top_cells(member: String, r: &Value) -> Vec<String> {
    vec![
        member,
        cell(r.get("server")),
        cell(r.get("rate")),
        ms(r.get("p50_us")),
        ms(r.get("p99_us")),
        cell(r.get("requests")),
        cell(r.get("errors")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_summed_and_quantiles_are_the_worst_members() {
        let a = json!({"end_to_end": {"count": 10, "p50": 100, "p90": 200, "p99": 900,
                                      "p99_9": 900, "max": 950},
            "servers": {"ev": {"requests": 10, "errors": 1,
                "request": {"count": 10, "p50": 100, "p90": 200, "p99": 900, "p99_9": 900, "max": 950}}}});
        let b = json!({"end_to_end": {"count": 0, "p50": 0, "p90": 0, "p99": 0, "p99_9": 0, "max": 0},
            "servers": {"ev": {"requests": 5, "errors": 0,
                "request": {"count": 5, "p50": 300, "p90": 300, "p99": 400, "p99_9": 400, "max": 400}},
                "other": {"requests": 0, "errors": 0,
                "request": {"count": 0, "p50": 0, "p90": 0, "p99": 0, "p99_9": 0, "max": 0}}}});
        let m = merge_stats(&[&a, &b]);
        let ev = &m["servers"]["ev"];
        assert_eq!(ev["requests"], 15);
        assert_eq!(ev["errors"], 1);
        assert_eq!(ev["request"]["count"], 15);
        assert_eq!(ev["request"]["p50"], 300);
        assert_eq!(ev["request"]["p99"], 900);
        assert_eq!(ev["request"]["max"], 950);
        assert_eq!(ev["request"]["merge"], "worst_member");
        // A member without samples does not lower or raise the fleet's quantiles.
        assert_eq!(m["end_to_end"]["p50"], 100);
        assert_eq!(m["servers"]["other"]["request"]["p50"], 0);
    }
}
