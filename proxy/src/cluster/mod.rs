//! A fleet of proxies on etcd: one shared registry, one membership, one leader.
//!
//! Everything here runs on the cluster's own threads, never on a shard: etcd is reached with
//! blocking HTTP calls ([`etcd`], its JSON gateway). Shards hear from these threads the way a
//! reload reaches them: shard 0 receives each newer shared registry on a channel
//! ([`Cluster::take_changes`]) and applies it through the same path as an admin change; a write
//! is asked of the control thread and its answer awaited ([`Cluster::write_registry`]), so no
//! shard ever waits on the network.
//!
//! - [`etcd`]: the client (range, compare-and-set, leases, watch).
//! - [`membership`]: the control thread: this member's lease and record, the leader
//!   election, the members seen, registry writes.
//! - [`leader_tasks`]: work done once per fleet, by the leader, on the control thread
//!   (compacting etcd's history).
//! - [`member_routes`]: where each session is served (its owner member or, once that is
//!   gone, its successor), handed to every shard as membership changes.
//! - [`member_hop`]: the signature of a request one member forwards to another.
//! - [`registry_watch`]: the watch thread: the shared registry as it changes, resynced from a
//!   full read whenever the watch breaks (etcd restarted or unreachable) or has lived its
//!   few seconds (a stream on a connection that died silently would never say so).

pub mod etcd;
pub mod leader_tasks;
pub mod member_hop;
pub mod member_routes;
pub mod membership;
pub mod registry_watch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::cluster::ClusterConfig;
use crate::config::Config;
use crate::registry::state_file::StateDoc;

pub use etcd::{Etcd, EtcdError};
pub use membership::{Member, View};
pub use registry_watch::{ReadError, UnreadableDoc};

/// The shared registry as read from etcd at one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedRegistry {
    /// The store revision at which it was seen: a later sighting has a higher one.
    pub seen: i64,
    /// The registry key's own revision (0: no key), which a write compares against.
    pub mod_revision: i64,
    /// What differs from the configuration file; `None`: nothing (no key yet).
    pub doc: Option<StateDoc>,
    /// The saved workflows by name (each as the admin API took it).
    pub workflows: BTreeMap<String, serde_json::Value>,
}

/// The value of the registry key: the registry document (the one `registry.json` holds for
/// one instance) with the saved workflows beside it, so one compare-and-set orders every
/// change an operator makes to the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedDoc {
    /// What differs from the configuration file.
    #[serde(flatten)]
    pub registry: StateDoc,
    /// The saved workflows by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workflows: BTreeMap<String, serde_json::Value>,
}

/// Why a write of the shared registry was not made.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another member changed the registry first; this is what it holds now.
    #[error("the registry was changed by another member (etcd revision {})", .0.mod_revision)]
    Moved(SharedRegistry),
    /// etcd could not be asked.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The key holds a value that is not a registry document: it is left as it is.
    #[error(transparent)]
    Unreadable(#[from] UnreadableDoc),
    /// The control thread is gone (the proxy is stopping).
    #[error("the cluster's control thread has stopped")]
    Stopped,
}

/// What this member publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its name, unique in the fleet.
    pub name: String,
    /// Where other members reach its clients' endpoint.
    pub advertise: String,
    /// Its admin listener, when it has one (`host:port`).
    pub admin: Option<String>,
    /// Shards it runs.
    pub shards: usize,
    /// Its version.
    pub version: String,
    /// When it started (seconds since the Unix epoch).
    pub started: u64,
}

/// This process's membership of a fleet.
pub struct Cluster {
    /// The `[cluster]` settings.
    pub config: ClusterConfig,
    /// What this member publishes.
    pub identity: Identity,
    /// The configuration as read from the file: the shared registry is laid over it.
    pub bootstrap: Config,
    etcd: Etcd,
    jobs: Mutex<mpsc::Sender<membership::Job>>,
    view: Arc<Mutex<View>>,
    tasks: Arc<Mutex<Vec<leader_tasks::TaskStatus>>>,
    changes: Mutex<Option<flume::Receiver<SharedRegistry>>>,
    started: Mutex<Option<SharedRegistry>>,
}

static CLUSTER: OnceLock<Arc<Cluster>> = OnceLock::new();

/// Members listed at the last heartbeat (1 for a single instance). Per-client rate limits
/// divide by it: an atomic read per request, no lock on the hot path.
static LIVE_MEMBERS: AtomicUsize = AtomicUsize::new(1);

/// How many members share the fleet's per-client limits now (1 for a single instance).
pub fn live_members() -> usize {
    LIVE_MEMBERS.load(Ordering::Relaxed).max(1)
}

/// The fleet this process is a member of; `None` for a single instance.
pub fn get() -> Option<&'static Arc<Cluster>> {
    CLUSTER.get()
}

/// Why the cluster could not be joined at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `[cluster]` without `[proxy] session_key`.
    #[error(
        "[cluster] needs [proxy] session_key (or MCP_PROXY_SESSION_KEY), the same on every \
         member, so any member can open the others' session ids; generate one with \
         `openssl rand -hex 32`"
    )]
    NoSessionKey,
    /// The TLS files cannot be used.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// A thread could not be started.
    #[error("cannot start the cluster thread: {0}")]
    Thread(std::io::Error),
}

/// The key of the shared registry.
pub fn registry_key(prefix: &str) -> String {
    format!("{prefix}registry")
}

/// The key of member `name`.
pub fn member_key(prefix: &str, name: &str) -> String {
    format!("{prefix}members/{name}")
}

/// The leader's key.
pub fn leader_key(prefix: &str) -> String {
    format!("{prefix}leader")
}

/// Joins the fleet `config.cluster` names (if any): reads the shared registry once (so the
/// shards start with it), then starts the control and watch threads. Returns the shared
/// registry read, `None` when etcd did not answer (the file's servers are served until it does)
/// or its key holds no registry document (the file's servers are served until one is written).
///
/// `bootstrap` is the configuration as read from the file; `identity` what this member
/// publishes.
pub fn start(bootstrap: &Config, identity: Identity) -> Result<Option<SharedRegistry>, StartError> {
    let Some(config) = bootstrap.cluster.clone() else {
        return Ok(None);
    };
    if bootstrap.proxy.session_key.is_none() {
        return Err(StartError::NoSessionKey);
    }
    let etcd = Etcd::new(&config)?;
    let mut registry_error = None;
    let (first, read_at) = match registry_watch::read(&etcd, &registry_key(&config.prefix)) {
        Ok(shared) => {
            let at = registry_watch::ReadAt::from(&shared);
            (Some(shared), Some(at))
        }
        Err(ReadError::Unreadable(bad)) => {
            log::error!(
                "cluster: {bad}; serving the configuration file's servers until a registry \
                 document is written there"
            );
            registry_error = Some(bad.to_string());
            (None, Some(registry_watch::ReadAt::from(&bad)))
        }
        Err(ReadError::Etcd(e)) => {
            log::warn!("cluster: {e}; serving the configuration file's servers until etcd answers");
            (None, None)
        }
    };
    let (jobs, job_rx) = mpsc::channel();
    let (change_tx, change_rx) = flume::unbounded();
    let view = Arc::new(Mutex::new(View {
        registry_error,
        ..View::default()
    }));
    let tasks = Arc::new(Mutex::new(Vec::new()));
    let leader_tasks = leader_tasks::LeaderTasks::configured(&config, tasks.clone());
    let cluster = Arc::new(Cluster {
        config: config.clone(),
        identity: identity.clone(),
        bootstrap: bootstrap.clone(),
        etcd: etcd.clone(),
        jobs: Mutex::new(jobs),
        view: view.clone(),
        tasks,
        changes: Mutex::new(Some(change_rx)),
        started: Mutex::new(first.clone()),
    });
    if CLUSTER.set(cluster.clone()).is_err() {
        log::warn!("cluster: joined twice in one process; the first membership is kept");
        return Ok(first);
    }
    let control =
        membership::Control::new(etcd.clone(), config.clone(), identity, view, leader_tasks);
    std::thread::Builder::new()
        .name("cluster-control".into())
        .spawn(move || control.run(job_rx))
        .map_err(StartError::Thread)?;
    let key = registry_key(&config.prefix);
    std::thread::Builder::new()
        .name("cluster-watch".into())
        .spawn(move || registry_watch::run(&etcd, &key, read_at, &change_tx, &cluster.view))
        .map_err(StartError::Thread)?;
    Ok(first)
}

impl Cluster {
    /// The shared registry the shards started with (if etcd answered at start); taken once,
    /// by shard 0.
    pub fn take_started(&self) -> Option<SharedRegistry> {
        self.started.lock().ok()?.take()
    }

    /// The newer shared registries as the watch sees them; taken once, by shard 0.
    pub fn take_changes(&self) -> Option<flume::Receiver<SharedRegistry>> {
        self.changes.lock().ok()?.take()
    }

    /// What this member knows of the fleet now (at most one heartbeat old).
    pub fn view(&self) -> View {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Writes `doc` as the shared registry if its key is still at `mod_revision`; the new
    /// revision. Done on the control thread: the caller (shard 0) only awaits the answer.
    pub async fn write_registry(
        &self,
        mod_revision: i64,
        doc: &SharedDoc,
    ) -> Result<i64, WriteError> {
        let body = serde_json::to_vec(doc).map_err(|e| EtcdError::Protocol(e.to_string()))?;
        let (reply, answer) = flume::bounded(1);
        let job = membership::Job::WriteRegistry {
            mod_revision,
            body,
            reply,
        };
        let sent = match self.jobs.lock() {
            Ok(jobs) => jobs.send(job).is_ok(),
            Err(_) => false,
        };
        if !sent {
            return Err(WriteError::Stopped);
        }
        answer
            .recv_async()
            .await
            .unwrap_or(Err(WriteError::Stopped))
    }

    /// Leaves the fleet at once (the member's keys go with its lease), waiting at most a
    /// second: on a clean stop, other members need not wait for the lease to expire.
    pub fn leave(&self) {
        let (reply, done) = flume::bounded(1);
        if let Ok(jobs) = self.jobs.lock() {
            let _ = jobs.send(membership::Job::Leave(reply));
        }
        let _ = done.recv_timeout(Duration::from_secs(1));
    }

    /// What this member has done of the fleet's leader-only tasks.
    pub fn leader_tasks(&self) -> Vec<leader_tasks::TaskStatus> {
        self.tasks.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The etcd client (for the admin API's reads).
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }
}

/// This host's name, for a member's default name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "mcp-proxy".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
