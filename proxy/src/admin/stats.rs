//! `GET /stats`: exact latency quantiles per server, merged across shards.
//!
//! ```json
//! {"unit":"us","published_every_ms":1000,
//!  "end_to_end":{"count":10,"p50":812,"p90":990,"p99":1203,"p99_9":1203,"max":1203},
//!  "shards":[{"shard":0,"end_to_end_count":6},{"shard":1,"end_to_end_count":4}],
//!  "servers":{"alpha":{"request":{...},"upstream":{...},"overhead":{...}}}}
//! ```
//! Values are microseconds since start. `end_to_end` covers every POSTed message (request read
//! to response written); per server, `request` is the proxy's whole handling of a forwarded
//! request and `upstream` the upstream's part of it; `overhead` is the proxy's own time on a
//! forwarded request, from reading it to its answer being ready to write, less the wait for the
//! upstream (requests that also waited on the client for input are left out). Shards publish once a second, so the
//! figures lag by up to that (see [`crate::metrics::latency`]).

use std::fmt::Write as _;

use crate::config::Config;
use crate::metrics::latency::{self, Quantiles};

/// The `/stats` document for the configured servers.
pub fn render(config: &Config) -> String {
    render_servers(
        config
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.name.as_str())),
    )
}

/// The `/stats` document for `servers` (index, name): the live ones of the registry, so a
/// removed server is not listed (nor twice, once added again under its name).
pub fn render_servers<'a>(servers: impl Iterator<Item = (usize, &'a str)>) -> String {
    let (merged, per_shard) = latency::merged();
    let mut out = format!(
        r#"{{"unit":"us","published_every_ms":{},"end_to_end":{},"shards":["#,
        latency::PUBLISH_EVERY.as_millis(),
        quantiles(&Quantiles::of(&merged.end_to_end))
    );
    for (i, count) in per_shard.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, r#"{{"shard":{i},"end_to_end_count":{count}}}"#);
    }
    out.push_str(r#"],"servers":{"#);
    for (n, (i, server)) in servers.enumerate() {
        if n > 0 {
            out.push(',');
        }
        let request = merged.request.get(i).map(Quantiles::of).unwrap_or_default();
        let upstream = merged
            .upstream
            .get(i)
            .map(Quantiles::of)
            .unwrap_or_default();
        let overhead = merged
            .overhead
            .get(i)
            .map(Quantiles::of)
            .unwrap_or_default();
        let _ = write!(
            out,
            r#"{}:{{"request":{},"upstream":{},"overhead":{}}}"#,
            json_str(server),
            quantiles(&request),
            quantiles(&upstream),
            quantiles(&overhead)
        );
    }
    out.push_str("}}");
    out
}

fn quantiles(q: &Quantiles) -> String {
    format!(
        r#"{{"count":{},"p50":{},"p90":{},"p99":{},"p99_9":{},"max":{}}}"#,
        q.count, q.p50, q.p90, q.p99, q.p999, q.max
    )
}

/// A JSON string literal (server names are plain, but stay safe).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
