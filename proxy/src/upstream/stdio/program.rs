//! Finding a stdio server's program before it is started, so a missing one is reported as
//! missing (with the path looked at) rather than as a child that broke the protocol.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::StdioCommand;

/// The program `cmd` runs, as the child will find it; `NotFound` names where it was looked for.
pub fn locate(cmd: &StdioCommand) -> std::io::Result<PathBuf> {
    let program = Path::new(&cmd.command);
    if cmd.command.contains('/') {
        let path = match (&cmd.cwd, program.is_relative()) {
            (Some(dir), true) => dir.join(program),
            _ => program.to_path_buf(),
        };
        return if path.is_file() {
            Ok(path)
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no such file: {} (ENOENT)", path.display()),
            ))
        };
    }
    let search = cmd
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        let path = Path::new(dir).join(program);
        let runnable = std::fs::metadata(&path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if runnable {
            return Ok(path);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!(
            "command `{}` not found in PATH ({search}) (ENOENT); give its full path or fix PATH",
            cmd.command
        ),
    ))
}
