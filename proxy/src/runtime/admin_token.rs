//! The admin API token the proxy makes when none is configured.
//!
//! Without `[proxy] state_dir` it is made per start and printed (the operator copies it). With a
//! state directory it is kept in `{state_dir}/admin-token`, readable by the proxy's user only
//! (mode 0600), and reused at every start, so `mcpctl` pointed at that file
//! (`MCPCTL_TOKEN_FILE`) keeps working across restarts.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file in the state directory that holds the generated token.
pub const TOKEN_FILE: &str = "admin-token";

/// The kept token could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Reading or writing the file failed.
    #[error("admin token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Other users may read the file: it is not used.
    #[error(
        "admin token file {path} is readable by other users (mode {mode:o}): make it private \
         with `chmod 600 {path}` and start again"
    )]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The token kept in `state_dir`, made (and written, mode 0600) when the file does not exist yet.
pub fn kept_in(state_dir: &Path) -> Result<String, TokenFileError> {
    let path = state_dir.join(TOKEN_FILE);
    let io = |source| TokenFileError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(TokenFileError::NotPrivate {
                    path: path.clone(),
                    mode,
                });
            }
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let token = text.trim().to_string();
            if !token.is_empty() {
                return Ok(token);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let token = random_token();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    writeln!(file, "{token}").map_err(io)?;
    Ok(token)
}

/// 32 random bytes in hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // Only before the kernel's CSPRNG is seeded; a time-based token is still per run.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
