//! The request mix: which MCP requests a run sends, in what proportion, and their bodies.
//!
//! Syntax: comma-separated entries `SPEC[=WEIGHT]`, where SPEC is `tools/call:NAME[:ARGS]` or
//! `METHOD[:PARAMS]`, ARGS and PARAMS being JSON objects, e.g.
//! `tools/call:echo:{"message":"hi"}=8,tools/list=1,ping=1`. Commas inside the JSON do not split.
//!
//! Bodies are prebuilt around the id, so sending costs one copy and the id's digits. For a
//! 2026-07-28 run each entry's params also carry the envelope (`_meta`) and the entry keeps the
//! headers that mirror its body ([`crate::era`]).

use std::io::Write as _;

use mcp_proxy::protocol::jsonrpc::write_json_string;

use crate::era::{self, Era, Stamp};

/// Why a mix did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MixError {
    /// An entry has nothing before `=` or `:`.
    #[error("empty entry in mix at position {0}")]
    Empty(usize),
    /// The JSON after a method or tool name is not a JSON object.
    #[error("arguments of {entry:?} are not a JSON object")]
    BadJson {
        /// The entry as written.
        entry: String,
    },
    /// A weight that is not a positive integer.
    #[error("weight of {entry:?} must be a whole number >= 1")]
    BadWeight {
        /// The entry as written.
        entry: String,
    },
    /// A name with characters that would need escaping: tool names never do.
    #[error("name {0:?} has quotes, backslashes or control characters")]
    BadName(String),
    /// Params whose `_meta` cannot take the 2026-07-28 envelope.
    #[error("params of {entry:?} cannot carry the 2026-07-28 envelope: `_meta` must be an object")]
    BadMeta {
        /// The entry as written.
        entry: String,
    },
}

/// One kind of request in the mix.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Label for reports: the method, plus the tool name for `tools/call`.
    pub label: String,
    /// Relative share of requests.
    pub weight: u32,
    /// The tool a `tools/call` entry calls.
    pub tool: Option<String>,
    /// The `Mcp-Method`/`Mcp-Name` headers of a 2026-07-28 entry; None in the stateful era.
    pub stamp: Option<Stamp>,
    /// The body before the id: `{"jsonrpc":"2.0","id":`.
    prefix: &'static [u8],
    /// The body after the id: `,"method":..,"params":..}`, one per client of a 2026-07-28
    /// run (each carries its client's identity in `_meta`), else one.
    suffixes: Vec<Vec<u8>>,
}

impl Entry {
    /// The complete request body with id `id`, as client `client` sends it, written into
    /// `out` (cleared first).
    pub fn body(&self, id: u64, client: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.prefix);
        // Writing an integer into a Vec cannot fail.
        let _ = write!(out, "{id}");
        out.extend_from_slice(&self.suffixes[client % self.suffixes.len()]);
    }
}

/// A parsed mix with its interleaved schedule.
#[derive(Debug, Clone)]
pub struct Mix {
    /// The entries, in the order written.
    pub entries: Vec<Entry>,
    /// Entry indexes, one per unit of weight, spread out (smooth weighted round-robin) so a
    /// short run still sees every kind in proportion.
    wheel: Vec<usize>,
}

impl Mix {
    /// Parses the mix syntax described in the module docs, with bodies for `era` (for each of
    /// `clients` clients in the 2026-07-28 era).
    pub fn parse(text: &str, era: Era, clients: usize) -> Result<Mix, MixError> {
        let mut entries = Vec::new();
        for (pos, raw) in split_top_level(text).into_iter().enumerate() {
            let raw = raw.trim();
            let (spec, weight) = match raw.rsplit_once('=') {
                // `=` inside the JSON is not a weight: weights come after the closing brace.
                Some((spec, w)) if !w.contains('}') && !w.contains('"') => {
                    let weight = w
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|w| *w >= 1)
                        .ok_or_else(|| MixError::BadWeight {
                            entry: raw.to_owned(),
                        })?;
                    (spec.trim(), weight)
                }
                _ => (raw, 1),
            };
            if spec.is_empty() {
                return Err(MixError::Empty(pos));
            }
            entries.push(entry(spec, weight, era, clients)?);
        }
        if entries.is_empty() {
            return Err(MixError::Empty(0));
        }
        let wheel = smooth_wheel(&entries);
        Ok(Mix { entries, wheel })
    }

    /// The entry for the `n`th request of a worker group.
    pub fn pick(&self, n: u64) -> &Entry {
        &self.entries[self.wheel[(n % self.wheel.len() as u64) as usize]]
    }
}

/// Splits on commas that are outside JSON objects, arrays and strings.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut in_str, mut escaped, mut start) = (0i32, false, false, 0);
    for (i, c) in text.char_indices() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Builds one entry from `tools/call:NAME[:ARGS]` or `METHOD[:PARAMS]`.
fn entry(spec: &str, weight: u32, era: Era, clients: usize) -> Result<Entry, MixError> {
    let bad_json = || MixError::BadJson {
        entry: spec.to_owned(),
    };
    let (method, rest) = match spec.split_once(':') {
        Some((m, r)) => (m.trim(), Some(r)),
        None => (spec.trim(), None),
    };
    check_name(method)?;
    let mut tool = None;
    let (label, params) = if method == "tools/call" {
        let rest = rest.ok_or_else(bad_json)?;
        let (name, args) = match rest.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (rest.trim(), None),
        };
        check_name(name)?;
        let args = args.unwrap_or("{}");
        check_object(args).ok_or_else(bad_json)?;
        let mut params = b"{\"name\":".to_vec();
        write_json_string(&mut params, name);
        params.extend_from_slice(b",\"arguments\":");
        params.extend_from_slice(args.as_bytes());
        params.push(b'}');
        tool = Some(name.to_owned());
        (format!("tools/call {name}"), Some(params))
    } else {
        let params = match rest {
            Some(params) => {
                let params = params.trim();
                check_object(params).ok_or_else(bad_json)?;
                Some(params.as_bytes().to_vec())
            }
            None => None,
        };
        (method.to_owned(), params)
    };
    let suffix_of = |params: Option<&[u8]>| {
        let mut suffix = b",\"method\":".to_vec();
        write_json_string(&mut suffix, method);
        if let Some(params) = params {
            suffix.extend_from_slice(b",\"params\":");
            suffix.extend_from_slice(params);
        }
        suffix.push(b'}');
        suffix
    };
    let (suffixes, stamp) = match era {
        Era::Stateful => (vec![suffix_of(params.as_deref())], None),
        Era::Stateless => {
            // The params were checked above to be one JSON object, so they are UTF-8.
            let text = params.as_deref().map(String::from_utf8_lossy);
            let mut suffixes = Vec::with_capacity(clients.max(1));
            let mut stamp = None;
            for k in 0..clients.max(1) {
                let name = era::client_name(k, clients);
                let (with_meta, s) =
                    era::envelope(method, text.as_deref(), &name).map_err(|_| {
                        MixError::BadMeta {
                            entry: spec.to_owned(),
                        }
                    })?;
                suffixes.push(suffix_of(Some(&with_meta)));
                stamp = Some(s);
            }
            (suffixes, stamp)
        }
    };
    Ok(Entry {
        label,
        weight,
        tool,
        stamp,
        prefix: b"{\"jsonrpc\":\"2.0\",\"id\":",
        suffixes,
    })
}

/// Refuses empty names and names that would need JSON escaping.
fn check_name(name: &str) -> Result<(), MixError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(MixError::BadName(name.to_owned()));
    }
    Ok(())
}

/// Some(()) when `text` is one JSON object.
fn check_object(text: &str) -> Option<()> {
    let mut buf = text.as_bytes().to_vec();
    let value = simd_json::to_borrowed_value(&mut buf).ok()?;
    simd_json::prelude::ValueAsObject::as_object(&value).map(|_| ())
}

/// Smooth weighted round-robin (as nginx does it): weights 8,1,1 give a wheel of 10 slots
/// where the light entries are spread out rather than bunched at the end.
fn smooth_wheel(entries: &[Entry]) -> Vec<usize> {
    let total: i64 = entries.iter().map(|e| i64::from(e.weight)).sum();
    let mut current = vec![0i64; entries.len()];
    let mut wheel = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, e) in current.iter_mut().zip(entries) {
            *c += i64::from(e.weight);
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .unwrap_or((0, &0));
        current[best] -= total;
        wheel.push(best);
    }
    wheel
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(e: &Entry, id: u64) -> String {
        let mut out = Vec::new();
        e.body(id, 0, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parses_the_documented_example() {
        let mix = Mix::parse(
            r#"tools/call:echo:{"message":"hi, there"}=8,tools/list=1,ping=1"#,
            Era::Stateful,
            1,
        )
        .unwrap();
        let labels: Vec<_> = mix
            .entries
            .iter()
            .map(|e| (e.label.as_str(), e.weight))
            .collect();
        assert_eq!(
            labels,
            [("tools/call echo", 8), ("tools/list", 1), ("ping", 1)]
        );
        assert_eq!(
            body_of(&mix.entries[0], 42),
            r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi, there"}}}"#
        );
        assert_eq!(
            body_of(&mix.entries[2], 7),
            r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#
        );
        let picks: Vec<_> = (0..10).map(|n| mix.pick(n).label.as_str()).collect();
        assert_eq!(picks.iter().filter(|l| **l == "ping").count(), 1);
        assert_eq!(picks.iter().filter(|l| **l == "tools/list").count(), 1);
        // Spread out: the two light entries are not next to each other.
        let light: Vec<_> = (0..10).filter(|i| picks[*i] != "tools/call echo").collect();
        assert!(light[1] - light[0] > 1, "{picks:?}");
    }

    #[test]
    fn equals_inside_json_is_not_a_weight() {
        let mix = Mix::parse(r#"tools/call:echo:{"message":"a=b"}"#, Era::Stateful, 1).unwrap();
        assert_eq!(mix.entries[0].weight, 1);
        let mix = Mix::parse("tools/call:get-sum:{\"a\":1,\"b\":2}=3", Era::Stateful, 1).unwrap();
        assert_eq!(mix.entries[0].weight, 3);
        assert!(body_of(&mix.entries[0], 1).contains(r#""arguments":{"a":1,"b":2}"#));
    }

    #[test]
    fn refuses_bad_entries() {
        assert!(matches!(
            Mix::parse("", Era::Stateful, 1),
            Err(MixError::Empty(0))
        ));
        assert!(matches!(
            Mix::parse("ping=0", Era::Stateful, 1),
            Err(MixError::BadWeight { .. })
        ));
        assert!(matches!(
            Mix::parse("tools/call:echo:{not json}", Era::Stateful, 1),
            Err(MixError::BadJson { .. })
        ));
        assert!(matches!(
            Mix::parse("tools/call", Era::Stateful, 1),
            Err(MixError::BadJson { .. })
        ));
        assert!(matches!(
            Mix::parse("tools/call:ec\"ho", Era::Stateful, 1),
            Err(MixError::BadName(_))
        ));
    }

    #[test]
    fn a_stateless_mix_carries_the_envelope_and_its_headers() {
        let mix = Mix::parse(
            r#"tools/call:a__echo:{"message":"hi"}=8,tools/list,ping"#,
            Era::Stateless,
            1,
        )
        .unwrap();
        let mut call = body_of(&mix.entries[0], 5).into_bytes();
        let msg = simd_json::to_owned_value(&mut call).unwrap();
        use simd_json::prelude::*;
        let params = msg.get("params").unwrap();
        assert_eq!(msg.get_u64("id"), Some(5));
        assert_eq!(params.get_str("name"), Some("a__echo"));
        assert_eq!(
            params.get("arguments").and_then(|a| a.get_str("message")),
            Some("hi")
        );
        assert_eq!(
            params
                .get("_meta")
                .and_then(|m| m.get_str("io.modelcontextprotocol/protocolVersion")),
            Some("2026-07-28")
        );
        let stamp = mix.entries[0].stamp.as_ref().unwrap();
        assert_eq!(
            (stamp.method.as_str(), stamp.name.as_deref()),
            ("tools/call", Some("a__echo"))
        );
        assert!(body_of(&mix.entries[1], 6).contains(r#""params":{"_meta":"#));
        assert!(Mix::parse("ping", Era::Stateful, 1).unwrap().entries[0]
            .stamp
            .is_none());
        assert!(matches!(
            Mix::parse(r#"tools/list:{"_meta":1}"#, Era::Stateless, 1),
            Err(MixError::BadMeta { .. })
        ));
    }

    #[test]
    fn each_client_of_a_stateless_mix_sends_its_own_identity() {
        let mix = Mix::parse("tools/list", Era::Stateless, 3).unwrap();
        let entry = &mix.entries[0];
        let name_of = |client: usize| {
            let mut out = Vec::new();
            entry.body(9, client, &mut out);
            let msg = simd_json::to_owned_value(&mut out).unwrap();
            use simd_json::prelude::*;
            msg.get("params")
                .and_then(|p| p.get("_meta"))
                .and_then(|m| m.get("io.modelcontextprotocol/clientInfo"))
                .and_then(|i| i.get_str("name"))
                .map(str::to_owned)
        };
        let names: Vec<_> = (0..4).map(name_of).collect();
        assert_eq!(
            names,
            [
                "mcp-loadgen-0",
                "mcp-loadgen-1",
                "mcp-loadgen-2",
                "mcp-loadgen-0"
            ]
            .map(|n| Some(n.to_owned()))
        );
    }
}
