//! Changing a server's strategy or weights live: a registry update made on shard 0 (asked over
//! the mesh from other shards), saved in the state directory, broadcast, and taken in place by
//! each shard's client (`UpstreamClient::retune`), so sessions, pools and statistics carry on.

use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{ask, strategy_label, Ask};
use crate::config::{ServerConfig, Strategy, Transport};
use crate::shard::Shard;

/// A change of one server's balancing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceChange {
    /// The server.
    pub server: String,
    /// The new strategy, if it changes.
    pub strategy: Option<Strategy>,
    /// New weights by replica index.
    pub weights: Vec<(usize, u32)>,
}

/// Why a balancing change was refused.
pub type ChangeError = String;

/// Applies a balancing change from any shard: on shard 0 directly, elsewhere by asking it.
pub async fn set_balance(shard: &Rc<Shard>, change: BalanceChange) -> Result<Value, ChangeError> {
    if shard.id == 0 {
        return apply_balance(shard, &change).await;
    }
    match ask(shard, 0, Ask::SetBalance(change)).await {
        Some(v) => match v.get("error").and_then(Value::as_str) {
            Some(e) => Err(e.to_owned()),
            None => Ok(v),
        },
        None => Err("shard 0 (which owns the registry) did not answer; try again".into()),
    }
}

/// Shard 0: the registry update that makes `change`, saved and broadcast.
pub(super) async fn apply_balance(
    shard: &Rc<Shard>,
    change: &BalanceChange,
) -> Result<Value, ChangeError> {
    if shard.id != 0 {
        return Err("balancing changes are made on shard 0".into());
    }
    let registry = shard.registry();
    let (_, entry) = registry.get(&change.server).map_err(|e| e.to_string())?;
    let mut config = entry.config.clone();
    let Transport::Http { replicas, .. } = &mut config.transport else {
        return Err(format!(
            "{} is a stdio server: its children are bound to sessions round robin; strategy and weights apply to HTTP replicas",
            change.server
        ));
    };
    for (r, w) in &change.weights {
        match replicas.get_mut(*r) {
            Some(rep) => rep.weight = *w,
            None => return Err(format!("{} has no replica {r}", change.server)),
        }
    }
    if let Some(s) = change.strategy {
        config.balance.strategy = s;
    }
    let spec = spec_of(&config);
    crate::orchestration::registry_change::change(shard, |registry| {
        registry.update(&change.server, &spec)
    })
    .await
    .map_err(|e| e.to_string())?;
    log::info!(server = change.server.as_str(); "fleet: server {} balancing changed", change.server);
    Ok(json!({
        "server": change.server,
        "strategy": strategy_label(config.balance.strategy),
        "weights": replicas_weights(&config),
    }))
}

fn replicas_weights(config: &ServerConfig) -> Value {
    match &config.transport {
        Transport::Http { replicas, .. } => replicas
            .iter()
            .map(|r| json!({"url": r.url.to_string(), "weight": r.weight}))
            .collect(),
        Transport::Stdio(_) => Value::Array(Vec::new()),
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The admin API description of an HTTP server: what `parse_spec` turns back into `config`.
pub fn spec_of(config: &ServerConfig) -> Value {
    let mut spec = json!({
        "name": config.name,
        "prefix": config.prefix,
        "timeout": ms(config.timeout),
        "connect_timeout": ms(config.connect_timeout),
        "tags": config.tags,
        "strategy": strategy_label(config.balance.strategy),
        "stateless": config.balance.stateless,
        "health_check_interval": ms(config.balance.health_check_interval),
        "failover_threshold": config.balance.failover_threshold,
    });
    match &config.transport {
        Transport::Http { replicas, headers } => {
            spec["replicas"] = replicas
                .iter()
                .map(|r| json!({"url": r.url.to_string(), "weight": r.weight, "drain": r.drain}))
                .collect();
            if !headers.is_empty() {
                spec["headers"] = headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
        }
        Transport::Stdio(c) => {
            spec["command"] = c.command.clone().into();
            spec["args"] = c.args.clone().into();
            spec["env"] = c
                .env
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into();
            spec["env_inherit"] = match c.env_inherit {
                crate::config::stdio_env::EnvInherit::Base => "base",
                crate::config::stdio_env::EnvInherit::All => "all",
                crate::config::stdio_env::EnvInherit::None => "none",
            }
            .into();
            if !c.env_allow.is_empty() {
                spec["env_allow"] = c.env_allow.clone().into();
            }
            if let Some(cwd) = &c.cwd {
                spec["cwd"] = cwd.display().to_string().into();
            }
            spec["replicas"] = c.replicas.into();
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_parses_back_into_the_same_server() {
        let text = r#"
[[servers]]
name = "ev"
prefix = "e"
replicas = [{ url = "http://127.0.0.1:1/mcp", weight = 2 }, { url = "http://127.0.0.1:2/mcp", drain = true }]
strategy = "weighted"
timeout = "1500ms"
health_check_interval = "2s"
failover_threshold = 4
tags = ["a"]
headers = { "X-Key" = "v" }
"#;
        let config = crate::config::Config::from_toml_str(text, "t").expect("config");
        let server = &config.servers[0];
        let back = crate::registry::servers::parse_spec(&spec_of(server)).expect("spec parses");
        assert_eq!(&back, server);
        let text = r#"
[[servers]]
name = "child"
command = "npx"
args = ["-y", "x"]
env = { A = "1" }
env_inherit = "none"
env_allow = ["PATH", "npm_config_*"]
"#;
        let config = crate::config::Config::from_toml_str(text, "t").expect("config");
        let server = &config.servers[0];
        let back = crate::registry::servers::parse_spec(&spec_of(server)).expect("spec parses");
        assert_eq!(&back, server);
    }
}
