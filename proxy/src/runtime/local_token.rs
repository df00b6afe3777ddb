//! The generated admin token, left where `mcpctl` on the same machine finds it with no setting.
//!
//! `mcpctl` knows the admin address it talks to (`http://127.0.0.1:8085` by default), so the
//! file is named by the admin port: `{runtime dir}/admin-{port}.token`, where the runtime dir
//! is `$XDG_RUNTIME_DIR/mcp-proxy` when that is set (systemd user sessions) and
//! `/tmp/mcp-proxy-{uid}` otherwise. Only the user the proxy runs as can read it: the directory
//! is made mode 0700 and must be owned by that user (one made by someone else is not used, so
//! no other user can have the token written where they can read it), the file mode 0600. The
//! proxy removes it when it stops; a configured token is never written (the operator has it).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::admin_token::TokenFileError;

/// The directory the token files go in, for the user this process runs as.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("mcp-proxy"),
        // SAFETY: getuid has no preconditions and cannot fail.
        None => PathBuf::from(format!("/tmp/mcp-proxy-{}", unsafe { libc::getuid() })),
    }
}

/// The file holding the token of the proxy whose admin listener is on `port`.
pub fn path_for(port: u16) -> PathBuf {
    runtime_dir().join(format!("admin-{port}.token"))
}

/// Writes `token` to [`path_for`]`(port)` and returns the file's path.
pub fn publish(port: u16, token: &str) -> Result<PathBuf, TokenFileError> {
    let dir = runtime_dir();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TokenFileError::Io { path, source }
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(&dir)(e)),
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(io(&dir))?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mode = meta.mode() & 0o777;
    if !meta.is_dir() || meta.uid() != uid || mode & 0o077 != 0 {
        return Err(TokenFileError::NotPrivate { path: dir, mode });
    }
    let path = path_for(port);
    // A file left by an earlier run is replaced, never written through (it could be a link).
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io(&path))?;
    writeln!(file, "{token}").map_err(io(&path))?;
    Ok(path)
}

/// Removes a file [`publish`] wrote (the proxy is stopping).
pub fn withdraw(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_named_by_the_admin_port() {
        let p = path_for(8085);
        assert!(p.ends_with("admin-8085.token"), "{}", p.display());
    }
}
