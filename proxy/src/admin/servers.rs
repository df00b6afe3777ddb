//! Changes to the live registry, made on shard 0: add, update, drain, enable, remove, reload.
//!
//! Every change goes through [`crate::orchestration::registry_change::change`] (shared with the
//! balancing tool): compute the next [`Registry`](crate::registry::servers::Registry), persist
//! it, then publish it to every shard, whose discovery and catalog follow. One instance
//! persists in its state directory inline (no await in between, so two admin requests on the
//! same thread never interleave and lose one another's change, and "saved, then applied" holds
//! even across a kill -9); a fleet member writes the shared registry in etcd with a
//! compare-and-set, which settles races between members and between requests alike.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::orchestration::registry_change::{change, publish, save};
use crate::registry::servers::{Changes, RegistryError, ServerState};
use crate::shard::Shard;

/// Why a reload failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The proxy was started without a configuration file.
    #[error("the proxy was started without --config: there is no file to reload")]
    NoFile,
    /// The file could not be read or is not valid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The new registry could not be saved.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The listener's new TLS files are not usable (the running certificate is kept).
    #[error(transparent)]
    Tls(#[from] crate::tls::ReloadError),
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Servers added, updated and removed.
    pub servers: Changes,
    /// Whether a changed `[auth]` (clients, keys, policies, limits, JWKS) was applied.
    pub auth: bool,
    /// Whether a changed `[limits]` was put in force (for new connections and streams).
    pub limits: bool,
    /// Whether changed per-connection HTTP limits of `[proxy]` (`max_body_bytes`,
    /// `max_header_bytes`, `header_read_timeout`, `idle_timeout`) were put in force (for new
    /// connections).
    pub proxy_limits: bool,
    /// The log filter a changed `[proxy] log_level` put in force, if the file changed it.
    pub log_level: Option<String>,
    /// Settings the file changes since the proxy started that only a restart applies
    /// (`[proxy] listen`, ...), in a stable order; every reload names them until the restart.
    pub restart: Vec<&'static str>,
}

/// Adds the server described by `spec`; returns its index.
pub async fn add(shard: &Rc<Shard>, spec: &serde_json::Value) -> Result<usize, RegistryError> {
    let index = change(shard, |registry| {
        let (next, index) = registry.add(spec)?;
        program_exists(&next.entries[index].config)?;
        Ok((next, index))
    })
    .await?;
    let name = shard
        .registry()
        .entries
        .get(index)
        .map(|e| e.config.name.clone())
        .unwrap_or_default();
    log::info!(server = name.as_str(); "admin: server {name} added (index {index})");
    Ok(index)
}

/// Replaces the description of server `name`.
pub async fn update(
    shard: &Rc<Shard>,
    name: &str,
    spec: &serde_json::Value,
) -> Result<usize, RegistryError> {
    let index = change(shard, |registry| {
        let (next, index) = registry.update(name, spec)?;
        program_exists(&next.entries[index].config)?;
        Ok((next, index))
    })
    .await?;
    log::info!(server = name; "admin: server {name} updated");
    Ok(index)
}

/// Refuses a stdio server whose program is not there (ENOENT, with the path looked at), so
/// `servers add` says so rather than registering a server that can only fail to start.
fn program_exists(config: &crate::config::ServerConfig) -> Result<(), RegistryError> {
    match &config.transport {
        crate::config::Transport::Stdio(cmd) => crate::upstream::stdio::program::locate(cmd)
            .map(|_| ())
            .map_err(|e| RegistryError::InvalidSpec(format!("server {}: {e}", config.name))),
        crate::config::Transport::Http { .. } => Ok(()),
    }
}

/// The description of server `name` with `fields` laid over it: each field given replaces
/// the one described (a `null` removes it), the others stay. The description is the one the
/// API gave the server, or its `[[servers]]` table in the configuration file.
pub fn patched_spec(
    shard: &Rc<Shard>,
    name: &str,
    fields: &serde_json::Value,
) -> Result<serde_json::Value, RegistryError> {
    let Some(fields) = fields.as_object() else {
        return Err(RegistryError::InvalidSpec(
            r#"expected a JSON object of the fields to change, e.g. {"timeout":"60s"}"#.into(),
        ));
    };
    let registry = shard.registry();
    let (_, entry) = registry.get(name)?;
    let mut spec = match &entry.spec {
        Some(spec) => spec.clone(),
        None => file_spec(shard, name)?,
    };
    let Some(current) = spec.as_object_mut() else {
        return Err(RegistryError::InvalidSpec(format!(
            "the description of {name} is not an object"
        )));
    };
    for (key, value) in fields {
        if value.is_null() {
            current.remove(key);
        } else {
            current.insert(key.clone(), value.clone());
        }
    }
    Ok(spec)
}

/// Server `name`'s `[[servers]]` table in the configuration file, as JSON.
fn file_spec(shard: &Shard, name: &str) -> Result<serde_json::Value, RegistryError> {
    let unknown = |why: String| {
        RegistryError::InvalidSpec(format!(
            "the description of {name} cannot be read ({why}); give every field with `mcpctl servers update --replace`"
        ))
    };
    let path = shard
        .config
        .proxy
        .config_path
        .as_ref()
        .ok_or_else(|| unknown("no configuration file".into()))?;
    let text = std::fs::read_to_string(path).map_err(|e| unknown(e.to_string()))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| unknown(e.to_string()))?;
    let table = doc
        .get("servers")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .find(|s| s.get("name").and_then(toml::Value::as_str) == Some(name))
        .ok_or_else(|| unknown("not in the configuration file".into()))?;
    serde_json::to_value(table).map_err(|e| unknown(e.to_string()))
}

/// Drains, enables or removes server `name`.
pub async fn set_state(
    shard: &Rc<Shard>,
    name: &str,
    state: ServerState,
) -> Result<usize, RegistryError> {
    let index = change(shard, |registry| registry.set_state(name, state)).await?;
    log::info!(server = name; "admin: server {name} is now {}", state.label());
    Ok(index)
}

/// Drains (`drain`) or enables replica `replica` of server `name` on every shard.
pub async fn set_replica_drain(
    shard: &Rc<Shard>,
    name: &str,
    replica: usize,
    drain: bool,
) -> Result<usize, RegistryError> {
    let index = change(shard, |registry| {
        registry.set_replica_drain(name, replica, drain)
    })
    .await?;
    let word = if drain { "drained" } else { "enabled" };
    log::info!(server = name; "admin: replica {replica} of {name} {word}");
    Ok(index)
}

/// Re-reads the configuration file and applies its server, TLS, `[auth]`, `[limits]` and
/// per-connection `[proxy]` limit changes; sessions are kept. A file with any error (a bad
/// JWKS included) changes nothing.
/// Changed settings that only a restart applies are named (in the answer and a warning), not
/// refused: refusing them would hold back every later reload until the file is reverted.
pub fn reload(shard: &Rc<Shard>) -> Result<Reloaded, ReloadError> {
    let path = shard
        .config
        .proxy
        .config_path
        .as_ref()
        .ok_or(ReloadError::NoFile)?;
    let config = Config::load(path, &crate::tls::RustlsFiles)?;
    // Against the file as started, not the running configuration: see `config::restart`.
    let restart = crate::config::restart::pending(&config);
    // Whatever can fail is done before anything is put in force, so a refused reload changes
    // nothing: the certificate is read and checked, the new registry saved. Switching the TLS
    // scheme is in `restart`: clients would not follow it, so the listener keeps its own.
    let certificate = if config.tls.is_some() == crate::tls::listener_enabled() {
        crate::tls::reread_listener(config.tls.as_ref())?
    } else {
        None
    };
    let (next, changes) = shard.registry().reload(&config);
    let servers_changed = changes != Changes::default();
    if servers_changed {
        save(shard, &next)?;
    }
    if let Some(certificate) = certificate {
        certificate.install();
    }
    // The file's filter was checked when it was read, so this cannot refuse it.
    let log_level =
        match crate::metrics::log_filter::reload_from_file(config.proxy.log_level.as_deref()) {
            Ok(applied) => applied,
            Err(e) => {
                log::warn!("reload: [proxy] log_level not applied: {e}");
                None
            }
        };
    if let Some(filter) = &log_level {
        log::info!("reload: log level now {filter}");
    }
    // Turning auth on or off is in `restart`: the running mode and its [auth] are kept whole.
    let auth = crate::auth::reload(&config.auth);
    let limits = crate::endpoint::limits::apply(&config.limits);
    if limits {
        log::info!("reload: [limits] now {:?}", config.limits);
    }
    let connection = crate::endpoint::limits::ConnectionLimits::of(&config.proxy);
    let proxy_limits = crate::endpoint::limits::apply_connection(&connection);
    if proxy_limits {
        log::info!("reload: [proxy] connection limits now {connection:?}");
    }
    if servers_changed {
        publish(shard, next);
        log::info!(
            "reload: {} added, {} updated, {} removed",
            changes.added.len(),
            changes.updated.len(),
            changes.removed.len()
        );
    }
    if !restart.is_empty() {
        log::warn!("reload: not applied until restart: {}", restart.join(", "));
    }
    Ok(Reloaded {
        servers: changes,
        auth,
        limits,
        proxy_limits,
        log_level,
        restart,
    })
}

/// Reloads whenever `flag` is raised (the signal thread raises it on SIGHUP).
pub fn watch_reload(shard: &Rc<Shard>, flag: Arc<AtomicBool>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            if flag.swap(false, Ordering::AcqRel) {
                match reload(&shard) {
                    // Said even when nothing changed: the signal leaves no other answer.
                    Ok(_) => log::info!("reload after SIGHUP done"),
                    Err(e) => log::error!("reload failed, the running servers are kept: {e}"),
                }
            }
        }
    })
    .detach();
}
