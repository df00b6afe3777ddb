//! A stdio server's child process.
//!
//! The child's stdin and stdout are one end of a Unix socket pair, so the shard reads and
//! writes it with glommio like any socket (glommio cannot drive pipes).
//!
//! No process may outlive the proxy, and servers are often launched through wrappers (`npx`
//! runs the real server as its own child). So the proxy does not start the command itself: it
//! starts a copy of its own binary in supervisor mode ([`SUPERVISOR_ARG`]) as the leader of a
//! new process group, with `PR_SET_PDEATHSIG` = SIGTERM so the kernel tells it when the proxy
//! dies, even by SIGKILL. The supervisor runs the command in its group (the command itself
//! gets SIGKILL as its death signal, in case the supervisor is killed outright) and, when told
//! to stop or orphaned, ends the whole group. A plain thread spawns the supervisor and waits for
//! it: the death signal is tied to the thread that forked. Another thread drains its stderr
//! into the log ([`super::stderr_log`]).
//!
//! Environment: the supervisor, and so the command, gets only what the server's
//! `env_inherit` / `env_allow` let through from the proxy's environment, never the proxy's own
//! `MCP_PROXY_*` variables, plus its `env` table (see [`crate::config::stdio_env`]).

use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::StdioCommand;

/// The hidden first argument that runs the proxy binary as a child's supervisor.
pub const SUPERVISOR_ARG: &str = "__stdio-supervisor";
/// How long a command gets to exit after SIGTERM before its group is killed.
const SUPERVISOR_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

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
        // The supervisor would start and then fail to run it: say here what is missing.
        super::program::locate(cmd)?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let theirs_out = theirs.try_clone()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let exited = Arc::new(AtomicBool::new(false));
        let done = exited.clone();
        let (name, cmd) = (name.to_owned(), cmd.clone());
        let me = std::env::current_exe()?;
        std::thread::Builder::new()
            .name(format!("stdio-{name}"))
            .spawn(move || {
                let mut command = Command::new(me);
                command
                    .arg(SUPERVISOR_ARG)
                    .arg(&cmd.command)
                    .args(&cmd.args)
                    .env_clear()
                    .envs(cmd.child_env(std::env::vars_os()))
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
                        // SIGTERM, not SIGKILL: the supervisor catches it and ends its group.
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
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
                            super::stderr_log::drain(&name, stderr);
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

/// Supervisor mode: runs `argv` (command and arguments) in this process group and ends the
/// whole group when asked (SIGTERM, SIGINT, SIGHUP) or orphaned. Returns the exit code.
pub fn run_supervisor(argv: &[String]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("{SUPERVISOR_ARG}: no command given");
        return 2;
    };
    // SAFETY: plain libc signal-set calls on a local, zero-initialised set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    // The proxy may have died between fork and here, before the death signal was armed.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        return 1;
    }
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // std resets the signal mask in the child, so the command sees signals normally.
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start {program}: {e}");
            return 127;
        }
    };
    loop {
        let mut signal = 0;
        // SAFETY: sigwait only reads the set and writes the signal number.
        unsafe {
            libc::sigwait(&set, &mut signal);
        }
        if signal == libc::SIGCHLD {
            match child.try_wait() {
                Ok(Some(status)) => {
                    end_group();
                    return status.code().unwrap_or(
                        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0),
                    );
                }
                Ok(None) => continue,
                Err(_) => {
                    end_group();
                    return 1;
                }
            }
        }
        // Asked to stop, or the proxy died: give the command a moment, then end the group.
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + SUPERVISOR_GRACE;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        end_group();
        return 143;
    }
}

/// Ends every other member of this process group (whatever the command started): SIGTERM
/// first (this process has it blocked), SIGKILL to the group if any is left after a moment,
/// which ends this process too, as it is about to exit anyway.
fn end_group() {
    // SAFETY: kill and getpgrp have no memory effects.
    let pgrp = unsafe {
        libc::kill(0, libc::SIGTERM);
        libc::getpgrp()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    while others_in_group(pgrp) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if others_in_group(pgrp) {
        // SAFETY: as above.
        unsafe {
            libc::kill(0, libc::SIGKILL);
        }
    }
}

/// True when a process other than this one is in process group `pgrp` (read from /proc).
fn others_in_group(pgrp: i32) -> bool {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        if pid == me {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // Fields after the parenthesised command: state, ppid, pgrp, ...; zombies are done.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.first() != Some(&"Z")
            && fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgrp)
    })
}
