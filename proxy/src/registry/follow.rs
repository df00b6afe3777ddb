//! Following a registry decided elsewhere (a fleet's shared registry) without moving indices.
//!
//! The shared document says what differs from the configuration file, as `registry.json`
//! does for one instance. Laid over the file, it gives the registry every member should run;
//! [`Registry::follow`] turns the running registry into that one the way a reload does: servers
//! that are the same keep their entry, changed ones are replaced in place, gone ones become
//! tombstones, new ones are appended.

use std::sync::Arc;

use super::servers::{Changes, Registry, ServerState};
use super::state_file::StateDoc;
use crate::config::Config;

impl Registry {
    /// The registry `doc` laid over `file` describes, reached from this one by index-keeping
    /// changes; `None` for `doc` is the file alone.
    pub fn follow(&self, file: &Config, doc: Option<&StateDoc>) -> (Registry, Changes) {
        let target = match doc {
            Some(doc) => Registry::with_state(file, doc),
            None => Registry::from_config(file),
        };
        let mut next = self.clone();
        next.version = self.version.max(target.version) + 1;
        next.removed_config = target.removed_config.clone();
        let mut changes = Changes::default();
        for (i, entry) in self.entries.iter().enumerate() {
            if entry.state == ServerState::Removed {
                continue;
            }
            match target.index_of(&entry.config.name) {
                None => {
                    Arc::make_mut(&mut next.entries[i]).state = ServerState::Removed;
                    changes.removed.push(entry.config.name.clone());
                }
                Some(t) => {
                    let wanted = &target.entries[t];
                    if wanted.config != entry.config || wanted.spec != entry.spec {
                        changes.updated.push(entry.config.name.clone());
                        next.entries[i] = wanted.clone();
                    } else if wanted.state != entry.state
                        || wanted.replica_drain != entry.replica_drain
                        || wanted.origin != entry.origin
                    {
                        next.entries[i] = wanted.clone();
                    }
                }
            }
        }
        for wanted in target.entries.iter() {
            if wanted.state == ServerState::Removed || next.index_of(&wanted.config.name).is_some()
            {
                continue;
            }
            next.entries.push(wanted.clone());
            changes.added.push(wanted.config.name.clone());
        }
        (next, changes)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn file() -> Config {
        Config::from_toml_str(
            "[[servers]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/mcp\"\n\
             [[servers]]\nname = \"b\"\nurl = \"http://127.0.0.1:2/mcp\"\n",
            "t.toml",
        )
        .expect("config")
    }

    #[test]
    fn another_members_changes_keep_every_index() {
        let file = file();
        let here = Registry::from_config(&file);
        // Elsewhere: c added, a removed, b drained.
        let (there, _) = here
            .add(&json!({"name": "c", "url": "http://127.0.0.1:3/mcp"}))
            .expect("add");
        let (there, _) = there.set_state("a", ServerState::Removed).expect("remove");
        let (there, _) = there.set_state("b", ServerState::Draining).expect("drain");
        let (next, changes) = here.follow(&file, Some(&there.state_doc()));
        assert_eq!(changes.added, ["c"]);
        assert_eq!(changes.removed, ["a"]);
        assert_eq!(next.entries[0].state, ServerState::Removed);
        assert_eq!(next.entries[1].config.name, "b");
        assert_eq!(next.entries[1].state, ServerState::Draining);
        assert_eq!(next.index_of("c"), Some(2));
        // Following the same document again changes nothing but the version.
        let (again, changes) = next.follow(&file, Some(&there.state_doc()));
        assert_eq!(changes, Changes::default());
        assert_eq!(again.entries, next.entries);
        // No document: the file alone.
        let (back, changes) = again.follow(&file, None);
        assert_eq!(changes.removed, ["c"]);
        assert_eq!(back.index_of("a"), Some(3));
    }
}
