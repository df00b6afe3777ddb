//! The registry's state file: `registry.json` in `[proxy] state_dir`, holding what differs from
//! the configuration file (the [`StateDoc`]). It is replaced atomically: written to a temporary
//! file, fsynced, renamed over the old one, and the directory fsynced, so a crash at any moment
//! leaves the old or the new document, never a torn one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::servers::{RegistryError, ServerState};

/// File name of the persisted registry inside the state directory.
pub const STATE_FILE: &str = "registry.json";
/// Version of the [`StateDoc`] layout.
pub const FORMAT: u32 = 1;

/// What `registry.json` holds: the differences from the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDoc {
    /// Layout version.
    pub format: u32,
    /// The registry's version when saved.
    pub version: u64,
    /// Servers added or updated through the API, and configured servers drained.
    pub servers: Vec<SavedServer>,
    /// Configured servers removed through the API.
    #[serde(default)]
    pub removed: Vec<String>,
}

/// One server of the [`StateDoc`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedServer {
    /// The server's name.
    pub name: String,
    /// Its description, when it came from the API.
    #[serde(default)]
    pub spec: Option<serde_json::Value>,
    /// Its state.
    pub state: ServerState,
    /// Replicas drained or enabled through the API (replica index to drained).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replica_drain: BTreeMap<usize, bool>,
}

/// The state file in `dir`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Reads the persisted state in `dir`; `None` when there is none yet.
pub fn load_state(dir: &Path) -> Result<Option<StateDoc>, RegistryError> {
    let path = state_path(dir);
    let err = |detail: String| RegistryError::State {
        path: path.display().to_string(),
        detail,
    };
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
    };
    let doc: StateDoc = serde_json::from_slice(&text).map_err(|e| {
        err(format!(
            "{e}; the file is only ever replaced whole, so it was edited by hand: fix it or \
             move it away to start from the configuration alone"
        ))
    })?;
    if doc.format != FORMAT {
        return Err(err(format!(
            "format {} is not {FORMAT}; it was written by another mcp-proxy version",
            doc.format
        )));
    }
    Ok(Some(doc))
}

/// Replaces the state file in `dir` atomically: temporary file, fsync, rename, fsync of the
/// directory (without that last step the rename itself may not survive a power loss).
pub fn save_state(dir: &Path, doc: &StateDoc) -> Result<(), RegistryError> {
    let path = state_path(dir);
    let err = |what: &str, e: std::io::Error| RegistryError::State {
        path: path.display().to_string(),
        detail: format!("{what}: {e}"),
    };
    fs::create_dir_all(dir).map_err(|e| err("cannot create the state directory", e))?;
    let body = serde_json::to_vec_pretty(doc).map_err(|e| err("cannot encode", e.into()))?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let mut file =
        fs::File::create(&tmp).map_err(|e| err("cannot create the temporary file", e))?;
    file.write_all(&body)
        .and_then(|()| file.sync_all())
        .map_err(|e| err("cannot write the temporary file", e))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| err("cannot replace the file", e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err("cannot sync the state directory", e))?;
    Ok(())
}
