//! `mcpctl servers replicas NAME [INDEX]` and `servers drain|enable NAME --replica N`.
//!
//! Each returns the API's JSON and the table people read; `main` prints one or the other.

use serde_json::Value;

use crate::admin::Admin;
use crate::fail::Failure;
use crate::table::{cell, ms, Table};

/// REQUESTS and ERRORS count client requests only; PROBES are the health checks, apart.
const HEADER: [&str; 13] = [
    "#", "URL", "STATUS", "HEALTHY", "EJECTED", "INFLIGHT", "PICKS", "REQUESTS", "ERRORS",
    "PROBES", "EWMA MS", "P50 MS", "P99 MS",
];

/// The replicas of server `name` (already percent-encoded), or only replica `index`.
pub fn show(admin: &Admin, name: &str, index: Option<usize>) -> Result<(Value, String), Failure> {
    let path = match index {
        Some(i) => format!("servers/{name}/replicas/{i}"),
        None => format!("servers/{name}/replicas"),
    };
    let v = admin.get(&path)?;
    let text = render(&v);
    Ok((v, text))
}

/// Drains (`drain`) or enables replica `index` of server `name`; answers with the replica.
pub fn set_drain(
    admin: &Admin,
    name: &str,
    index: usize,
    drain: bool,
) -> Result<(Value, String), Failure> {
    let action = if drain { "drain" } else { "enable" };
    let v = admin.call(
        "POST",
        &format!("servers/{name}/replicas/{index}/{action}"),
        None,
    )?;
    let verb = if drain {
        "drained: no new sessions or stateless requests; bound sessions finish there"
    } else {
        "enabled: takes new work again"
    };
    let text = format!(
        "replica {index} of {} {verb}\n{}",
        cell(v.get("server")),
        render(&v)
    );
    Ok((v, text))
}

/// Health checks of a replica: how many, and how many failed when some did.
pub(crate) fn probes(r: &Value) -> String {
    match (r["probes"].as_u64(), r["probe_errors"].as_u64()) {
        (Some(n), Some(0)) => n.to_string(),
        (Some(n), Some(failed)) => format!("{n} ({failed} failed)"),
        _ => cell(r.get("probes")),
    }
}

/// The table of a replicas answer (a list, or one replica).
fn render(v: &Value) -> String {
    let mut t = Table::new(&HEADER);
    let list: Vec<&Value> = match v.get("replica") {
        Some(one) => vec![one],
        None => v["replicas"].as_array().into_iter().flatten().collect(),
    };
    for r in &list {
        let healthy = match (r.get("healthy"), r.get("unhealthy_shards")) {
            (Some(Value::Bool(true)), _) => "yes".to_owned(),
            (_, Some(n)) => format!("no ({n} shards)"),
            _ => "-".to_owned(),
        };
        let status = match r.get("drained_by").and_then(Value::as_str) {
            Some(by) => format!("{} ({by})", cell(r.get("status"))),
            None => cell(r.get("status")),
        };
        let q = &r["latency_us"];
        t.row(vec![
            cell(r.get("index")),
            cell(r.get("url").filter(|u| !u.is_null()).or(r.get("command"))),
            status,
            healthy,
            if r["ejected"] == true { "yes" } else { "no" }.to_owned(),
            cell(r.get("inflight")),
            cell(r.get("picks")),
            cell(r.get("requests")),
            cell(r.get("errors")),
            probes(r),
            r.get("ewma_ms")
                .and_then(Value::as_f64)
                .map_or("-".into(), |m| format!("{m:.1}")),
            ms(q.get("p50")),
            ms(q.get("p99")),
        ]);
    }
    let missing = v["shards_missing"].as_array().map_or(0, Vec::len);
    let mut head = format!(
        "server {} ({}, {}, {} shards{})\n",
        cell(v.get("server")),
        cell(v.get("state")),
        cell(v.get("strategy")),
        cell(v.get("shards")),
        if missing > 0 {
            format!(", {missing} did not answer")
        } else {
            String::new()
        }
    );
    head.push_str(&t.render());
    if let Some(note) = v.get("note").and_then(Value::as_str) {
        head.push_str(&format!("{note}\n"));
    }
    // Why a replica failed does not fit a column: one line each, under the table.
    for r in &list {
        if let Some(e) = r.get("last_error").and_then(Value::as_str) {
            let ago = r
                .get("last_error_ago_ms")
                .and_then(Value::as_u64)
                .map_or(String::new(), |ms| {
                    format!(" ({:.1}s ago)", ms as f64 / 1000.0)
                });
            head.push_str(&format!("#{} last error{ago}: {e}\n", cell(r.get("index"))));
        }
    }
    head
}
