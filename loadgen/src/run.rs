//! The load driver: spreads connections, sessions and in-flight requests over executor
//! threads, sets up the sessions, then sends the mix closed-loop or open-loop.
//!
//! Closed loop: each of `concurrency` workers sends its next request as soon as the previous
//! answer arrives, so the figure is the throughput at that concurrency; latency is measured
//! from the send.
//!
//! Open loop: requests are due on a fixed schedule (`--rate`), and workers take the next due
//! slot in turn. Latency is measured from the slot's *intended* time, not from when a worker got
//! around to sending it, so queueing behind a slow answer counts (the coordinated-omission
//! correction, done with the schedule rather than after the fact). The generator's own lateness
//! in waking for a slot it was free to send on time (its timer, its core being busy or halted)
//! is inside that figure too; it is reported apart as the *wake lag*, so a reader can tell
//! it from the server's.
//!
//! HTTP/1.1 carries one request at a time per connection, so `concurrency <= connections`;
//! with more connections than workers, workers rotate through them.
//!
//! In the 2026-07-28 era ([`Era::Stateless`]) there is no setup: no session is opened, and
//! every request carries the envelope and headers its mix entry was built with.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::client::{initialize, Conn, Failure, Session, Target};
use crate::era::{Era, Stamp};
use crate::mix::Mix;
use crate::preflight::{self, PreflightError};
use crate::report::{Report, Settings, Stats};
use crate::sessions::{self, SetupError};
use crate::timeline::{self, TimelineError};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Target URL as given (for the report).
    pub url: String,
    /// Where to send (the first of `targets`).
    pub target: Target,
    /// Every URL load goes to: connections go round-robin over them.
    pub targets: Vec<Target>,
    /// Where sessions are opened, when not where the load goes.
    pub open_target: Option<Target>,
    /// MCP sessions to open; requests go round-robin over them.
    pub sessions: usize,
    /// 2026-07-28 client identities; requests go round-robin over them (1 when stateful).
    pub clients: usize,
    /// TCP connections.
    pub connections: usize,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time before measuring starts (load is sent, nothing recorded).
    pub warmup: Duration,
    /// Requests per second for open loop; None for closed loop.
    pub rate: Option<f64>,
    /// What to send.
    pub mix: Mix,
    /// The mix as written, for the report.
    pub mix_text: String,
    /// Executor threads.
    pub threads: usize,
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// Whether to print a progress line on stderr every second.
    pub progress: bool,
    /// Cut the measured window into slices of this length and report each (`--timeline`).
    pub timeline: Option<Duration>,
    /// Check the tools the mix calls against `tools/list` before sending load.
    pub check_tools: bool,
    /// Stateful sessions or 2026-07-28 requests; `mix` must have been parsed for it.
    pub era: Era,
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A count that must be positive was 0.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// More requests in flight than connections to carry them.
    #[error(
        "--concurrency {concurrency} exceeds --connections {connections}: HTTP/1.1 carries one \
         request per connection at a time"
    )]
    ConcurrencyAboveConnections {
        /// Requested concurrency.
        concurrency: usize,
        /// Requested connections.
        connections: usize,
    },
    /// A rate that is not a positive, finite number.
    #[error("--rate must be a positive number of requests per second")]
    BadRate,
    /// A session option given for the 2026-07-28 era, which has no sessions.
    #[error(
        "--{0} has no meaning with --protocol 2026-07-28: that era opens no sessions (--clients N \
         sends as N clients)"
    )]
    NoSessions(&'static str),
    /// `--clients` given for the stateful era, where each session is a client.
    #[error("--clients is for --protocol 2026-07-28; in 2025-11-25 each session is a client: use --sessions")]
    ClientsAreSessions,
    /// `--clients 0`.
    #[error("--clients must be at least 1")]
    NoClients,
    /// Connecting or initializing sessions failed before any load was sent.
    #[error("setup failed: {0}")]
    Setup(#[from] SetupError),
    /// An executor thread could not start or died.
    #[error("executor: {0}")]
    Executor(String),
    /// The timeline cannot be kept as asked.
    #[error(transparent)]
    Timeline(#[from] TimelineError),
    /// The mix calls tools the server does not offer (or the check could not be made).
    #[error(transparent)]
    Preflight(#[from] PreflightError),
}

/// Share `i` of `n` split over `parts` as evenly as possible.
fn share(n: usize, i: usize, parts: usize) -> usize {
    n / parts + usize::from(i < n % parts)
}

/// Counters the progress line reads while threads work.
#[derive(Debug, Default)]
struct Progress {
    /// Requests finished (warm-up included).
    done: AtomicU64,
    /// Of which failed.
    failed: AtomicU64,
    /// Set when the run is over.
    finished: AtomicBool,
}

/// What one thread is given.
#[derive(Clone)]
struct ThreadPlan {
    /// Thread number, from 0.
    index: usize,
    /// Connections this thread opens.
    connections: usize,
    /// Workers (requests in flight) on this thread.
    concurrency: usize,
    /// Sessions this thread opens.
    sessions: usize,
    /// This thread's share of the rate, if open loop.
    rate: Option<f64>,
    /// The timeline's slice length and count (`--timeline`), checked by [`run`].
    slices: Option<(Duration, usize)>,
}

/// One thread's shared state, used by its workers.
struct Lane {
    /// Where requests go.
    target: Target,
    /// Where connections go, in turn.
    targets: Vec<Target>,
    /// The next of `targets` a connection goes to.
    next_target: Cell<usize>,
    /// What they are.
    mix: Mix,
    /// Idle connections; None marks one that broke and must be reopened.
    pool: RefCell<VecDeque<Option<Conn>>>,
    /// This thread's sessions, used round-robin.
    sessions: RefCell<Vec<Rc<Session>>>,
    /// Next JSON-RPC request id.
    next_id: Cell<u64>,
    /// Requests picked so far: indexes the mix and the sessions.
    next_pick: Cell<u64>,
    /// Next open-loop slot on the schedule.
    next_slot: Cell<u64>,
    /// Measurements of requests due after the warm-up.
    stats: RefCell<Stats>,
    /// When load started (slot 0 of the schedule).
    start: Instant,
    /// When measuring starts.
    warm_end: Instant,
    /// When no new request is started any more.
    end: Instant,
    /// This thread's share of the open-loop rate.
    rate: Option<f64>,
    /// Longest wait for one answer.
    timeout: Duration,
    /// Counters for the progress line.
    progress: Arc<Progress>,
}

impl Lane {
    /// The URL the next new connection goes to (round-robin over `--url`s).
    fn next_target(&self) -> &Target {
        let i = self.next_target.get();
        self.next_target.set(i.wrapping_add(1));
        &self.targets[i % self.targets.len()]
    }
}

/// Runs the load and returns the report.
pub fn run(cfg: RunConfig) -> Result<Report, RunError> {
    for (name, v) in [
        ("sessions", cfg.sessions),
        ("connections", cfg.connections),
        ("concurrency", cfg.concurrency),
        ("threads", cfg.threads),
    ] {
        if v == 0 {
            return Err(RunError::Zero(name));
        }
    }
    if cfg.concurrency > cfg.connections {
        return Err(RunError::ConcurrencyAboveConnections {
            concurrency: cfg.concurrency,
            connections: cfg.connections,
        });
    }
    if cfg.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(RunError::BadRate);
    }
    if cfg.clients == 0 {
        return Err(RunError::NoClients);
    }
    if cfg.era == Era::Stateful && cfg.clients > 1 {
        return Err(RunError::ClientsAreSessions);
    }
    if cfg.era == Era::Stateless {
        if cfg.sessions > 1 {
            return Err(RunError::NoSessions("sessions"));
        }
        if cfg.open_target.is_some() {
            return Err(RunError::NoSessions("open-url"));
        }
    }
    let slices = cfg
        .timeline
        .map(|slice| timeline::slices(slice, cfg.duration).map(|n| (slice, n)))
        .transpose()?;
    if cfg.check_tools {
        let (target, mix, timeout) = (cfg.target.clone(), cfg.mix.clone(), cfg.timeout);
        let era = cfg.era;
        LocalExecutorBuilder::new(Placement::Unbound)
            .name("mcp-loadgen-preflight")
            .spawn(move || async move { preflight::check(&target, &mix, era, timeout).await })
            .map_err(|e| RunError::Executor(e.to_string()))?
            .join()
            .map_err(|e| RunError::Executor(e.to_string()))??;
    }
    // A thread with no worker would only hold connections: never more threads than workers.
    let threads = cfg.threads.min(cfg.concurrency);
    let progress = Arc::new(Progress::default());
    let barrier = Arc::new(Barrier::new(threads + usize::from(slices.is_some())));
    let mut handles = Vec::new();
    for index in 0..threads {
        let plan = ThreadPlan {
            index,
            connections: share(cfg.connections, index, threads),
            concurrency: share(cfg.concurrency, index, threads),
            // Every thread needs a session to send on, even when there are fewer than threads.
            sessions: share(cfg.sessions, index, threads).max(1),
            rate: cfg.rate.map(|r| r / threads as f64),
            slices,
        };
        let (cfg, progress, barrier) = (cfg.clone(), progress.clone(), barrier.clone());
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("mcp-loadgen-{index}"))
            .spawn(move || async move { thread_main(cfg, plan, progress, barrier).await })
            .map_err(|e| RunError::Executor(e.to_string()))?;
        handles.push(handle);
    }
    // Reads the host's steal at each slice boundary, on a clock started with the lanes'.
    let steal_sampler = slices.map(|(slice, count)| {
        let (barrier, warmup) = (barrier.clone(), cfg.warmup);
        std::thread::spawn(move || {
            barrier.wait();
            timeline::sample_steal(Instant::now() + warmup, slice, count)
        })
    });
    let ticker = cfg
        .progress
        .then(|| spawn_progress(progress.clone(), cfg.warmup, cfg.warmup + cfg.duration));
    let mut total = Stats::new();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(stats)) => total.merge(&stats),
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(e) => first_err = first_err.or(Some(RunError::Executor(e.to_string()))),
        }
    }
    progress.finished.store(true, Ordering::Release);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    if let Some(e) = first_err {
        // The steal sampler is left to finish on its own: nothing will read it.
        return Err(e);
    }
    let steal = steal_sampler.and_then(|s| s.join().ok().flatten());
    let settings = Settings {
        url: cfg.url.clone(),
        mode: if cfg.rate.is_some() { "open" } else { "closed" },
        rate: cfg.rate,
        threads,
        connections: cfg.connections,
        concurrency: cfg.concurrency,
        sessions: if cfg.era == Era::Stateless {
            0
        } else {
            cfg.sessions
        },
        clients: cfg.clients,
        protocol: cfg.era.version(),
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
        mix: cfg.mix_text.clone(),
    };
    Ok(Report::new(settings, &total, steal.as_deref()))
}

/// One executor thread: connect, open sessions, wait for the others, then send load.
async fn thread_main(
    cfg: RunConfig,
    plan: ThreadPlan,
    progress: Arc<Progress>,
    barrier: Arc<Barrier>,
) -> Result<Stats, RunError> {
    // Ids are unique across threads too: each thread counts from its own high base.
    let id_base = (plan.index as u64) << 40;
    let setup = async {
        let mut conns = Vec::with_capacity(plan.connections);
        for i in 0..plan.connections {
            // Spread from a different URL on each thread, so threads do not all pile on one.
            let target = &cfg.targets[(plan.index + i) % cfg.targets.len()];
            conns.extend(sessions::connect(target, 1, cfg.timeout).await?);
        }
        match &cfg.open_target {
            None if cfg.era == Era::Stateless => Ok((
                conns,
                (0..cfg.clients)
                    .map(|k| Rc::new(Session::stateless(k)))
                    .collect(),
            )),
            None => sessions::setup(&cfg.target, conns, plan.sessions, id_base + 1).await,
            Some(open) => {
                let lanes = plan.connections.min(plan.sessions).max(1);
                let opening = sessions::connect(open, lanes, cfg.timeout).await?;
                let (_, opened) =
                    sessions::setup(open, opening, plan.sessions, id_base + 1).await?;
                Ok((conns, opened))
            }
        }
    }
    .await;
    // Wait even after a failure, or the other threads would wait for this one forever.
    barrier.wait();
    let (conns, sessions) = setup?;
    let start = Instant::now();
    let warm_end = start + cfg.warmup;
    let lane = Rc::new(Lane {
        target: cfg.target.clone(),
        targets: cfg.targets.clone(),
        next_target: Cell::new(plan.index),
        mix: cfg.mix.clone(),
        pool: RefCell::new(conns.into_iter().map(Some).collect()),
        sessions: RefCell::new(sessions),
        next_id: Cell::new(id_base + plan.sessions as u64 + 1),
        next_pick: Cell::new(0),
        next_slot: Cell::new(0),
        stats: RefCell::new(match plan.slices {
            Some((slice, count)) => Stats::with_timeline(slice, count),
            None => Stats::new(),
        }),
        start,
        warm_end,
        end: warm_end + cfg.duration,
        rate: plan.rate,
        timeout: cfg.timeout,
        progress,
    });
    let workers: Vec<_> = (0..plan.concurrency)
        .map(|_| glommio::spawn_local(worker(lane.clone())))
        .collect();
    for w in workers {
        w.await;
    }
    let stats = lane.stats.replace(Stats::new());
    Ok(stats)
}

/// One in-flight slot: sends, waits for the answer, records, repeats until the window closes.
async fn worker(lane: Rc<Lane>) {
    let mut body = Vec::with_capacity(512);
    loop {
        let intended = match lane.rate {
            None => Instant::now(),
            Some(rate) => {
                let k = lane.next_slot.get();
                lane.next_slot.set(k + 1);
                lane.start + Duration::from_secs_f64(k as f64 / rate)
            }
        };
        if intended >= lane.end {
            break;
        }
        let now = Instant::now();
        if intended > now {
            glommio::timer::sleep(intended - now).await;
            if intended >= lane.warm_end {
                lane.stats.borrow_mut().record_wake_lag(intended.elapsed());
            }
        }
        let n = lane.next_pick.get();
        lane.next_pick.set(n + 1);
        let id = lane.next_id.get();
        lane.next_id.set(id + 1);
        let session_index = (n as usize) % lane.sessions.borrow().len();
        let session = lane.sessions.borrow()[session_index].clone();
        let entry = lane.mix.pick(n);
        entry.body(id, session.client, &mut body);
        let conn = lane.pool.borrow_mut().pop_front().flatten();
        let (outcome, conn, said) =
            exchange(&lane, conn, &session, entry.stamp.as_ref(), &body, id).await;
        let latency = intended.elapsed();
        // In 2026-07-28 a 404 is an unknown method (-32601): there is no session to renew.
        if outcome == Err(Failure::Http(404)) && !session.is_stateless() {
            // The server forgot the session (restart, expiry): open a new one, as a client must.
            if let Some(mut c) = conn {
                let init_id = lane.next_id.get();
                lane.next_id.set(init_id + 1);
                let fresh = initialize(&mut c, &lane.target, init_id).await;
                if let Ok(s) = fresh {
                    lane.sessions.borrow_mut()[session_index] = Rc::new(s);
                }
                lane.pool.borrow_mut().push_back(c.reusable().then_some(c));
            } else {
                lane.pool.borrow_mut().push_back(None);
            }
        } else {
            lane.pool.borrow_mut().push_back(conn);
        }
        if intended >= lane.warm_end {
            let since_start = intended.saturating_duration_since(lane.warm_end);
            let mut stats = lane.stats.borrow_mut();
            stats.record(since_start, latency, outcome);
            if let Err(f) = outcome {
                stats.record_sample(f, said);
            }
        }
        lane.progress.done.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            lane.progress.failed.fetch_add(1, Ordering::Relaxed);
            if outcome == Err(Failure::Connection) {
                // A refused connect returns at once: back off rather than spin on a dead server.
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Sends one request on `conn` (or a fresh connection); returns the outcome and the
/// connection if it may carry another request.
async fn exchange(
    lane: &Lane,
    conn: Option<Conn>,
    session: &Session,
    stamp: Option<&Stamp>,
    body: &[u8],
    id: u64,
) -> (Result<(), Failure>, Option<Conn>, Option<String>) {
    let mut conn = match conn {
        Some(c) => c,
        None => match Conn::open(lane.next_target(), lane.timeout).await {
            Ok(c) => c,
            Err(f) => return (Err(f), None, None),
        },
    };
    let sent = glommio::timer::timeout(lane.timeout, async {
        Ok(conn
            .post(&lane.target, Some(session), stamp, body, Some(id))
            .await)
    })
    .await;
    match sent {
        Ok(result) => {
            let said = if result.is_err() {
                conn.take_error()
            } else {
                None
            };
            let keep = conn.reusable().then_some(conn);
            (result.map(|_| ()), keep, said)
        }
        // A timed-out exchange leaves the connection mid-response: it cannot be reused.
        Err(_) => (Err(Failure::Timeout), None, None),
    }
}

/// Prints a progress line on stderr every second until the run is over.
fn spawn_progress(
    progress: Arc<Progress>,
    warmup: Duration,
    total: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut last = 0;
        let mut tick = 1;
        while !progress.finished.load(Ordering::Acquire) {
            let due = start + Duration::from_secs(tick);
            // Short sleeps so the thread notices the end of the run promptly.
            while Instant::now() < due && !progress.finished.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if progress.finished.load(Ordering::Acquire) {
                break;
            }
            let done = progress.done.load(Ordering::Relaxed);
            let failed = progress.failed.load(Ordering::Relaxed);
            let elapsed = start.elapsed();
            let phase = if elapsed < warmup {
                "warm-up"
            } else if elapsed < total {
                "measuring"
            } else {
                "draining"
            };
            eprintln!(
                "[{:>4}s] {:>9} req/s  {:>10} done  {:>7} errors  ({phase})",
                tick,
                done - last,
                done,
                failed
            );
            last = done;
            tick += 1;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (n, parts) in [(10, 3), (1, 2), (7, 7), (100, 1)] {
            let sum: usize = (0..parts).map(|i| share(n, i, parts)).sum();
            assert_eq!(sum, n);
        }
        assert_eq!(share(10, 0, 3), 4);
        assert_eq!(share(10, 2, 3), 3);
    }
}
