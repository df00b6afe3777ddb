//! The control thread: this member's lease, its record, the leader election, the members seen,
//! and the registry writes shard 0 asks for.
//!
//! Every heartbeat (a third of the lease's TTL) it renews the lease, tries to become leader
//! (the leader key is created under the lease if absent, so it goes when its holder's lease
//! does) and reads the members. A lease etcd no longer has (expired while this member could
//! not reach etcd) is replaced by a new one and the record written again.
//!
//! **A member cut off from etcd** keeps serving with the last registry it saw. Once its lease
//! may have expired (no renewal for a TTL) it no longer counts itself leader and reports
//! `detached` in `GET /api/v1/cluster`; the others stop listing it when etcd expires the lease.
//! Registry writes are refused (503) until etcd answers again.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::etcd::{Etcd, EtcdError};
use super::leader_tasks::LeaderTasks;
use super::registry_watch::registry_in;
use super::{leader_key, member_key, registry_key, Identity, WriteError};
use crate::config::cluster::ClusterConfig;

/// Work asked of the control thread.
pub enum Job {
    /// Write the shared registry if its key is at `mod_revision`.
    WriteRegistry {
        /// The revision the writer's registry was read at.
        mod_revision: i64,
        /// The document, encoded.
        body: Vec<u8>,
        /// Where the answer goes.
        reply: flume::Sender<Result<i64, WriteError>>,
    },
    /// Revoke the lease (the process is stopping).
    Leave(flume::Sender<()>),
}

/// One member as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// What it published.
    #[serde(flatten)]
    pub identity: Identity,
    /// Whether it holds the leader key.
    pub leader: bool,
    /// `up` when its admin `/healthz` answers, `unreachable` when not, `unknown` without an
    /// admin listener; this member itself is `up`.
    pub health: &'static str,
}

/// What this member knows of the fleet.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    /// This member's name.
    pub name: String,
    /// The members listed in etcd at the last heartbeat.
    pub members: Vec<Member>,
    /// The leader's name, if any.
    pub leader: Option<String>,
    /// Whether this member is the leader.
    pub is_leader: bool,
    /// Whether this member's lease may have expired (etcd not reached for a TTL).
    pub detached: bool,
    /// etcd's last error, while it lasts.
    pub etcd_error: Option<String>,
    /// Why the shared registry key's value is not followed (it is no registry document),
    /// while it lasts; set and cleared by the watch thread.
    pub registry_error: Option<String>,
    /// The member's lease id (0: none).
    pub lease: i64,
}

/// The control thread's state.
pub struct Control {
    etcd: Etcd,
    config: ClusterConfig,
    identity: Identity,
    view: Arc<Mutex<View>>,
    lease: i64,
    renewed: Option<Instant>,
    probe: ureq::Agent,
    tasks: LeaderTasks,
}

impl Control {
    /// The control of member `identity`, publishing what it knows in `view`.
    pub fn new(
        etcd: Etcd,
        config: ClusterConfig,
        identity: Identity,
        view: Arc<Mutex<View>>,
        tasks: LeaderTasks,
    ) -> Control {
        let probe = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(500)))
            .build()
            .new_agent();
        Control {
            etcd,
            config,
            identity,
            view,
            lease: 0,
            renewed: None,
            probe,
            tasks,
        }
    }

    fn ttl_secs(&self) -> u64 {
        self.config.lease_ttl.as_secs().max(1)
    }

    /// Runs until the process ends or a [`Job::Leave`].
    pub fn run(mut self, jobs: mpsc::Receiver<Job>) {
        let beat = (self.config.lease_ttl / 3).max(Duration::from_millis(300));
        let mut next = Instant::now();
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(wait) {
                Ok(Job::WriteRegistry {
                    mod_revision,
                    body,
                    reply,
                }) => {
                    let _ = reply.send(self.write_registry(mod_revision, &body));
                }
                Ok(Job::Leave(done)) => {
                    if self.lease != 0 {
                        let _ = self.etcd.revoke(self.lease);
                    }
                    let _ = done.send(());
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.heartbeat();
                    next = Instant::now() + beat;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn write_registry(&self, mod_revision: i64, body: &[u8]) -> Result<i64, WriteError> {
        let key = registry_key(&self.config.prefix);
        match self.etcd.put_if_revision(&key, body, mod_revision)? {
            Ok(revision) => Ok(revision),
            // A value that is no registry document is reported, never computed over.
            Err(now) => Err(WriteError::Moved(registry_in(&self.etcd, &key, &now)?)),
        }
    }

    fn heartbeat(&mut self) {
        let leader = self.standing();
        self.tasks.tick(&self.etcd, leader);
    }

    /// Renews the lease, surveys the fleet and publishes what it saw; whether this member
    /// leads.
    fn standing(&mut self) -> bool {
        let outcome = self.renew().and_then(|()| self.survey());
        let mut view = match self.view.lock() {
            Ok(v) => v,
            Err(_) => return false,
        };
        // Only a heartbeat that reached etcd and found this member holding the leader key
        // runs the fleet's tasks.
        let surveyed = outcome.is_ok();
        view.name = self.identity.name.clone();
        view.lease = self.lease;
        match outcome {
            Ok((members, leader)) => {
                if view.etcd_error.take().is_some() {
                    log::info!(
                        "cluster: etcd reached again; member {} listed",
                        self.identity.name
                    );
                }
                view.detached = false;
                view.is_leader = leader.as_deref() == Some(self.identity.name.as_str());
                if view.is_leader && view.leader.as_deref() != leader.as_deref() {
                    log::info!(
                        "cluster: this member ({}) is now the leader",
                        self.identity.name
                    );
                }
                view.leader = leader;
                // A member cut off from etcd keeps the last count: its clients' shares stay
                // what they were rather than jumping to the whole limit.
                super::LIVE_MEMBERS
                    .store(members.len().max(1), std::sync::atomic::Ordering::Relaxed);
                view.members = members;
            }
            Err(e) => {
                if view.etcd_error.is_none() {
                    log::warn!("cluster: {e}; serving on with the last registry seen");
                }
                view.etcd_error = Some(e.to_string());
                let expired = self
                    .renewed
                    .is_none_or(|at| at.elapsed() >= self.config.lease_ttl);
                if expired && !view.detached {
                    log::warn!(
                        "cluster: lease not renewed for {:?}: this member no longer counts itself a member or the leader",
                        self.config.lease_ttl
                    );
                    view.detached = true;
                    view.is_leader = false;
                    view.leader = None;
                    self.lease = 0;
                }
            }
        }
        let leads = surveyed && view.is_leader;
        // Published after the lock is released: resolving a member's address may block.
        let seen = view.clone();
        drop(view);
        super::member_routes::publish(&self.identity.name, &seen);
        leads
    }

    /// Renews the lease, or takes a new one and writes the member record under it.
    fn renew(&mut self) -> Result<(), EtcdError> {
        if self.lease != 0 && self.etcd.keep_alive(self.lease)? {
            self.renewed = Some(Instant::now());
            return Ok(());
        }
        if self.lease != 0 {
            log::warn!("cluster: lease {} expired; joining again", self.lease);
        }
        let lease = self.etcd.grant(self.ttl_secs())?;
        let record =
            serde_json::to_vec(&self.identity).map_err(|e| EtcdError::Protocol(e.to_string()))?;
        self.etcd.put(
            &member_key(&self.config.prefix, &self.identity.name),
            &record,
            lease,
        )?;
        self.lease = lease;
        self.renewed = Some(Instant::now());
        log::info!(
            "cluster: member {} joined (lease {lease}, ttl {}s)",
            self.identity.name,
            self.ttl_secs()
        );
        Ok(())
    }

    /// Tries for leadership and reads the members and the leader.
    fn survey(&self) -> Result<(Vec<Member>, Option<String>), EtcdError> {
        let leader_key = leader_key(&self.config.prefix);
        self.etcd
            .create(&leader_key, self.identity.name.as_bytes(), self.lease)?;
        let leader = self
            .etcd
            .range(&leader_key, false)?
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        let listed = self
            .etcd
            .range(&member_key(&self.config.prefix, ""), true)?;
        let mut members = BTreeMap::new();
        for kv in listed.kvs {
            match serde_json::from_slice::<Identity>(&kv.value) {
                Ok(identity) => {
                    let health = self.health(&identity);
                    members.insert(
                        identity.name.clone(),
                        Member {
                            leader: leader.as_deref() == Some(identity.name.as_str()),
                            identity,
                            health,
                        },
                    );
                }
                Err(e) => log::warn!("cluster: ignoring the member record {}: {e}", kv.key),
            }
        }
        Ok((members.into_values().collect(), leader))
    }

    fn health(&self, member: &Identity) -> &'static str {
        if member.name == self.identity.name {
            return "up";
        }
        let Some(admin) = &member.admin else {
            return "unknown";
        };
        match self.probe.get(format!("http://{admin}/healthz")).call() {
            Ok(r) if r.status().as_u16() == 200 => "up",
            _ => "unreachable",
        }
    }
}
