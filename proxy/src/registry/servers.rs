//! The live registry: the set of upstream servers, changed while the proxy runs.
//!
//! At start the registry is the configuration's `[[servers]]` plus what the state directory
//! remembers (servers added, updated, drained or removed through the admin API). Shard 0 owns
//! it; every change makes a new immutable [`Registry`] that is persisted, then broadcast to
//! every shard (see [`crate::discovery::ShardDiscovery::publish_registry`]).
//!
//! Server indices are positions in [`Registry::entries`] and never move: a removed server stays
//! as a tombstone ([`ServerState::Removed`]) and a new one is appended, so every index held by a
//! session, a metric or a catalog item keeps naming the same server. Indices are only
//! renumbered at the next start, when tombstones are not loaded.
//!
//! What differs from the configuration file is persisted in the state directory
//! ([`super::state_file`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state_file::{load_state, SavedServer, StateDoc, FORMAT};
use crate::config::{Config, ServerConfig};
use crate::registry::ServerIdentity;
/// Prefix given to tombstones: not a valid prefix, so no exposed URI can ever resolve to one.
const TOMBSTONE_PREFIX: &str = "\u{1}removed";

/// Why a registry change was refused or could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No server has this name.
    #[error("no server named \"{name}\"; known servers: {}", known_list(.known))]
    NotFound {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// The server has no replica with this index.
    #[error("server \"{name}\" has no replica {index}: {}", replica_range(*.count))]
    NoReplica {
        /// The server.
        name: String,
        /// The index asked for.
        index: usize,
        /// How many replicas it has.
        count: usize,
    },
    /// The operation does not apply to this server.
    #[error("{0}")]
    NotApplicable(String),
    /// The change clashes with a server that exists.
    #[error("{0}")]
    Conflict(String),
    /// The server description is not valid.
    #[error("invalid server description: {0}")]
    InvalidSpec(String),
    /// The fleet's shared registry (etcd) could not be written.
    #[error("the change was not made: {0}; retry when etcd answers")]
    Shared(String),
    /// The fleet's shared registry key holds something that is not a registry document; the
    /// message names the key and how to replace it. Retrying does not help: an operator must.
    #[error("the change was not made: {0}")]
    SharedUnreadable(String),
    /// The state file could not be read or written.
    #[error("registry state {path}: {detail}")]
    State {
        /// The file.
        path: String,
        /// What went wrong and how to fix it.
        detail: String,
    },
}

fn replica_range(count: usize) -> String {
    match count {
        0 => "it has none".to_owned(),
        1 => "its only replica is 0".to_owned(),
        n => format!("valid replicas are 0 to {} ({n} replicas)", n - 1),
    }
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    }
}

/// Where a server's description comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The configuration file.
    Config,
    /// The admin API (added, or a configured server updated).
    Api,
}

/// Whether a server takes traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    /// Discovered and offered to clients.
    Active,
    /// Kept but hidden: its items leave the catalog, so no new calls reach it.
    Draining,
    /// Gone; the index is kept as a tombstone.
    Removed,
}

impl ServerState {
    /// The lower-case name used in JSON.
    pub fn label(self) -> &'static str {
        match self {
            ServerState::Active => "active",
            ServerState::Draining => "draining",
            ServerState::Removed => "removed",
        }
    }
}

/// One server of the registry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The validated server configuration.
    pub config: ServerConfig,
    /// Where the description comes from.
    pub origin: Origin,
    /// Whether it takes traffic.
    pub state: ServerState,
    /// The description as given to the admin API (persisted); `None` for configured servers.
    pub spec: Option<serde_json::Value>,
    /// Replicas drained (`true`) or enabled (`false`) through the API, by replica index,
    /// over the description's own `drain`; kept apart from it so a drain changes no
    /// description and the replica keeps its statistics.
    pub replica_drain: BTreeMap<usize, bool>,
}

impl Entry {
    /// A server as first registered: active, no replica drained through the API.
    fn new(config: ServerConfig, origin: Origin, spec: Option<serde_json::Value>) -> Entry {
        Entry {
            config,
            origin,
            state: ServerState::Active,
            spec,
            replica_drain: BTreeMap::new(),
        }
    }

    /// Number of HTTP replicas (0 for a stdio server).
    pub fn replica_count(&self) -> usize {
        match &self.config.transport {
            crate::config::Transport::Http { replicas, .. } => replicas.len(),
            crate::config::Transport::Stdio(_) => 0,
        }
    }

    /// Whether replica `replica` takes no new work: drained through the API, or in the
    /// description (unless enabled through the API).
    pub fn replica_drained(&self, replica: usize) -> bool {
        match (&self.config.transport, self.replica_drain.get(&replica)) {
            (_, Some(drain)) => *drain,
            (crate::config::Transport::Http { replicas, .. }, None) => {
                replicas.get(replica).is_some_and(|r| r.drain)
            }
            (crate::config::Transport::Stdio(_), None) => false,
        }
    }

    /// Forgets API drains of replicas the description no longer has.
    fn keep_replica_drains_in_range(&mut self) {
        let count = self.replica_count();
        self.replica_drain.retain(|r, _| *r < count);
    }
}

/// An immutable registry snapshot; shards hold it behind an `Arc`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registry {
    /// Bumped on every change (persisted, so it only grows across restarts).
    pub version: u64,
    /// Every server by index, tombstones included.
    pub entries: Vec<Arc<Entry>>,
    /// Configured servers removed through the API (they stay removed across reloads).
    pub removed_config: Vec<String>,
}

/// What a change did, for the API's answer and the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Servers added.
    pub added: Vec<String>,
    /// Servers whose description changed.
    pub updated: Vec<String>,
    /// Servers removed.
    pub removed: Vec<String>,
}

impl Registry {
    /// The configuration's servers, all active.
    pub fn from_config(config: &Config) -> Registry {
        Registry {
            version: 0,
            entries: config
                .servers
                .iter()
                .map(|s| Arc::new(Entry::new(s.clone(), Origin::Config, None)))
                .collect(),
            removed_config: Vec::new(),
        }
    }

    /// The configuration's servers with a persisted state applied; entries of the state that
    /// no longer make sense (an invalid description) are skipped with a warning.
    pub fn with_state(config: &Config, doc: &StateDoc) -> Registry {
        let mut reg = Registry::from_config(config);
        reg.version = doc.version;
        reg.removed_config = doc.removed.clone();
        for entry in &mut reg.entries {
            if doc.removed.contains(&entry.config.name) {
                Arc::make_mut(entry).state = ServerState::Removed;
            }
        }
        // Tombstones are not carried across a restart: indices are renumbered now.
        reg.entries.retain(|e| e.state != ServerState::Removed);
        for saved in &doc.servers {
            let found = reg.index_of(&saved.name);
            match (&saved.spec, found) {
                (Some(spec), found) => match parse_spec(spec) {
                    Ok(config) => {
                        let mut entry = Entry::new(config, Origin::Api, Some(spec.clone()));
                        entry.state = saved.state;
                        entry.replica_drain = saved.replica_drain.clone();
                        entry.keep_replica_drains_in_range();
                        let entry = Arc::new(entry);
                        match found {
                            Some(i) => reg.entries[i] = entry,
                            None => reg.entries.push(entry),
                        }
                    }
                    Err(e) => log::warn!("registry: skipping saved server {}: {e}", saved.name),
                },
                (None, Some(i)) => {
                    let entry = Arc::make_mut(&mut reg.entries[i]);
                    entry.state = saved.state;
                    entry.replica_drain = saved.replica_drain.clone();
                    // The file may have lost replicas since the drain was saved.
                    entry.keep_replica_drains_in_range();
                }
                (None, None) => {}
            }
        }
        reg
    }

    /// The index of the live (not removed) server `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.state != ServerState::Removed && e.config.name == name)
    }

    /// The live server `name`, or an error listing the known ones.
    pub fn get(&self, name: &str) -> Result<(usize, &Entry), RegistryError> {
        self.index_of(name)
            .map(|i| (i, &*self.entries[i]))
            .ok_or_else(|| self.not_found(name))
    }

    fn not_found(&self, name: &str) -> RegistryError {
        RegistryError::NotFound {
            name: name.to_owned(),
            known: self.names(),
        }
    }

    /// Names of the live servers, in index order.
    pub fn names(&self) -> Vec<String> {
        self.live().map(|(_, e)| e.config.name.clone()).collect()
    }

    /// The live servers with their indices.
    pub fn live(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state != ServerState::Removed)
            .map(|(i, e)| (i, &**e))
    }

    /// Every index's server name, tombstones included (metrics keep their series).
    pub fn names_by_index(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.config.name.clone()).collect()
    }

    /// Name and prefix of every index; tombstones get a prefix nothing can match.
    pub fn identities(&self) -> Vec<ServerIdentity> {
        self.entries
            .iter()
            .map(|e| ServerIdentity {
                name: e.config.name.clone(),
                prefix: if e.state == ServerState::Removed {
                    TOMBSTONE_PREFIX.to_owned()
                } else {
                    e.config.prefix.clone()
                },
            })
            .collect()
    }

    /// Refuses a server whose name or non-empty prefix is taken by another live server.
    fn check_unique(
        &self,
        config: &ServerConfig,
        except: Option<usize>,
    ) -> Result<(), RegistryError> {
        for (i, e) in self.live() {
            if Some(i) == except {
                continue;
            }
            if e.config.name == config.name {
                return Err(RegistryError::Conflict(format!(
                    "a server named \"{}\" exists; remove it first or use `update`",
                    config.name
                )));
            }
            if !config.prefix.is_empty() && e.config.prefix == config.prefix {
                return Err(RegistryError::Conflict(format!(
                    "server \"{}\" already uses the prefix \"{}\"; give \"{}\" another prefix",
                    e.config.name, config.prefix, config.name
                )));
            }
        }
        Ok(())
    }

    fn next(&self) -> Registry {
        let mut next = self.clone();
        next.version += 1;
        next
    }

    /// Appends the server described by `spec` (a `[[servers]]` entry as JSON).
    pub fn add(&self, spec: &serde_json::Value) -> Result<(Registry, usize), RegistryError> {
        let config = parse_spec(spec)?;
        self.check_unique(&config, None)?;
        let mut next = self.next();
        next.removed_config.retain(|n| *n != config.name);
        next.entries.push(Arc::new(Entry::new(
            config,
            Origin::Api,
            Some(spec.clone()),
        )));
        let index = next.entries.len() - 1;
        Ok((next, index))
    }

    /// Replaces the description of server `name` in place (same index); its state is kept.
    pub fn update(
        &self,
        name: &str,
        spec: &serde_json::Value,
    ) -> Result<(Registry, usize), RegistryError> {
        let (index, old) = self.get(name)?;
        let mut spec = spec.clone();
        match spec.as_object_mut() {
            Some(o) => {
                o.entry("name").or_insert_with(|| name.into());
            }
            None => return Err(RegistryError::InvalidSpec("expected a JSON object".into())),
        }
        let config = parse_spec(&spec)?;
        if config.name != name {
            return Err(RegistryError::InvalidSpec(format!(
                "the name cannot change (\"{name}\" to \"{}\"); add a new server and remove this one",
                config.name
            )));
        }
        self.check_unique(&config, Some(index))?;
        let mut next = self.next();
        // The new description says which replicas are drained: API drains of the old
        // replica list do not carry over.
        let mut entry = Entry::new(config, Origin::Api, Some(spec));
        entry.state = old.state;
        next.entries[index] = Arc::new(entry);
        Ok((next, index))
    }

    /// Drains (`drain`) or enables replica `replica` of HTTP server `name`; sessions bound to
    /// a drained replica finish there, new ones go to the others.
    pub fn set_replica_drain(
        &self,
        name: &str,
        replica: usize,
        drain: bool,
    ) -> Result<(Registry, usize), RegistryError> {
        let (index, entry) = self.get(name)?;
        self.check_replica(name, entry, replica)?;
        let mut next = self.next();
        let e = Arc::make_mut(&mut next.entries[index]);
        // An override equal to the description is no override: the state file stays small.
        e.replica_drain.remove(&replica);
        if e.replica_drained(replica) != drain {
            e.replica_drain.insert(replica, drain);
        }
        Ok((next, index))
    }

    /// Refuses a replica index server `name` does not have (saying which exist), and stdio
    /// servers, whose children are not picked per request.
    pub fn check_replica(
        &self,
        name: &str,
        entry: &Entry,
        replica: usize,
    ) -> Result<(), RegistryError> {
        if let crate::config::Transport::Stdio(_) = entry.config.transport {
            return Err(RegistryError::NotApplicable(format!(
                "server \"{name}\" is a stdio server: its children are bound to sessions, not \
                 balanced, so they cannot be drained one by one; drain the whole server with \
                 `mcpctl servers drain {name}`"
            )));
        }
        let count = entry.replica_count();
        if replica >= count {
            return Err(RegistryError::NoReplica {
                name: name.to_owned(),
                index: replica,
                count,
            });
        }
        Ok(())
    }

    /// Sets server `name`'s state (drain, enable, remove).
    pub fn set_state(
        &self,
        name: &str,
        state: ServerState,
    ) -> Result<(Registry, usize), RegistryError> {
        let (index, entry) = self.get(name)?;
        let mut next = self.next();
        if state == ServerState::Removed && entry.origin == Origin::Config {
            next.removed_config.push(name.to_owned());
        }
        // A configured server overridden through the API is still in the file: removing the
        // override must not bring the file's version back at the next start. (A name the file
        // does not have is harmless here and dropped at the next reload.)
        if state == ServerState::Removed && entry.origin == Origin::Api {
            next.removed_config.push(name.to_owned());
        }
        Arc::make_mut(&mut next.entries[index]).state = state;
        Ok((next, index))
    }

    /// Applies a re-read configuration: configured servers are added, updated or removed to
    /// match it; servers added or updated through the API, and configured servers removed
    /// through it, are left as they are.
    pub fn reload(&self, config: &Config) -> (Registry, Changes) {
        let mut next = self.next();
        let mut changes = Changes::default();
        for (i, e) in self.entries.iter().enumerate() {
            if e.state == ServerState::Removed || e.origin != Origin::Config {
                continue;
            }
            match config.servers.iter().find(|s| s.name == e.config.name) {
                None => {
                    Arc::make_mut(&mut next.entries[i]).state = ServerState::Removed;
                    changes.removed.push(e.config.name.clone());
                }
                Some(s) if *s != e.config => {
                    if next.check_unique(s, Some(i)).is_ok() {
                        let entry = Arc::make_mut(&mut next.entries[i]);
                        entry.config = s.clone();
                        entry.keep_replica_drains_in_range();
                        changes.updated.push(s.name.clone());
                    }
                }
                Some(_) => {}
            }
        }
        for s in &config.servers {
            if next.index_of(&s.name).is_some() || next.removed_config.contains(&s.name) {
                continue;
            }
            match next.check_unique(s, None) {
                Ok(()) => {
                    next.entries
                        .push(Arc::new(Entry::new(s.clone(), Origin::Config, None)));
                    changes.added.push(s.name.clone());
                }
                Err(e) => log::warn!("reload: server {} not added: {e}", s.name),
            }
        }
        // Names removed through the API but gone from the file need no memory any more.
        next.removed_config
            .retain(|n| config.servers.iter().any(|s| s.name == *n));
        (next, changes)
    }

    /// What differs from the configuration file, to persist.
    pub fn state_doc(&self) -> StateDoc {
        let mut servers = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.state != ServerState::Removed)
        {
            match (&e.spec, e.origin, e.state) {
                (Some(spec), Origin::Api, state) => servers.push(SavedServer {
                    name: e.config.name.clone(),
                    spec: Some(spec.clone()),
                    state,
                    replica_drain: e.replica_drain.clone(),
                }),
                (_, _, state) if state == ServerState::Draining || !e.replica_drain.is_empty() => {
                    servers.push(SavedServer {
                        name: e.config.name.clone(),
                        spec: None,
                        state,
                        replica_drain: e.replica_drain.clone(),
                    })
                }
                _ => {}
            }
        }
        StateDoc {
            format: FORMAT,
            version: self.version,
            servers,
            removed: self.removed_config.clone(),
        }
    }
}

/// A server description (`[[servers]]` fields as a JSON object) validated as the
/// configuration file's entries are.
pub fn parse_spec(spec: &serde_json::Value) -> Result<ServerConfig, RegistryError> {
    if !spec.is_object() {
        return Err(RegistryError::InvalidSpec(
            r#"expected a JSON object such as {"name":"x","url":"http://host:port/mcp"}"#.into(),
        ));
    }
    // The configuration parser is the one place that knows every field and its rules: the
    // description goes through it as a one-entry TOML document.
    let entry = toml::Value::try_from(spec)
        .map_err(|e| RegistryError::InvalidSpec(format!("{e} (null values are not allowed)")))?;
    let mut doc = toml::Table::new();
    doc.insert("servers".into(), toml::Value::Array(vec![entry]));
    let text = toml::to_string(&doc).map_err(|e| RegistryError::InvalidSpec(e.to_string()))?;
    let config =
        Config::from_toml_str_checked(&text, "server description", &crate::tls::RustlsFiles)
            .map_err(|e| {
                // "server description:2:8: message": positions in a generated document mean nothing.
                let msg = e.to_string();
                let msg = msg
                    .split_once(": ")
                    .map_or(msg.as_str(), |(_, rest)| rest)
                    .to_owned();
                RegistryError::InvalidSpec(msg)
            })?;
    config
        .servers
        .into_iter()
        .next()
        .ok_or_else(|| RegistryError::InvalidSpec("no server described".into()))
}

/// The registry to start with: the configuration plus the state directory's document.
pub fn load(config: &Config) -> Result<Registry, RegistryError> {
    let doc = match &config.proxy.state_dir {
        Some(dir) => load_state(dir)?,
        None => None,
    };
    Ok(match doc {
        Some(doc) => Registry::with_state(config, &doc),
        None => Registry::from_config(config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::state_file::save_state;
    use serde_json::json;
    use std::fs;

    fn config() -> Config {
        Config::from_toml_str(
            "[[servers]]\nname = \"alpha\"\nurl = \"http://127.0.0.1:1/mcp\"\n\
             [[servers]]\nname = \"beta\"\nurl = \"http://127.0.0.1:2/mcp\"\n",
            "t.toml",
        )
        .expect("valid")
    }

    fn spec(name: &str) -> serde_json::Value {
        json!({"name": name, "url": "http://127.0.0.1:3/mcp", "timeout": "5s"})
    }

    #[test]
    fn add_appends_and_remove_keeps_a_tombstone() {
        let reg = Registry::from_config(&config());
        let (reg, i) = reg.add(&spec("gamma")).expect("added");
        assert_eq!(i, 2);
        let (reg, i) = reg
            .set_state("alpha", ServerState::Removed)
            .expect("removed");
        assert_eq!(i, 0);
        assert_eq!(reg.entries.len(), 3);
        assert_eq!(reg.names(), vec!["beta", "gamma"]);
        assert!(reg.identities()[0].prefix.starts_with('\u{1}'));
        // A name can be used again once removed; it gets a new index.
        let (reg, i) = reg
            .add(&json!({"name": "alpha", "url": "http://h:1/mcp"}))
            .expect("re-added");
        assert_eq!(i, 3);
        assert_eq!(reg.version, 3);
    }

    #[test]
    fn conflicts_and_unknown_names_say_what_to_do() {
        let reg = Registry::from_config(&config());
        let e = reg.add(&spec("alpha")).expect_err("duplicate");
        assert!(e.to_string().contains("exists"), "{e}");
        let e = reg
            .add(&json!({"name": "x", "prefix": "beta", "url": "http://h:1/mcp"}))
            .expect_err("prefix clash");
        assert!(e.to_string().contains("prefix"), "{e}");
        let e = reg
            .set_state("nope", ServerState::Draining)
            .expect_err("unknown");
        assert!(e.to_string().contains("alpha, beta"), "{e}");
        let e = reg.add(&json!({"name": "x"})).expect_err("no url");
        assert!(e.to_string().contains("neither url nor command"), "{e}");
        let e = reg.add(&json!("x")).expect_err("not an object");
        assert!(matches!(e, RegistryError::InvalidSpec(_)));
    }

    #[test]
    fn state_round_trips_through_a_restart() {
        let dir = std::env::temp_dir().join(format!("mcp-proxy-live-{}", std::process::id()));
        let cfg = config();
        let reg = Registry::from_config(&cfg);
        let (reg, _) = reg.add(&spec("gamma")).expect("added");
        let (reg, _) = reg
            .set_state("alpha", ServerState::Removed)
            .expect("removed");
        let (reg, _) = reg
            .set_state("beta", ServerState::Draining)
            .expect("drained");
        save_state(&dir, &reg.state_doc()).expect("saved");
        let doc = load_state(&dir).expect("read").expect("present");
        let back = Registry::with_state(&cfg, &doc);
        assert_eq!(back.names(), vec!["beta", "gamma"]);
        assert_eq!(back.entries[0].state, ServerState::Draining);
        assert_eq!(back.version, reg.version);
        assert!(!dir.join("registry.json.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn replica_drains_are_overrides_that_persist_and_say_the_range() {
        let cfg = Config::from_toml_str(
            "[[servers]]\nname = \"fleet\"\nreplicas = [{ url = \"http://127.0.0.1:1/mcp\" }, \
             { url = \"http://127.0.0.1:2/mcp\", drain = true }, { url = \"http://127.0.0.1:3/mcp\" }]\n",
            "t.toml",
        )
        .expect("valid");
        let reg = Registry::from_config(&cfg);
        let (reg, i) = reg.set_replica_drain("fleet", 0, true).expect("drained");
        let e = &reg.entries[i];
        assert!(e.replica_drained(0) && e.replica_drained(1) && !e.replica_drained(2));
        // Enabling the replica the file drains is an override; draining it again is none.
        let (reg, _) = reg.set_replica_drain("fleet", 1, false).expect("enabled");
        assert!(!reg.entries[0].replica_drained(1));
        let (reg2, _) = reg.set_replica_drain("fleet", 1, true).expect("drained");
        assert!(!reg2.entries[0].replica_drain.contains_key(&1));
        let e = reg
            .set_replica_drain("fleet", 3, true)
            .expect_err("out of range");
        assert!(e.to_string().contains("valid replicas are 0 to 2"), "{e}");
        assert!(matches!(
            reg.set_replica_drain("nope", 0, true),
            Err(RegistryError::NotFound { .. })
        ));
        // Saved and loaded over the same file, the overrides come back.
        let back = Registry::with_state(&cfg, &reg.state_doc());
        assert!(back.entries[0].replica_drained(0));
        assert!(!back.entries[0].replica_drained(1));
        assert_eq!(back.entries[0].config, reg.entries[0].config);
        // An update describes the replicas anew: the overrides go.
        let (up, _) = reg
            .update("fleet", &json!({"url": "http://127.0.0.1:4/mcp"}))
            .expect("updated");
        assert!(up.entries[0].replica_drain.is_empty());
    }

    #[test]
    fn reload_diffs_configured_servers_only() {
        let cfg = config();
        let reg = Registry::from_config(&cfg);
        let (reg, _) = reg.add(&spec("gamma")).expect("added");
        let new = Config::from_toml_str(
            "[[servers]]\nname = \"beta\"\nurl = \"http://127.0.0.1:9/mcp\"\n\
             [[servers]]\nname = \"delta\"\nurl = \"http://127.0.0.1:4/mcp\"\n",
            "t.toml",
        )
        .expect("valid");
        let (next, changes) = reg.reload(&new);
        assert_eq!(changes.removed, vec!["alpha"]);
        assert_eq!(changes.updated, vec!["beta"]);
        assert_eq!(changes.added, vec!["delta"]);
        assert_eq!(next.names(), vec!["beta", "gamma", "delta"]);
    }
}
