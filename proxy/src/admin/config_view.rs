//! `GET /api/v1/config`: the running configuration, as `mcpctl config view` prints it.
//!
//! It is the configuration file with what changed since: `[[servers]]` is the live registry
//! (servers added or updated through the admin API in their API description, configured ones
//! as the file describes them, removed ones left out), and the `[proxy]` settings settled at
//! start (listen and admin addresses with port 0 resolved, shards, command-line overrides) and
//! the log filter in force. Secrets never leave the proxy: header and environment values, tokens,
//! keys and passwords read `[redacted]`.

use serde_json::{json, Map, Value};

use crate::shard::Shard;

/// What replaces a secret.
const REDACTED: &str = "[redacted]";

/// The answer: `{"file": path or null, "config": {...}}`.
pub fn running(shard: &Shard) -> Result<Value, String> {
    let path = shard.config.proxy.config_path.as_ref();
    let mut doc: Map<String, Value> = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
            match serde_json::to_value(table) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            }
        }
        None => Map::new(),
    };
    let in_file: Vec<Value> = doc
        .get("servers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let registry = shard.registry();
    let servers: Vec<Value> = registry
        .live()
        .map(|(_, e)| {
            let from_file = || {
                in_file
                    .iter()
                    .find(|s| s.get("name").and_then(Value::as_str) == Some(&e.config.name))
                    .cloned()
            };
            let mut spec = e
                .spec
                .clone()
                .or_else(from_file)
                .unwrap_or_else(|| json!({"name": e.config.name}));
            if e.state == crate::registry::servers::ServerState::Draining {
                spec["drain"] = true.into();
            }
            spec
        })
        .collect();
    doc.insert("servers".into(), servers.into());
    let p = &shard.config.proxy;
    let proxy = doc
        .entry("proxy")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(proxy) = proxy.as_object_mut() {
        proxy.insert("listen".into(), p.listen.to_string().into());
        proxy.insert(
            "admin_listen".into(),
            p.admin_listen
                .map_or_else(|| "off".to_owned(), |a| a.to_string())
                .into(),
        );
        proxy.insert("shards".into(), shard.nr_shards.into());
        proxy.insert(
            "log_level".into(),
            crate::metrics::log_filter::current().into(),
        );
    }
    let mut config = Value::Object(doc);
    redact(&mut config);
    Ok(json!({"file": path.map(|p| p.display().to_string()), "config": config}))
}

/// Whether a setting called `key` holds a secret.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["token", "secret", "password", "api_key", "session_key"]
        .iter()
        .any(|s| key.contains(s))
        && !key.ends_with("_file")
}

/// Replaces every secret in `value`: values of secret-named settings, and every value of a
/// `headers` or `env` table (an upstream's credentials live there).
fn redact(value: &mut Value) {
    match value {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k == "headers" || k == "env" {
                    if let Some(table) = v.as_object_mut() {
                        for v in table.values_mut() {
                            *v = REDACTED.into();
                        }
                    }
                } else if is_secret(k) {
                    hide(v);
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A secret setting's value, hidden (each item of a list).
fn hide(value: &mut Value) {
    match value {
        Value::Array(a) => a.iter_mut().for_each(hide),
        Value::Null | Value::Bool(_) => {}
        other => *other = REDACTED.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_paths_kept() {
        let mut v = json!({
            "proxy": {"admin_token": "abcdefabcdefabcdef", "session_key": "00", "admin_token_file": "/run/t"},
            "auth": {"clients": [{"name": "c", "api_keys": ["k1", "k2"]}]},
            "servers": [{"name": "a", "headers": {"Authorization": "Bearer x"}, "env": {"K": "v"}}]
        });
        redact(&mut v);
        assert_eq!(v["proxy"]["admin_token"], REDACTED);
        assert_eq!(v["proxy"]["session_key"], REDACTED);
        assert_eq!(v["proxy"]["admin_token_file"], "/run/t");
        assert_eq!(
            v["auth"]["clients"][0]["api_keys"],
            json!([REDACTED, REDACTED])
        );
        assert_eq!(v["servers"][0]["headers"]["Authorization"], REDACTED);
        assert_eq!(v["servers"][0]["env"]["K"], REDACTED);
        assert_eq!(v["servers"][0]["name"], "a");
    }
}
