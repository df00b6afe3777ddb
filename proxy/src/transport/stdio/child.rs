//! A stdio server's child process.
//!
//! The child's stdin and stdout are one end of a Unix socket pair, so the shard reads and
//! writes it with glommio like any socket (glommio cannot drive pipes). The child gets its own
//! process group, so ending it ends whatever it started (`npx` runs the real server as its own
//! child), and `PR_SET_PDEATHSIG`, so the kernel kills it if the proxy dies, even by SIGKILL.
//! A plain thread spawns it and waits for it: the death signal is tied to the thread that
//! forked, so that thread must outlive the child. Another thread logs its stderr.

use std::io::{BufRead, BufReader};
use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::StdioCommand;

/// A running (or just exited) child.
pub struct ChildProcess {
    /// Its pid, which is also its process group id.
    pub pid: u32,
    exited: Arc<AtomicBool>,
}

impl ChildProcess {
    /// Starts `cmd` for server `name`; returns the child and the proxy's end of its stdio.
    pub fn spawn(
        name: &str,
        cmd: &StdioCommand,
    ) -> std::io::Result<(ChildProcess, glommio::net::UnixStream)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let theirs_out = theirs.try_clone()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let exited = Arc::new(AtomicBool::new(false));
        let done = exited.clone();
        let (name, cmd) = (name.to_owned(), cmd.clone());
        std::thread::Builder::new()
            .name(format!("stdio-{name}"))
            .spawn(move || {
                let mut command = Command::new(&cmd.command);
                command
                    .args(&cmd.args)
                    .envs(cmd.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .stdin(Stdio::from(OwnedFd::from(theirs)))
                    .stdout(Stdio::from(OwnedFd::from(theirs_out)))
                    .stderr(Stdio::piped())
                    .process_group(0);
                if let Some(cwd) = &cmd.cwd {
                    command.current_dir(cwd);
                }
                // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
                unsafe {
                    command.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                let spawned = command.spawn();
                // The command holds the child's ends of the socket; close ours now, or the proxy
                // would never see end-of-file when the child exits.
                drop(command);
                let mut child = match spawned {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        done.store(true, Ordering::Release);
                        return;
                    }
                };
                let _ = tx.send(Ok(child.id()));
                if let Some(stderr) = child.stderr.take() {
                    let name = name.clone();
                    let _ = std::thread::Builder::new()
                        .name(format!("stderr-{name}"))
                        .spawn(move || {
                            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                                log::info!(target: "stdio", "{name}: {line}");
                            }
                        });
                }
                match child.wait() {
                    Ok(status) => {
                        log::info!("stdio server {name} (pid {}) exited: {status}", child.id())
                    }
                    Err(e) => log::warn!(
                        "stdio server {name}: cannot wait for pid {}: {e}",
                        child.id()
                    ),
                }
                done.store(true, Ordering::Release);
            })?;
        let pid = rx
            .recv()
            .map_err(|_| std::io::Error::other("the spawning thread died"))??;
        // SAFETY: the fd is a freshly created socket that nothing else owns.
        let stream = unsafe {
            <glommio::net::UnixStream as std::os::fd::FromRawFd>::from_raw_fd(ours.into_raw_fd())
        };
        Ok((ChildProcess { pid, exited }, stream))
    }

    /// True once the child has been reaped.
    pub fn has_exited(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }

    /// Sends `signal` to the child's whole process group, which outlives the child itself
    /// while anything it started still runs.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory effects; an empty group only fails with ESRCH.
        unsafe {
            libc::kill(-(self.pid as i32), signal);
        }
    }
}
