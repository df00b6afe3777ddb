//! Starts the shards: one glommio executor pinned per core, each with its own listener.
//!
//! All shards bind the same address with SO_REUSEPORT and the kernel spreads connections
//! over them. Port 0 is resolved once, up front, so every shard binds the same real port.
//! Shutdown is cooperative: [`Running::stop`] raises a flag every shard watches; each stops
//! accepting, lets requests in flight finish (up to [`DRAIN_LIMIT`]), ends its sessions
//! (deleting upstream sessions), and shard 0 stops the stdio children.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::net::TcpListener;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use crate::config::Config;
use crate::shard::mesh::{Msg, CHANNEL_SIZE};
use crate::shard::{Mesh, Shard};
use crate::transport::downstream;
use crate::transport::stdio::downstream as stdio_downstream;

/// How long shutdown waits for requests in flight.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How long a stdio child has to exit after SIGTERM before SIGKILL.
pub const CHILD_GRACE: Duration = Duration::from_secs(3);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
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
}

/// Where clients come from.
pub enum Mode {
    /// Streamable HTTP on the configured address, on every shard.
    Http,
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
}

impl Running {
    /// A handle that stops the proxy when raised (safe to raise from any thread).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Blocks until every shard has stopped.
    pub fn join(self) {
        for result in self.handles.join_all() {
            if let Err(e) = result {
                log::error!("a shard stopped with an error: {e}");
            }
        }
    }
}

/// Shards to run when the configuration says 0: one per online CPU.
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Starts every shard and returns once all listen and the first discovery round is done.
pub fn start(mut config: Config, mode: Mode) -> Result<Running, StartError> {
    let stdio = match mode {
        Mode::Stdio => Some(stdio_downstream::bridge_stdio().map_err(StartError::Stdio)?),
        Mode::Http => None,
    };
    let shards = match (&stdio, config.proxy.shards) {
        (Some(_), _) => 1,
        (None, 0) => default_shards(),
        (None, n) => n.min(256),
    };
    if stdio.is_some() {
        // A desktop client may start several stdio proxies; a fixed admin port would collide.
        config.proxy.admin_listen = None;
    } else {
        config.proxy.listen = resolve_port(config.proxy.listen)?;
    }
    let addr = config.proxy.listen;
    let admin = config.proxy.admin_listen.map(resolve_port).transpose()?;
    config.proxy.admin_listen = admin;
    crate::metrics::install(shards, &config)?;
    let config = Arc::new(config);
    let ready = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mesh = (shards > 1).then(|| MeshBuilder::<Msg, _>::full(shards, CHANNEL_SIZE));
    let stdio = Arc::new(std::sync::Mutex::new(stdio));
    let handles = {
        let (ready, stop, drained) = (ready.clone(), stop.clone(), drained.clone());
        LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(shards, None))
            .name("mcp-proxy-shard")
            .on_all_shards(move || {
                let (config, ready, stop, mesh) =
                    (config.clone(), ready.clone(), stop.clone(), mesh.clone());
                // Only one shard runs in stdio mode; it takes the bridge.
                let stdio = stdio.lock().ok().and_then(|mut s| s.take());
                async move { run_shard(config, shards, mesh, ready, stop, drained, stdio).await }
            })
            .map_err(|e| StartError::Executors {
                shards,
                detail: e.to_string(),
            })?
    };
    while ready.load(Ordering::Acquire) < shards {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Running {
        addr,
        admin,
        handles,
        stop,
    })
}

/// Binds once to learn the real port when the configuration asks for port 0.
fn resolve_port(addr: SocketAddr) -> Result<SocketAddr, StartError> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe =
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    probe
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

/// Resolves when `stop` is raised.
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_shard(
    config: Arc<Config>,
    shards: usize,
    mesh: Option<MeshBuilder<Msg, Full>>,
    ready: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    drained: Arc<AtomicUsize>,
    stdio: Option<std::os::unix::net::UnixStream>,
) {
    let (mesh, receivers, id) = match mesh {
        Some(builder) => match builder.join().await {
            Ok((senders, receivers)) => {
                let id = senders.peer_id();
                (Mesh::new(Some(senders)), Some(receivers), id)
            }
            Err(e) => {
                log::error!("could not join the shard mesh: {e}");
                return;
            }
        },
        None => (Mesh::new(None), None, 0),
    };
    let addr = config.proxy.listen;
    let shard = Shard::new(id, shards, config, mesh);
    if let Some(receivers) = receivers {
        Mesh::spawn_receivers(&shard, receivers);
    }
    let listener = match stdio {
        Some(_) => None,
        None => match TcpListener::bind(addr) {
            Ok(l) => Some(l),
            Err(e) => {
                log::error!("shard {id}: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        },
    };
    glommio::spawn_local(shard.clone().expire_sessions()).detach();
    crate::metrics::init_shard(id, &shard.config);
    if let (0, Some(admin)) = (id, shard.config.proxy.admin_listen) {
        if let Err(e) = crate::admin::start(&shard, admin) {
            log::error!("cannot serve the admin endpoints on {admin}: {e}");
            std::process::exit(1);
        }
    }
    if id == 0 {
        shard.start_discovery().await;
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
    shut_down(&shard, &drained).await;
}

async fn accept(shard: &Rc<Shard>, listener: &TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(downstream::serve_connection(shard.clone(), stream)).detach();
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
    shard.stop_children(CHILD_GRACE).await;
    log::debug!("shard {} stopped", shard.id);
}
