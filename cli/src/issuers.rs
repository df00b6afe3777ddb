//! `mcpctl issuers`: the trusted OAuth issuers of `[auth.oauth]` and the state of their keys.

use serde_json::Value;

use crate::table::{cell, strings, Table};

/// The table of `GET /api/v1/auth/issuers`: keys in use, how long ago they were fetched, the
/// fetches that worked and failed, and the last error (the proxy keeps serving with the keys
/// it has while an issuer cannot be reached).
pub fn table(v: &Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ago = |t: &Value| {
        t.as_u64().map_or_else(
            || "never".to_owned(),
            |t| format!("{}s ago", now.saturating_sub(t)),
        )
    };
    let mut t = Table::new(&[
        "ISSUER",
        "KEYS",
        "LAST REFRESH",
        "FETCHES OK/FAILED",
        "LAST ERROR",
    ]);
    let list = v["issuers"].as_array().cloned().unwrap_or_default();
    for i in &list {
        let kids = strings(&i["kids"]);
        t.row(vec![
            cell(i.get("issuer")),
            if kids.is_empty() {
                "none".into()
            } else {
                kids.join(",")
            },
            ago(&i["last_refresh"]),
            format!("{}/{}", cell(i.get("refreshes")), cell(i.get("failures"))),
            i["last_error"].as_str().unwrap_or("-").to_owned(),
        ]);
    }
    if list.is_empty() {
        t.note("no [auth.oauth] issuers configured".into());
    }
    t.render()
}
