//! Work that must happen once per fleet, run by the leader only, on the control thread.
//!
//! A [`LeaderTask`] says how often it runs and what one run does. The control thread calls
//! [`LeaderTasks::tick`] after each heartbeat with whether this member leads (as the leader key
//! said at that heartbeat): a task runs when it is due and this member leads; when leadership
//! moves, the new leader's tasks are due at once, so a task's period is kept across a leader's
//! death give or take the lease's TTL. A member that is not the leader runs nothing.
//!
//! Leadership is read at the heartbeat, so for a moment (at most a TTL) a leader that has just
//! lost its lease may still run a task the new leader runs too: a task must be safe to run
//! twice (idempotent), and short (it runs between heartbeats, bounded by etcd's request
//! timeout); a long one hands its work to a thread of its own. Future fleet-wide jobs (periodic
//! discovery from an MCP registry) are added to [`LeaderTasks::configured`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::etcd::{Etcd, EtcdError};
use crate::config::cluster::ClusterConfig;

/// A job the fleet runs once, on its leader.
pub trait LeaderTask: Send {
    /// Its name, as `GET /api/v1/cluster` lists it.
    fn name(&self) -> &'static str;
    /// How often it runs.
    fn every(&self) -> Duration;
    /// One run; what it did, in a few words.
    fn run(&mut self, etcd: &Etcd) -> Result<String, EtcdError>;
    /// Leadership was lost: forget what a run remembered for the next one.
    fn lost_leadership(&mut self) {}
}

/// What this member has done of one task.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskStatus {
    /// The task's name.
    pub name: &'static str,
    /// Its period, in milliseconds.
    pub every_ms: u64,
    /// Runs made by this member (since it started).
    pub runs: u64,
    /// When the last run ended (seconds since the Unix epoch), if any.
    pub last_run: Option<u64>,
    /// What the last run did.
    pub last_result: Option<String>,
    /// The last run's error, if it failed.
    pub last_error: Option<String>,
}

struct Scheduled {
    task: Box<dyn LeaderTask>,
    due: Option<Instant>,
}

/// The leader-only tasks of this member and what it has done of them.
pub struct LeaderTasks {
    tasks: Vec<Scheduled>,
    status: Arc<Mutex<Vec<TaskStatus>>>,
    leading: bool,
}

impl LeaderTasks {
    /// The tasks `config` turns on, reporting into `status`.
    pub fn configured(config: &ClusterConfig, status: Arc<Mutex<Vec<TaskStatus>>>) -> Self {
        let mut tasks: Vec<Box<dyn LeaderTask>> = Vec::new();
        if let Some(every) = config.compact_every {
            tasks.push(Box::new(CompactHistory::new(every)));
        }
        LeaderTasks::new(tasks, status)
    }

    /// `tasks`, reporting into `status`.
    pub fn new(tasks: Vec<Box<dyn LeaderTask>>, status: Arc<Mutex<Vec<TaskStatus>>>) -> Self {
        if let Ok(mut s) = status.lock() {
            *s = tasks
                .iter()
                .map(|t| TaskStatus {
                    name: t.name(),
                    every_ms: u64::try_from(t.every().as_millis()).unwrap_or(u64::MAX),
                    ..TaskStatus::default()
                })
                .collect();
        }
        LeaderTasks {
            tasks: tasks
                .into_iter()
                .map(|task| Scheduled { task, due: None })
                .collect(),
            status,
            leading: false,
        }
    }

    /// Runs the tasks that are due if `leader`; called after each heartbeat.
    pub fn tick(&mut self, etcd: &Etcd, leader: bool) {
        if leader != self.leading {
            self.leading = leader;
            for s in &mut self.tasks {
                // Due at once on becoming leader; forgotten on losing it.
                s.due = None;
                if !leader {
                    s.task.lost_leadership();
                }
            }
        }
        if !leader {
            return;
        }
        let now = Instant::now();
        for (i, s) in self.tasks.iter_mut().enumerate() {
            if s.due.is_some_and(|due| due > now) {
                continue;
            }
            s.due = Some(now + s.task.every());
            let outcome = s.task.run(etcd);
            match &outcome {
                Ok(what) => log::debug!("cluster: leader task {}: {what}", s.task.name()),
                Err(e) => log::warn!("cluster: leader task {} failed: {e}", s.task.name()),
            }
            if let Some(st) = self.status.lock().ok().as_mut().and_then(|v| v.get_mut(i)) {
                st.runs += 1;
                st.last_run = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs());
                match outcome {
                    Ok(what) => {
                        st.last_result = Some(what);
                        st.last_error = None;
                    }
                    Err(e) => st.last_error = Some(e.to_string()),
                }
            }
        }
    }
}

/// Compacts etcd's history: every registry change stores a whole copy of the registry, and
/// etcd keeps every revision until compacted (its database then fills up and it refuses
/// writes). Each run compacts to the revision the previous run saw, so one period of history
/// is always kept (a watch that fell behind by less than that resumes; one further behind is
/// told the history is gone and rereads the registry whole, as after an outage). This is what
/// Kubernetes' API servers do for their etcd. Compaction applies to the whole etcd, not the
/// prefix: on an etcd shared with other users whose watches lag longer, leave it off.
pub struct CompactHistory {
    every: Duration,
    seen: Option<i64>,
}

impl CompactHistory {
    /// Compaction every `every`.
    pub fn new(every: Duration) -> Self {
        CompactHistory { every, seen: None }
    }
}

impl LeaderTask for CompactHistory {
    fn name(&self) -> &'static str {
        "compact_history"
    }

    fn every(&self) -> Duration {
        self.every
    }

    fn run(&mut self, etcd: &Etcd) -> Result<String, EtcdError> {
        let now = etcd.revision()?;
        let what = match self.seen {
            Some(target) if target < now => {
                if etcd.compact(target)? {
                    format!("history compacted to revision {target}")
                } else {
                    format!("history already compacted past revision {target}")
                }
            }
            _ => format!("revision {now} noted; compacted to it at the next run"),
        };
        self.seen = Some(now);
        Ok(what)
    }

    fn lost_leadership(&mut self) {
        self.seen = None;
    }
}
