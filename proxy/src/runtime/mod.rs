//! Starts the shards: one glommio executor pinned per core, each with its own listener.
//!
//! All shards bind the same address with SO_REUSEPORT and the kernel spreads connections
//! over them. Port 0 is resolved once, up front, so every shard binds the same real port; a
//! fixed port another process already holds is refused unless `--takeover` (see [`listener`]).
//! Shutdown is cooperative: [`Running::stop`] raises a flag every shard watches; each stops
//! accepting, closes its idle keep-alive connections and answers the rest with
//! `Connection: close` (`shard::drain`), lets requests in flight finish (up to
//! [`DRAIN_LIMIT`]), ends its sessions (deleting upstream sessions), and shard 0 stops the
//! stdio children.

pub mod admin_token;
pub mod listener;
pub mod local_token;
pub mod memlock;
pub mod wiring;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use crate::config::Config;
use crate::discovery::ShardDiscovery;
use crate::endpoint::stdio as stdio_downstream;
use crate::mcp::session::ShardSessions;
use crate::shard::mesh::{Msg, CHANNEL_SIZE};
use crate::shard::{Mesh, Shard};
use listener::{PortHold, Role};

/// How long shutdown waits for requests in flight.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);
pub use crate::upstream::table::CHILD_GRACE;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address is taken or cannot be bound.
    #[error(transparent)]
    Listen(#[from] crate::runtime::listener::ListenError),
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::InstallError),
    /// The executors could not be started.
    #[error("cannot start {shards} shard(s): {detail}")]
    Executors {
        /// Shards requested.
        shards: usize,
        /// What glommio said.
        detail: String,
    },
    /// stdin/stdout could not be bridged to the shard.
    #[error("cannot serve on stdin/stdout: {0}")]
    Stdio(std::io::Error),
    /// The live registry's state file could not be read.
    #[error(transparent)]
    Registry(#[from] crate::registry::servers::RegistryError),
    /// The listener's TLS files are not usable.
    #[error("[tls] {0}")]
    Tls(#[from] crate::config::tls::TlsError),
    /// The locked-memory limit is too low for io_uring.
    #[error(transparent)]
    Memlock(#[from] crate::runtime::memlock::MemlockTooLow),
    /// The kernel or a seccomp profile refuses io_uring.
    #[error(transparent)]
    IoUring(#[from] crate::runtime::memlock::IoUringUnavailable),
    /// A shard's thread ended before serving (its executor could not be built).
    #[error("a shard stopped during start-up: {detail}")]
    ShardFailed {
        /// What the shard's thread returned.
        detail: String,
    },
    /// The kept admin token could not be read or written.
    #[error(transparent)]
    AdminToken(#[from] crate::runtime::admin_token::TokenFileError),
    /// The fleet's etcd settings cannot be used (`[cluster]`).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::StartError),
    /// SIGTERM or SIGINT arrived before every shard was serving.
    #[error("stopped by a signal during start-up")]
    Interrupted,
}

/// The flags the signal thread raises, made before start-up so a signal is honoured at any time.
#[derive(Clone, Default)]
pub struct Control {
    /// Raised to shut down (SIGTERM, SIGINT).
    pub stop: Arc<AtomicBool>,
    /// Raised to re-read the configuration file (SIGHUP).
    pub reload: Arc<AtomicBool>,
}

/// Where clients come from.
pub enum Mode {
    /// Streamable HTTP on the configured address, on every shard; `takeover` shares fixed
    /// ports another process already listens on instead of refusing them.
    Http {
        /// Share a fixed port already in use (zero-downtime restart) instead of refusing it.
        takeover: bool,
    },
    /// One client on stdin/stdout (one shard, no listener).
    Stdio,
}

/// A running proxy, before it is joined.
pub struct Running {
    /// The address clients connect to (HTTP mode).
    pub addr: SocketAddr,
    /// The admin endpoints' address (`/metrics`, `/stats`, `/healthz`), when served.
    pub admin: Option<SocketAddr>,
    handles: glommio::PoolThreadHandles<()>,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    /// Where the operator reads the admin token made at start, if one was.
    pub generated_token: GeneratedToken,
    /// Where the generated token was left for `mcpctl` on this machine (removed at stop).
    local_token: Option<std::path::PathBuf>,
}

/// Where the operator reads an admin token the proxy made. The token itself is never printed:
/// stdout may end up in a log (journald, `docker logs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratedToken {
    /// None was made: one is configured (or there is no admin listener).
    NotMade,
    /// In this file: the one left for `mcpctl` on this machine, else the state directory's.
    In(std::path::PathBuf),
    /// Made, but no file could hold it: the admin API cannot be used.
    Nowhere,
}

impl Running {
    /// A handle that makes shard 0 re-read the configuration file when raised (SIGHUP).
    pub fn reload_flag(&self) -> Arc<AtomicBool> {
        self.reload.clone()
    }

    /// A handle that stops the proxy when raised (safe to raise from any thread).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Blocks until every shard has stopped, then leaves the fleet (if a member).
    pub fn join(self) {
        for result in self.handles.join_all() {
            if let Err(e) = result {
                log::error!("a shard stopped with an error: {e}");
            }
        }
        if let Some(path) = &self.local_token {
            local_token::withdraw(path);
        }
        if let Some(cluster) = crate::cluster::get() {
            cluster.leave();
        }
    }
}

/// Shards to run when the configuration says 0: one per CPU this process may run on.
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The online CPUs in this process's affinity mask (taskset, a container's cpuset), so shards are
/// pinned where the operator put the process rather than spread over the whole machine. `None`
/// (every online CPU) when the mask cannot be read.
fn allowed_cpus() -> Option<glommio::CpuSet> {
    // SAFETY: cpu_set_t is plain bits, zeroed is a valid empty set, and the kernel writes at most
    // its size into it.
    let mask = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        set
    };
    let allowed = glommio::CpuSet::online()
        .ok()?
        // SAFETY: CPU_ISSET only reads the set; `cpu` is below CPU_SETSIZE on any machine glommio sees.
        .filter(|l| l.cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(l.cpu, &mask) });
    (!allowed.is_empty()).then_some(allowed)
}

/// Starts every shard and returns once all listen and the first discovery round is done.
///
/// Returns [`StartError::Interrupted`] when `control.stop` is raised before then, and an error
/// (never a hang) when a shard's thread ends before serving.
pub fn start(mut config: Config, mode: Mode, control: Control) -> Result<Running, StartError> {
    crate::runtime::memlock::check()?;
    crate::runtime::memlock::probe_io_uring()?;
    let (stdio, takeover) = match mode {
        Mode::Stdio => (
            Some(stdio_downstream::bridge_stdio().map_err(StartError::Stdio)?),
            false,
        ),
        Mode::Http { takeover } => (None, takeover),
    };
    let shards = match (&stdio, config.proxy.shards) {
        (Some(_), _) => 1,
        (None, 0) => default_shards(),
        (None, n) => n.min(256),
    };
    let mut listen_hold = PortHold::none();
    if stdio.is_some() {
        // A desktop client may start several stdio proxies; a fixed admin port would collide.
        config.proxy.admin_listen = None;
    } else {
        (config.proxy.listen, listen_hold) =
            listener::reserve(config.proxy.listen, Role::Clients, takeover)?;
    }
    let addr = config.proxy.listen;
    if config.cluster.is_some() && config.proxy.session_key.is_none() {
        return Err(crate::cluster::StartError::NoSessionKey.into());
    }
    if config.proxy.session_key.is_none() {
        // Every shard must open every shard's ids, so one random key for the process.
        let mut key = [0u8; 32];
        let _ = getrandom::fill(&mut key);
        config.proxy.session_key = Some(key.iter().map(|b| format!("{b:02x}")).collect());
        log::info!("no session_key configured: sessions end with this process (set [proxy] session_key or MCP_PROXY_SESSION_KEY to keep them across restarts)");
    }
    let (admin, admin_hold) = match config.proxy.admin_listen {
        Some(a) => {
            listener::check_distinct(config.proxy.listen, a)?;
            listener::reserve(a, Role::Admin, takeover).map(|(a, h)| (Some(a), h))?
        }
        None => (None, PortHold::none()),
    };
    config.proxy.admin_listen = admin;
    // The admin API is never open: without a configured token, one is made (kept in the state
    // directory when there is one, so it survives a restart).
    let generated_token = match (admin, &config.proxy.admin_token) {
        (Some(_), None) => {
            let token = match &config.proxy.state_dir {
                Some(dir) => crate::runtime::admin_token::kept_in(dir)?,
                None => crate::runtime::admin_token::random_token(),
            };
            config.proxy.admin_token = Some(token.clone());
            Some(token)
        }
        _ => None,
    };
    // Where a token kept across restarts is, for the operator.
    let kept_token = match (&generated_token, &config.proxy.state_dir) {
        (Some(_), Some(dir)) => Some(dir.join(crate::runtime::admin_token::TOKEN_FILE)),
        _ => None,
    };
    // The registry's servers (the configuration plus the state directory's changes) are the
    // servers every shard starts with, so indices agree everywhere from the start.
    let registry = Arc::new(match &config.cluster {
        Some(cluster) => {
            let identity = member_identity(cluster, &config, addr, admin, shards);
            let shared = crate::cluster::start(&config, identity)?;
            // The shared registry replaces the state directory's.
            let doc = shared.as_ref().and_then(|s| s.doc.as_ref());
            match doc {
                Some(doc) => crate::registry::servers::Registry::with_state(&config, doc),
                None => crate::registry::servers::Registry::from_config(&config),
            }
        }
        None => crate::registry::servers::load(&config)?,
    });
    config.servers = registry.entries.iter().map(|e| e.config.clone()).collect();
    crate::metrics::install(shards, &config)?;
    crate::tls::install_listener(config.tls.as_ref())?;
    crate::auth::install(config.auth.clone());
    // Serve with the trusted issuers' keys when they can be had; an issuer down at start is
    // retried in the background.
    crate::auth::oauth::wait_first_fetch(&config.auth, std::time::Duration::from_secs(15));
    crate::endpoint::limits::apply(&config.limits);
    crate::endpoint::limits::apply_connection(&crate::endpoint::limits::ConnectionLimits::of(
        &config.proxy,
    ));
    let config = Arc::new(config);
    let Control { stop, reload } = control;
    let ready = Arc::new(AtomicUsize::new(0));
    let first_catalog = Arc::new(AtomicU64::new(0));
    let drained = Arc::new(AtomicUsize::new(0));
    let mesh = (shards > 1).then(|| MeshBuilder::<Msg, _>::full(shards, CHANNEL_SIZE));
    let stdio = Arc::new(std::sync::Mutex::new(stdio));
    let handles = {
        let (ready, stop, drained) = (ready.clone(), stop.clone(), drained.clone());
        let (reload, first_catalog) = (reload.clone(), first_catalog.clone());
        LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(shards, allowed_cpus()))
            .name("mcp-proxy-shard")
            .spin_before_park(config.proxy.idle_poll)
            .on_all_shards(move || {
                let (config, ready, stop, mesh) =
                    (config.clone(), ready.clone(), stop.clone(), mesh.clone());
                let (registry, reload) = (registry.clone(), reload.clone());
                let first_catalog = first_catalog.clone();
                // Only one shard runs in stdio mode; it takes the bridge.
                let stdio = stdio.lock().ok().and_then(|mut s| s.take());
                let signals = Signals {
                    ready,
                    first_catalog,
                    stop,
                    drained,
                    reload,
                };
                async move { run_shard(config, registry, shards, mesh, signals, stdio).await }
            })
            .map_err(|e| StartError::Executors {
                shards,
                detail: e.to_string(),
            })?
    };
    while ready.load(Ordering::Acquire) < shards {
        if stop.load(Ordering::Acquire) {
            return Err(StartError::Interrupted);
        }
        if handles.handles().iter().any(|h| h.is_finished()) {
            return Err(shard_failure(&handles, shards));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Every listener is bound: the ports are ours now.
    drop((listen_hold, admin_hold));
    // mcpctl on this machine finds a generated token by the admin port, with no setting.
    let local_token = match (admin, &generated_token) {
        (Some(admin), Some(token)) => match local_token::publish(admin.port(), token) {
            Ok(path) => Some(path),
            Err(e) => {
                log::warn!(
                    "the generated admin token could not be left for mcpctl: {e}; set [proxy] \
                     admin_token (or MCP_PROXY_ADMIN_TOKEN) and give mcpctl the same token"
                );
                None
            }
        },
        _ => None,
    };
    Ok(Running {
        addr,
        admin,
        handles,
        stop,
        reload,
        generated_token: match (&generated_token, local_token.clone().or(kept_token)) {
            (None, _) => GeneratedToken::NotMade,
            (Some(_), Some(file)) => GeneratedToken::In(file),
            (Some(_), None) => GeneratedToken::Nowhere,
        },
        local_token,
    })
}

/// What this member publishes to the fleet: its name (default: hostname and port), the
/// address other members reach it at (default: the listen address), its admin listener.
fn member_identity(
    cluster: &crate::config::cluster::ClusterConfig,
    config: &Config,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    shards: usize,
) -> crate::cluster::Identity {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // Listening on every address, the listen address reaches nobody: the hostname does.
    let advertise = cluster.advertise.clone().unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            format!("{scheme}://{}:{}", crate::cluster::hostname(), addr.port())
        } else {
            format!("{scheme}://{addr}")
        }
    });
    // An admin listener on a wildcard address is reached at the advertised host.
    let admin = admin.map(|a| {
        if a.ip().is_unspecified() {
            format!("{}:{}", advertised_host(&advertise), a.port())
        } else {
            a.to_string()
        }
    });
    crate::cluster::Identity {
        name: cluster
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", crate::cluster::hostname(), addr.port())),
        advertise,
        admin,
        shards,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// The host of an advertise URL (`http://host:port`, `http://[v6]:port` or without a port).
fn advertised_host(advertise: &str) -> &str {
    let rest = advertise.split_once("://").map_or(advertise, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// A shard thread that ended before serving: glommio could not build its executor. Its error
/// stays in the thread (joining it could wait on shards blocked on the mesh), so the likely
/// causes are named instead; [`crate::runtime::memlock::check`] and [`crate::runtime::memlock::probe_io_uring`]
/// already ruled out the common ones with their own messages.
fn shard_failure(handles: &glommio::PoolThreadHandles<()>, shards: usize) -> StartError {
    let ended = handles.handles().iter().filter(|h| h.is_finished()).count();
    StartError::ShardFailed {
        detail: format!(
            "{ended} of {shards} shard thread(s) could not build an io_uring executor \
             (check the locked-memory limit, `ulimit -l`, and that io_uring is allowed)"
        ),
    }
}

/// Resolves when `stop` is raised.
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

/// Flags shared by every shard and the main thread.
struct Signals {
    /// Shards that are serving.
    ready: Arc<AtomicUsize>,
    /// 1 + the generation of shard 0's catalog after its first discovery round; 0 until then.
    first_catalog: Arc<AtomicU64>,
    /// Raised to shut down.
    stop: Arc<AtomicBool>,
    /// Shards that have drained.
    drained: Arc<AtomicUsize>,
    /// Raised to re-read the configuration (shard 0 takes it down).
    reload: Arc<AtomicBool>,
}

async fn run_shard(
    config: Arc<Config>,
    registry: Arc<crate::registry::servers::Registry>,
    shards: usize,
    mesh: Option<MeshBuilder<Msg, Full>>,
    signals: Signals,
    stdio: Option<std::os::unix::net::UnixStream>,
) {
    let Signals {
        ready,
        first_catalog,
        stop,
        drained,
        reload,
    } = signals;
    let (mesh, receivers, id) = match mesh {
        Some(builder) => match builder.join().await {
            Ok((senders, receivers)) => {
                let id = senders.peer_id();
                (Mesh::new(id, Some(senders)), Some(receivers), id)
            }
            Err(e) => {
                log::error!("could not join the shard mesh: {e}");
                return;
            }
        },
        None => (Mesh::new(0, None), None, 0),
    };
    let addr = config.proxy.listen;
    let shard = wiring::build_shard(id, shards, config, mesh);
    // Same servers as the configuration now holds; this brings in their states (drained).
    shard.install_registry(registry);
    if let Some(receivers) = receivers {
        Mesh::spawn_receivers(&shard, receivers);
    }
    let listener = match stdio {
        Some(_) => None,
        None => match listener::bind(addr) {
            Ok(l) => Some(l),
            Err(e) => {
                log::error!("shard {id}: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        },
    };
    glommio::spawn_local(shard.clone().expire_sessions()).detach();
    glommio::spawn_local(crate::endpoint::member_forward::follow_routes(
        shard.clone(),
    ))
    .detach();
    crate::upstream::health::start(&shard);
    crate::metrics::init_shard(id, &shard.config);
    if let (0, Some(admin)) = (id, shard.config.proxy.admin_listen) {
        let started = listener::bind(admin).and_then(|l| crate::admin::start(&shard, l));
        if let Err(e) = started {
            log::error!("cannot serve the admin endpoints on {admin}: {e}");
            std::process::exit(1);
        }
    }
    if id == 0 {
        shard.start_discovery().await;
        crate::admin::servers::watch_reload(&shard, reload);
        crate::orchestration::registry_change::follow_shared(&shard);
        first_catalog.store(shard.catalog().generation + 1, Ordering::Release);
    } else {
        // The ready line promises the discovered catalog on every shard: a client that
        // connects at once must not land on a shard still holding the empty one.
        loop {
            let want = first_catalog.load(Ordering::Acquire);
            if want != 0 && shard.catalog().generation + 1 >= want {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
    ready.fetch_add(1, Ordering::AcqRel);
    match (listener, stdio) {
        (Some(listener), _) => {
            log::debug!("shard {id} accepting on {addr}");
            futures_lite::future::or(accept(&shard, &listener), stopped(&stop)).await;
            drop(listener);
        }
        (None, Some(io)) => {
            futures_lite::future::or(stdio_downstream::serve(shard.clone(), io), stopped(&stop))
                .await;
        }
        (None, None) => {}
    }
    // Idle keep-alive connections close now and busy ones after their answer, so only
    // requests in flight keep the shard.
    crate::shard::drain::begin();
    shut_down(&shard, &drained).await;
    crate::shard::drain::finish();
}

async fn accept(shard: &Rc<Shard>, listener: &TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(crate::endpoint::accept::serve(shard.clone(), stream))
                    .detach();
            }
            Err(e) => {
                // Out of descriptors or a transient accept error: back off instead of spinning.
                log::warn!("shard {}: accept failed: {e}", shard.id);
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn shut_down(shard: &Rc<Shard>, drained: &AtomicUsize) {
    let start = Instant::now();
    while shard.requests_in_flight() > 0 && start.elapsed() < DRAIN_LIMIT {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    if shard.requests_in_flight() > 0 {
        log::warn!(
            "shard {}: {} request(s) still in flight at shutdown",
            shard.id,
            shard.requests_in_flight()
        );
    }
    drained.fetch_add(1, Ordering::AcqRel);
    // Every shard's requests may use the stdio children shard 0 owns: stop them only once
    // every shard has drained (bounded, in case a shard is stuck).
    let limit = DRAIN_LIMIT + Duration::from_secs(1);
    while drained.load(Ordering::Acquire) < shard.nr_shards && start.elapsed() < limit {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    shard.end_all_sessions().await;
    crate::upstream::table::stop_children(shard, CHILD_GRACE).await;
    log::debug!("shard {} stopped", shard.id);
}

#[cfg(test)]
mod member_tests {
    #[test]
    fn a_wildcard_admin_address_is_reached_at_the_advertised_host() {
        use super::advertised_host;
        assert_eq!(advertised_host("http://10.0.0.5:8080"), "10.0.0.5");
        assert_eq!(
            advertised_host("https://proxy-1.internal"),
            "proxy-1.internal"
        );
        assert_eq!(advertised_host("http://[fd00::5]:8080/"), "[fd00::5]");
    }
}
