//! The locked-memory limit io_uring needs, checked before any shard starts.
//!
//! glommio refuses to build an executor when `RLIMIT_MEMLOCK` is below 512 KiB, whatever the
//! process's capabilities, and it does so inside each shard's thread. Checking here first turns
//! that into one clear start-up error naming the limit and how to raise it.

/// The smallest locked-memory limit glommio accepts (its `MIN_MEMLOCK_LIMIT`).
pub const MIN_MEMLOCK: u64 = 512 * 1024;

/// How to raise the limit where the proxy usually runs.
pub const MEMLOCK_FIX: &str = "raise it to at least 512 KiB (unlimited is simplest): \
    `ulimit -l unlimited` in a shell, `docker run --ulimit memlock=-1` (compose: \
    `ulimits: {memlock: -1}`), `LimitMEMLOCK=infinity` in a systemd unit; on Kubernetes the \
    container runtime's memlock limit applies (set it in containerd's or CRI-O's default ulimits)";

/// The locked-memory limit is below what io_uring needs.
#[derive(Debug, thiserror::Error)]
#[error(
    "the locked-memory limit (RLIMIT_MEMLOCK, `ulimit -l`) is {} KiB, but io_uring needs at \
     least {} KiB: {MEMLOCK_FIX}",
    limit / 1024,
    MIN_MEMLOCK / 1024
)]
pub struct MemlockTooLow {
    /// The soft limit, in bytes.
    pub limit: u64,
}

/// The soft locked-memory limit in bytes (`u64::MAX` when unlimited or unreadable).
pub fn current_limit() -> u64 {
    // SAFETY: getrlimit writes only into the local struct.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return u64::MAX;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        limit.rlim_cur
    }
}

/// Refuses a limit glommio would refuse, before any thread is started.
pub fn check() -> Result<(), MemlockTooLow> {
    let limit = current_limit();
    if limit < MIN_MEMLOCK {
        return Err(MemlockTooLow { limit });
    }
    Ok(())
}

/// io_uring cannot be set up at all.
#[derive(Debug, thiserror::Error)]
#[error(
    "io_uring is not available ({0}): the proxy runs on io_uring (Linux 5.8 or later). In a \
     container, the runtime's seccomp profile may block it (recent docker releases do): run with \
     a profile that allows io_uring_setup, io_uring_enter and io_uring_register; check also the \
     `kernel.io_uring_disabled` sysctl"
)]
pub struct IoUringUnavailable(std::io::Error);

/// Sets up (and closes) a tiny ring, so a kernel or seccomp profile refusing io_uring is named
/// at start-up rather than failing inside each shard.
pub fn probe_io_uring() -> Result<(), IoUringUnavailable> {
    // struct io_uring_params is 120 bytes; zeroed asks for defaults.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup reads and writes only `params`, which is large enough; the returned
    // descriptor is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(IoUringUnavailable(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a descriptor this function just opened and nothing else holds.
    unsafe {
        libc::close(fd as i32);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_limit_and_the_fixes() {
        let text = MemlockTooLow { limit: 64 * 1024 }.to_string();
        assert!(text.contains("64 KiB"), "{text}");
        assert!(text.contains("512 KiB"), "{text}");
        assert!(text.contains("--ulimit memlock=-1"), "{text}");
        assert!(text.contains("LimitMEMLOCK=infinity"), "{text}");
        assert!(text.contains("Kubernetes"), "{text}");
    }
}
