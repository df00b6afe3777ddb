//! Which admin token `mcpctl` sends: `--token` (`MCPCTL_TOKEN`), else the file `--token-file`
//! (`MCPCTL_TOKEN_FILE`) names, else the token a proxy on this machine generated and left for
//! it by admin port (`{runtime dir}/admin-{port}.token`; see the proxy's
//! `runtime::local_token`), so `mcpctl health` works on the proxy's machine with no setting.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fail::{Code, Failure};
use crate::http::Url;

/// The token to send to the admin API at `url`, if one can be found.
pub fn resolve(
    token: Option<&str>,
    file: Option<&Path>,
    url: &Url,
) -> Result<Option<String>, Failure> {
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        return Ok(Some(t.to_owned()));
    }
    if let Some(path) = file {
        return from_file(path);
    }
    Ok(left_by_proxy(url))
}

/// The token in `path` (surrounding whitespace removed).
fn from_file(path: &Path) -> Result<Option<String>, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty())),
        Err(e) => Err(Failure {
            code: Code::Usage,
            message: format!("cannot read the admin token file {}: {e}", path.display()),
        }),
    }
}

/// The directory a proxy run by this user leaves its generated token in.
fn runtime_dir() -> Option<PathBuf> {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir).join("mcp-proxy")),
        // `/proc/self` belongs to the user this process runs as: its uid without libc.
        None => std::fs::metadata("/proc/self")
            .ok()
            .map(|m| PathBuf::from(format!("/tmp/mcp-proxy-{}", m.uid()))),
    }
}

/// The token a local proxy left for the admin port of `url`, when the file is there and
/// private to this user (a file others could have written is not trusted).
fn left_by_proxy(url: &Url) -> Option<String> {
    let port = url.authority.rsplit_once(':')?.1;
    let path = runtime_dir()?.join(format!("admin-{port}.token"));
    let me = std::fs::metadata("/proc/self").ok()?.uid();
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return None;
    }
    from_file(&path).ok().flatten()
}
