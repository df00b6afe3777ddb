//! Requests and failed requests counted from the recorder's series, read back from the
//! exposition text: per server (`mcp_proxy_requests_total`, for `/stats` and the fleet views)
//! and answered by the proxy itself (`mcp_proxy_local_answers_total`).
//!
//! Reading them back costs a render of every series: fine for an admin request or a proxy
//! tool, never for the request path.

use std::collections::HashMap;

/// Requests the proxy answered itself and how many of them were errors, from
/// `mcp_proxy_local_answers_total`.
pub fn answered_locally() -> (u64, u64) {
    let Some(handle) = super::handle() else {
        return (0, 0);
    };
    let prefix = "mcp_proxy_local_answers_total{";
    let (mut requests, mut errors) = (0, 0);
    for line in handle.render().lines().filter(|l| l.starts_with(prefix)) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let n = value.parse::<f64>().unwrap_or(0.0) as u64;
        requests += n;
        if labels.contains("outcome=\"error\"") {
            errors += n;
        }
    }
    (requests, errors)
}

/// Requests and failed requests per server, from `mcp_proxy_requests_total`.
pub fn per_server() -> HashMap<String, (u64, u64)> {
    let mut out = HashMap::new();
    let Some(handle) = super::handle() else {
        return out;
    };
    let text = handle.render();
    for line in text
        .lines()
        .filter(|l| l.starts_with("mcp_proxy_requests_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |k: &str| {
            let start = labels.find(&format!("{k}=\""))? + k.len() + 2;
            let end = labels[start..].find('"')? + start;
            Some(labels[start..end].to_owned())
        };
        let (Some(server), Some(outcome), Ok(n)) =
            (label("server"), label("outcome"), value.parse::<f64>())
        else {
            continue;
        };
        let entry: &mut (u64, u64) = out.entry(server).or_default();
        entry.0 += n as u64;
        if outcome != "ok" && outcome != "cancelled" {
            entry.1 += n as u64;
        }
    }
    out
}
