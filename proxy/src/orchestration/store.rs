//! Saved workflows: a JSON file in the state directory, or memory when there is none.
//!
//! The file is `{state_dir}/workflows.json`: `{"version": 1, "workflows": {name: workflow}}`.
//! Every shard reads it when it needs it (workflows are looked up per run, not per request,
//! and the file is small), so a workflow saved through one shard is seen by all without a
//! broadcast. Writes replace the file atomically: temp file, fsync, rename, fsync of the
//! directory, so a crash leaves the old file or the new one, never half of one.
//! Without a state directory each shard keeps the workflows in memory and shard 0 (where the
//! admin API changes them) sends every other shard the new set (`fleet::Tell::Workflows`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use simd_json::prelude::*;

use super::Json;

/// The file name inside the state directory.
pub const FILE_NAME: &str = "workflows.json";

/// Why saved workflows could not be read or written. None of these is fixed by retrying.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused.
    #[error("saved workflows at {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not what this proxy writes.
    #[error("saved workflows at {path} are unreadable: {detail}; fix or remove the file")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

/// Saved workflows by name.
#[derive(Debug)]
pub struct Store {
    dir: Option<PathBuf>,
    memory: RefCell<BTreeMap<String, Json>>,
}

impl Store {
    /// A store in `dir`, or in memory only when `None`.
    pub fn new(dir: Option<PathBuf>) -> Store {
        Store {
            dir,
            memory: RefCell::new(BTreeMap::new()),
        }
    }

    /// Names of the saved workflows, sorted.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.load()?.into_keys().collect())
    }

    /// The saved workflow `name`.
    pub fn get(&self, name: &str) -> Result<Option<Json>, StoreError> {
        Ok(self.load()?.remove(name))
    }

    /// Saves (or replaces) `name`.
    pub fn put(&self, name: &str, workflow: Json) -> Result<(), StoreError> {
        let mut all = self.load()?;
        all.insert(name.to_owned(), workflow);
        self.save(all)
    }

    /// Removes `name`; false when there was no such workflow.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let mut all = self.load()?;
        let found = all.remove(name).is_some();
        if found {
            self.save(all)?;
        }
        Ok(found)
    }

    /// True when workflows live in memory only (no state directory): each shard then keeps a
    /// copy, replaced by [`Store::replace_memory`] when shard 0 changes them.
    pub fn in_memory(&self) -> bool {
        self.dir.is_none()
    }

    /// Every saved workflow.
    pub fn all(&self) -> Result<BTreeMap<String, Json>, StoreError> {
        self.load()
    }

    /// Takes another shard's copy of the in-memory workflows.
    pub fn replace_memory(&self, all: BTreeMap<String, Json>) {
        if self.dir.is_none() {
            *self.memory.borrow_mut() = all;
        }
    }

    fn path(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    fn load(&self) -> Result<BTreeMap<String, Json>, StoreError> {
        let Some(dir) = &self.dir else {
            return Ok(self.memory.borrow().clone());
        };
        let path = Self::path(dir);
        let shown = path.display().to_string();
        let mut bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: shown,
                    source,
                })
            }
        };
        let corrupt = |detail: &str| StoreError::Corrupt {
            path: shown.clone(),
            detail: detail.to_owned(),
        };
        let doc = simd_json::to_owned_value(&mut bytes).map_err(|e| corrupt(&e.to_string()))?;
        if doc.get_u64("version") != Some(1) {
            return Err(corrupt("expected \"version\": 1"));
        }
        let map = doc
            .get("workflows")
            .and_then(|w| w.as_object())
            .ok_or_else(|| corrupt("expected a \"workflows\" object"))?;
        Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn save(&self, all: BTreeMap<String, Json>) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else {
            *self.memory.borrow_mut() = all;
            return Ok(());
        };
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut workflows = Json::object_with_capacity(all.len());
        for (name, wf) in all {
            // Keys are unique in a map, so insert cannot clash.
            let _ = workflows.insert(name, wf);
        }
        let mut doc = Json::object();
        let _ = doc.insert("version", 1u64);
        let _ = doc.insert("workflows", workflows);
        let path = Self::path(dir);
        // The temp name carries the thread id: two shards saving at once never share a file.
        let tmp = dir.join(format!(
            ".{FILE_NAME}.{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(doc.encode().as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simd_json::json;

    #[test]
    fn memory_store() {
        let s = Store::new(None);
        assert!(s.names().expect("names").is_empty());
        s.put("a", json!({"steps": []})).expect("put");
        assert_eq!(s.get("a").expect("get"), Some(json!({"steps": []})));
        assert!(s.remove("a").expect("remove"));
        assert!(!s.remove("a").expect("remove"));
    }

    #[test]
    fn file_store_survives_a_new_store_and_refuses_garbage() {
        let dir = std::env::temp_dir().join(format!("mcp-proxy-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::new(Some(dir.clone()));
        s.put("b", json!({"steps": [{"id": "x"}]})).expect("put");
        s.put("a", json!({"steps": []})).expect("put");
        let again = Store::new(Some(dir.clone()));
        assert_eq!(again.names().expect("names"), vec!["a", "b"]);
        assert_eq!(
            again.get("b").expect("get"),
            Some(json!({"steps": [{"id": "x"}]}))
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::write(dir.join(FILE_NAME), b"{\"nope\":1}").expect("write");
        let e = again.names().unwrap_err();
        assert!(e.to_string().contains("version"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
