//! Before load is sent: the tools the mix calls must be among those the server offers, or
//! every request would fail the same way (a gateway prefixes names, e.g. `echo` is
//! `alpha__echo` behind mcp-proxy). One session (or, in 2026-07-28, none: each page carries
//! the envelope), `tools/list` page by page, then a verdict that names what is offered and the
//! nearest name.

use std::time::Duration;

use simd_json::prelude::*;

use crate::client::{initialize, Conn, Failure, Session, Target};
use crate::era::{self, Era};
use crate::mix::Mix;

/// Most offered names quoted in the message.
const NAMES_SHOWN: usize = 20;

/// Attempts at each `tools/list` page.
const LIST_TRIES: usize = 5;

/// Most `tools/list` pages read (a server whose cursors never end is not waited on forever).
const MAX_PAGES: usize = 1000;

/// Why the mix cannot run against this server.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// Tools the mix calls are not offered.
    #[error("{0}")]
    Unknown(String),
    /// The session or `tools/list` failed.
    #[error(
        "checking the mix against tools/list failed: {0} (--skip-tool-check sends the mix unchecked)"
    )]
    List(String),
}

/// Checks every tool the mix calls against the server's `tools/list`, asked in `era`.
pub async fn check(
    target: &Target,
    mix: &Mix,
    era: Era,
    timeout: Duration,
) -> Result<(), PreflightError> {
    let wanted: Vec<&str> = mix
        .entries
        .iter()
        .filter_map(|e| e.tool.as_deref())
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let offered = list_tools(target, era, timeout).await?;
    match verdict(&wanted, &offered) {
        Some(message) => Err(PreflightError::Unknown(message)),
        None => Ok(()),
    }
}

/// Every tool name the server offers.
async fn list_tools(
    target: &Target,
    era: Era,
    timeout: Duration,
) -> Result<Vec<String>, PreflightError> {
    let failed = |what: &str, f: Failure, conn: Option<&mut Conn>| {
        let said = conn.and_then(Conn::take_error);
        PreflightError::List(match said {
            Some(s) => format!("{what}: {} ({s})", f.key()),
            None => format!("{what}: {}", f.key()),
        })
    };
    let mut conn = Conn::open(target, timeout)
        .await
        .map_err(|f| failed("connect", f, None))?;
    let session = match era {
        Era::Stateful => initialize(&mut conn, target, 1)
            .await
            .map_err(|f| failed("initialize", f, Some(&mut conn)))?,
        Era::Stateless => Session::stateless(0),
    };
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let id = 2 + page as u64;
        let mut params = cursor.as_ref().map(|c| {
            let mut p = br#"{"cursor":"#.to_vec();
            mcp_proxy::protocol::jsonrpc::write_json_string(&mut p, c);
            p.push(b'}');
            p
        });
        let mut stamp = None;
        if era == Era::Stateless {
            // The cursor was written as a JSON string, so the params are UTF-8.
            let text = params.as_deref().map(String::from_utf8_lossy);
            let (with_meta, s) =
                era::envelope("tools/list", text.as_deref(), &era::client_name(0, 1))
                    .map_err(|e| PreflightError::List(format!("tools/list: {e}")))?;
            params = Some(with_meta);
            stamp = Some(s);
        }
        let mut body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list""#).into_bytes();
        if let Some(p) = params {
            body.extend_from_slice(br#","params":"#);
            body.extend_from_slice(&p);
        }
        body.push(b'}');
        // A server that fails some requests on purpose (a fault-injecting upstream) gets a
        // few tries before the check gives up.
        let mut tries = 0;
        loop {
            conn.keep_next_answer();
            match conn
                .post(target, Some(&session), stamp.as_ref(), &body, Some(id))
                .await
            {
                Ok(_) => break,
                Err(_) if tries + 1 < LIST_TRIES && conn.reusable() => {
                    tries += 1;
                    let _ = conn.take_error();
                }
                Err(f) => return Err(failed("tools/list", f, Some(&mut conn))),
            }
        }
        let mut answer = conn
            .take_answer()
            .ok_or_else(|| PreflightError::List("tools/list: no answer body".into()))?;
        let msg = simd_json::to_borrowed_value(&mut answer)
            .map_err(|e| PreflightError::List(format!("tools/list: {e}")))?;
        let result = msg.get("result");
        for tool in result
            .and_then(|r| r.get("tools"))
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(name) = tool.get_str("name") {
                names.push(name.to_owned());
            }
        }
        cursor = result
            .and_then(|r| r.get_str("nextCursor"))
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    Ok(names)
}

/// None when every wanted tool is offered; otherwise the message for the first that is not.
pub fn verdict(wanted: &[&str], offered: &[String]) -> Option<String> {
    let missing = wanted.iter().find(|w| !offered.iter().any(|o| o == *w))?;
    let mut message = if offered.is_empty() {
        format!("tool `{missing}` is not offered; the server offers no tools")
    } else {
        let shown: Vec<&str> = offered
            .iter()
            .take(NAMES_SHOWN)
            .map(String::as_str)
            .collect();
        let more = offered.len().saturating_sub(NAMES_SHOWN);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!(
            "tool `{missing}` is not offered; the server offers: {}{tail}",
            shown.join(", ")
        )
    };
    if let Some(near) = nearest(missing, offered) {
        message.push_str(&format!(" (did you mean {near}?)"));
    }
    message.push_str("; fix --mix, or pass --skip-tool-check to send it anyway");
    Some(message)
}

/// The offered name closest to `missing`: the same tool behind a gateway's prefix
/// (`x__echo` for `echo`, or the reverse), else one at most two edits away.
fn nearest<'a>(missing: &str, offered: &'a [String]) -> Option<&'a str> {
    let suffix = format!("__{missing}");
    let base = missing.rsplit_once("__").map(|(_, b)| b);
    offered
        .iter()
        .find(|o| o.ends_with(&suffix) || base.is_some_and(|b| o.as_str() == b))
        .or_else(|| {
            offered
                .iter()
                .map(|o| (edits(missing, o), o))
                .filter(|(d, _)| *d <= 2)
                .min_by_key(|(d, _)| *d)
                .map(|(_, o)| o)
        })
        .map(String::as_str)
}

/// Levenshtein distance.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_offered_and_the_nearest() {
        let offered = vec!["alpha__echo".to_owned(), "alpha__add".to_owned()];
        let m = verdict(&["echo"], &offered).unwrap();
        assert!(m.contains("tool `echo` is not offered"), "{m}");
        assert!(m.contains("alpha__echo, alpha__add"), "{m}");
        assert!(m.contains("did you mean alpha__echo?"), "{m}");
        assert!(verdict(&["alpha__echo"], &offered).is_none());
        let m = verdict(&["alpha__ecko"], &offered).unwrap();
        assert!(m.contains("did you mean alpha__echo?"), "{m}");
        assert!(verdict(&["x"], &[]).unwrap().contains("offers no tools"));
    }
}
