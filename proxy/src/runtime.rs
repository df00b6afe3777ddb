//! Starts the shards: one glommio executor pinned per core, each with its own listener.
//!
//! All shards bind the same address with SO_REUSEPORT and the kernel spreads connections
//! over them. Port 0 is resolved once, up front, so every shard binds the same real port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};

use crate::config::Config;
use crate::shard::mesh::{Msg, CHANNEL_SIZE};
use crate::shard::{Mesh, Shard};
use crate::transport::downstream;

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
}

/// A running proxy, before it is joined.
pub struct Running {
    /// The address clients connect to.
    pub addr: SocketAddr,
    /// The admin endpoints' address (`/metrics`, `/stats`, `/healthz`), when served.
    pub admin: Option<SocketAddr>,
    handles: glommio::PoolThreadHandles<()>,
}

impl Running {
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
pub fn start(mut config: Config) -> Result<Running, StartError> {
    let shards = match config.proxy.shards {
        0 => default_shards(),
        n => n.min(256),
    };
    let addr = resolve_port(config.proxy.listen)?;
    config.proxy.listen = addr;
    let admin = config.proxy.admin_listen.map(resolve_port).transpose()?;
    config.proxy.admin_listen = admin;
    crate::metrics::install(shards, &config)?;
    let config = Arc::new(config);
    let ready = Arc::new(AtomicUsize::new(0));
    let mesh = (shards > 1).then(|| MeshBuilder::<Msg, _>::full(shards, CHANNEL_SIZE));
    let handles = {
        let ready = ready.clone();
        LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(shards, None))
            .name("mcp-proxy-shard")
            .on_all_shards(move || {
                let config = config.clone();
                let ready = ready.clone();
                let mesh = mesh.clone();
                async move { run_shard(config, shards, mesh, ready).await }
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

async fn run_shard(
    config: Arc<Config>,
    shards: usize,
    mesh: Option<MeshBuilder<Msg, glommio::channels::channel_mesh::Full>>,
    ready: Arc<AtomicUsize>,
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
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            log::error!("shard {id}: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
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
    log::debug!("shard {id} accepting on {addr}");
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(downstream::serve_connection(shard.clone(), stream)).detach();
            }
            Err(e) => {
                // Out of descriptors or a transient accept error: back off instead of spinning.
                log::warn!("shard {id}: accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
