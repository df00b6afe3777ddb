//! Binding the client and admin listeners, and refusing a fixed address another process holds.
//!
//! Every shard binds the same address with SO_REUSEPORT, which Linux grants to any socket of
//! the same user on a port whose other sockets set it too. Without a check, a second proxy
//! started on the same fixed address would be let in silently and the kernel would split new
//! connections between the two processes. So before the shards bind a fixed port, a plain
//! socket (SO_REUSEADDR, no SO_REUSEPORT) is bound to it: Linux refuses that bind with
//! EADDRINUSE while any listener (SO_REUSEPORT or not) or a not yet listening hold is there.
//! A port still held after [`RELEASE_GRACE`] counts as in use (see [`wait_free`]).
//! `--takeover` skips the check, which is how a new proxy joins an old one's port for a
//! zero-downtime restart.
//!
//! SO_REUSEADDR on the check alone is not enough: the TIME_WAIT sockets a stopped proxy's
//! connections leave behind carry their listener's SO_REUSEADDR flag, and they block a plain
//! bind unless both sides set it. So the listeners set SO_REUSEADDR as well (as Rust's std
//! listeners do), and a restart right after a stop is not mistaken for a clash.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// How long a fixed port may stay held before it counts as in use (see [`wait_free`]).
pub const RELEASE_GRACE: Duration = Duration::from_secs(2);

/// Pending connections each listener queues before accepting (glommio's own default).
const BACKLOG: i32 = 1024;

/// Why a listen address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another socket (another proxy, most likely) already holds the fixed address.
    #[error(
        "{addr} is already in use (another mcp-proxy?); stop it, choose another {flag}, \
         or pass --takeover to share the port and take over from it (zero-downtime restart)"
    )]
    InUse {
        /// The configured address.
        addr: SocketAddr,
        /// The option that sets it, for the operator to change.
        flag: &'static str,
    },
    /// The admin endpoints were given the client listener's own address.
    #[error(
        "the admin address {admin} overlaps the listen address {listen}; give --admin-listen \
         ([proxy] admin_listen) another port"
    )]
    SameAsListen {
        /// The client listen address.
        listen: SocketAddr,
        /// The admin address.
        admin: SocketAddr,
    },
    /// The address could not be bound for another reason (permission, not a local address...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
}

/// Which listener an address is for, naming the options that set it in errors.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// The MCP listener every shard binds.
    Clients,
    /// Shard 0's admin endpoints.
    Admin,
}

impl Role {
    fn flag(self) -> &'static str {
        match self {
            Role::Clients => "--listen ([proxy] listen)",
            Role::Admin => "--admin-listen ([proxy] admin_listen)",
        }
    }
}

/// The socket holding a port until the listeners are bound to it.
///
/// For a port-0 address: had the port the kernel picked been released between being learnt and
/// being listened on, another process binding port 0 in that moment (another proxy started
/// beside this one, say) could be given it, and the kernel would then split this proxy's
/// connections between the two processes. While a socket is bound to the port, the kernel picks
/// other ports for port-0 binds. For a fixed address, the hold makes a second proxy's check
/// fail while this one is still starting. The hold is bound (with SO_REUSEPORT, so the
/// listeners can join it) but never listens, so it is given no connections.
pub struct PortHold {
    _socket: Option<Socket>,
}

impl PortHold {
    /// No hold (stdio mode, admin endpoints off).
    pub fn none() -> PortHold {
        PortHold { _socket: None }
    }
}

/// `addr` with the port the listeners will bind (the kernel's pick for port 0), and a hold on
/// it. A fixed port that is already held is refused unless `takeover`.
pub fn reserve(
    addr: SocketAddr,
    role: Role,
    takeover: bool,
) -> Result<(SocketAddr, PortHold), ListenError> {
    let bind_error = |source| ListenError::Bind { addr, source };
    if addr.port() != 0 {
        if takeover {
            return Ok((addr, PortHold::none()));
        }
        wait_free(addr, role, RELEASE_GRACE)?;
    }
    let socket = hold(addr).map_err(bind_error)?;
    let bound = socket
        .local_addr()
        .map_err(bind_error)?
        .as_socket()
        .ok_or_else(|| bind_error(std::io::Error::other("bound to a non-IP address")))?;
    Ok((
        bound,
        PortHold {
            _socket: Some(socket),
        },
    ))
}

/// Refuses an admin address that the client listener's address covers: SO_REUSEPORT would let
/// both listen, and the kernel would hand MCP clients to the admin listener and the reverse.
pub fn check_distinct(listen: SocketAddr, admin: SocketAddr) -> Result<(), ListenError> {
    let overlap = listen.port() == admin.port()
        && (listen.ip() == admin.ip()
            || listen.ip().is_unspecified()
            || admin.ip().is_unspecified());
    if overlap && admin.port() != 0 {
        return Err(ListenError::SameAsListen { listen, admin });
    }
    Ok(())
}

/// Checks `addr` until it is free or `grace` has passed, then refuses it as [`check_free`] does.
///
/// A process that has just exited (killed, or stopped a moment before) still holds its
/// listeners for a few milliseconds: the kernel tears its io_uring down, and with it the
/// descriptors a pending accept holds, after the process is gone. A restart at once must not
/// take that for another proxy; one that really runs holds the port for the whole grace.
pub fn wait_free(addr: SocketAddr, role: Role, grace: Duration) -> Result<(), ListenError> {
    let start = Instant::now();
    loop {
        match check_free(addr, role) {
            Err(ListenError::InUse { .. }) if start.elapsed() < grace => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Refuses `addr` when a socket is already bound to it: a plain bind (no SO_REUSEPORT) fails
/// with EADDRINUSE next to any listener, SO_REUSEPORT or not.
pub fn check_free(addr: SocketAddr, role: Role) -> Result<(), ListenError> {
    let probe = || -> std::io::Result<()> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // Ignore the TIME_WAIT leftovers of a proxy stopped a moment ago (see the module doc).
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())
    };
    match probe() {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ListenError::InUse {
            addr,
            flag: role.flag(),
        }),
        Err(source) => Err(ListenError::Bind { addr, source }),
    }
}

fn hold(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // The listeners join the port, so the hold must allow it as they do.
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A listening socket on `addr` shared with this process's other listeners (SO_REUSEPORT),
/// registered with the calling shard's executor.
pub fn bind(addr: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    let socket = listening(addr)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that `into_raw_fd` gave up; the
    // glommio listener becomes its only owner.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

fn listening(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback0() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A listening SO_REUSEPORT socket on a kernel-picked loopback port, as a shard's is.
    fn reuseport_listener() -> (Socket, SocketAddr) {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
        s.set_reuse_port(true).expect("reuseport");
        s.bind(&loopback0().into()).expect("bind");
        s.listen(16).expect("listen");
        let addr = s.local_addr().expect("addr").as_socket().expect("ip");
        (s, addr)
    }

    #[test]
    fn a_port_another_listener_holds_is_refused_with_the_fix() {
        let (_other, addr) = reuseport_listener();
        let err = check_free(addr, Role::Clients).expect_err("held port passed the check");
        let text = err.to_string();
        assert!(matches!(err, ListenError::InUse { .. }), "{text}");
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(
            text.contains("--takeover") && text.contains("--listen"),
            "{text}"
        );
        let err = reserve(addr, Role::Admin, false)
            .err()
            .expect("reserve passed");
        assert!(err.to_string().contains("--admin-listen"), "{err}");
    }

    #[test]
    fn a_port_released_within_the_grace_is_taken() {
        let (other, addr) = reuseport_listener();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(other);
        });
        wait_free(addr, Role::Clients, Duration::from_secs(10)).expect("released port refused");
        releaser.join().expect("releaser");
    }

    #[test]
    fn a_port_held_past_the_grace_is_refused() {
        let (_other, addr) = reuseport_listener();
        let err = wait_free(addr, Role::Clients, Duration::from_millis(50)).expect_err("passed");
        assert!(matches!(err, ListenError::InUse { .. }), "{err}");
    }

    #[test]
    fn an_admin_address_on_the_listen_address_is_refused() {
        let at = |s: &str| s.parse::<SocketAddr>().expect("addr");
        let err = check_distinct(at("127.0.0.1:8080"), at("127.0.0.1:8080")).expect_err("same");
        assert!(err.to_string().contains("--admin-listen"), "{err}");
        assert!(check_distinct(at("0.0.0.0:8080"), at("127.0.0.1:8080")).is_err());
        assert!(check_distinct(at("127.0.0.1:8080"), at("[::]:8080")).is_err());
        assert!(check_distinct(at("127.0.0.1:8080"), at("127.0.0.1:9090")).is_ok());
        assert!(check_distinct(at("127.0.0.1:8080"), at("127.0.0.2:8080")).is_ok());
        assert!(check_distinct(at("127.0.0.1:0"), at("127.0.0.1:0")).is_ok());
    }

    #[test]
    fn takeover_shares_a_held_port() {
        let (_other, addr) = reuseport_listener();
        let (got, _hold) = reserve(addr, Role::Clients, true).expect("takeover refused");
        assert_eq!(got, addr);
    }

    #[test]
    fn a_free_fixed_port_is_held_until_the_listeners_bind() {
        let (probe, addr) = reuseport_listener();
        drop(probe);
        let (got, hold) = reserve(addr, Role::Clients, false).expect("free port refused");
        assert_eq!(got, addr);
        // A second proxy starting now is refused: the hold counts as in use.
        assert!(matches!(
            check_free(addr, Role::Clients),
            Err(ListenError::InUse { .. })
        ));
        // This proxy's own listeners still join the held port.
        let std_listener = listen_std(addr);
        drop(hold);
        drop(std_listener);
    }

    #[test]
    fn port_zero_is_resolved_and_the_hold_admits_the_listeners() {
        let (got, _hold) = reserve(loopback0(), Role::Clients, false).expect("port 0");
        assert_ne!(got.port(), 0);
        let _a = listen_std(got);
        let _b = listen_std(got);
    }

    #[test]
    fn a_stopped_listeners_time_wait_connections_do_not_count_as_in_use() {
        let addr = {
            let listener = listen_std(loopback0());
            let addr = listener
                .local_addr()
                .expect("addr")
                .as_socket()
                .expect("ip");
            let client = std::net::TcpStream::connect(addr).expect("connect");
            let (accepted, _) = listener.accept().expect("accept");
            // The server side closes first, so its end goes to TIME_WAIT on the listen port.
            drop(accepted);
            let mut buf = [0u8; 1];
            let _ = std::io::Read::read(&mut &client, &mut buf);
            drop(client);
            addr
        };
        check_free(addr, Role::Clients).expect("TIME_WAIT leftovers counted as a listener");
    }

    /// A listener as [`bind`] makes one, without an executor.
    fn listen_std(addr: SocketAddr) -> Socket {
        listening(addr).expect("listen")
    }
}
