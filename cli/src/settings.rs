//! `mcpctl log-level [FILTER]` and `mcpctl config view`: the proxy's running settings.

use serde_json::Value;

use crate::admin::Admin;
use crate::fail::Failure;
use crate::table::cell;

/// The log filter in force, or, with `level`, put a new one in force on every shard.
pub fn log_level(admin: &Admin, level: Option<&str>) -> Result<(Value, String), Failure> {
    match level {
        None => {
            let v = admin.get("log-level")?;
            let text = format!("{}\n", cell(v.get("level")));
            Ok((v, text))
        }
        Some(level) => {
            let body = serde_json::json!({ "level": level });
            let v = admin.call("PUT", "log-level", Some(&body))?;
            let text = format!(
                "log level now {} (was {}); a restart, or a reload of a file whose \
                 [proxy] log_level changed, sets it again\n",
                cell(v.get("level")),
                cell(v.get("previous"))
            );
            Ok((v, text))
        }
    }
}

/// The running configuration (the file with the changes made through the admin API, secrets
/// redacted by the proxy), as TOML.
pub fn config_view(admin: &Admin) -> Result<(Value, String), Failure> {
    let v = admin.get("config")?;
    let text = as_toml(&v["config"])?;
    let mut head = String::from("# The running configuration of mcp-proxy");
    if let Some(file) = v.get("file").and_then(Value::as_str) {
        head.push_str(&format!(" (the file {file}"));
        head.push_str(" with the changes made through the admin API)");
    }
    head.push_str("; secrets read [redacted].\n");
    Ok((v.clone(), format!("{head}{text}")))
}

/// `value` (a JSON object) as a TOML document; JSON nulls have no TOML form and are left out.
fn as_toml(value: &Value) -> Result<String, Failure> {
    let table = toml::Value::try_from(without_nulls(value))
        .map_err(|e| Failure::error(format!("the configuration cannot be shown as TOML: {e}")))?;
    toml::to_string(&table)
        .map_err(|e| Failure::error(format!("the configuration cannot be shown as TOML: {e}")))
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_prints_as_toml_with_server_tables() {
        let v = serde_json::json!({
            "proxy": {"listen": "127.0.0.1:8080", "log_level": null},
            "servers": [{"name": "a", "url": "http://h:1/mcp", "headers": {"X": "[redacted]"}}]
        });
        let text = as_toml(&v).expect("toml");
        assert!(text.contains("[proxy]"), "{text}");
        assert!(text.contains("[[servers]]"), "{text}");
        assert!(text.contains("name = \"a\""), "{text}");
        assert!(!text.contains("log_level"), "{text}");
        let back: toml::Table = toml::from_str(&text).expect("parses back");
        assert_eq!(
            back["servers"][0]["headers"]["X"].as_str(),
            Some("[redacted]")
        );
    }
}
