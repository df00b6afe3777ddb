//! Opening many MCP sessions at once: the setup phase of a run, and `mcp-loadgen sessions`,
//! which opens N idle sessions so a server's memory per session can be measured.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::client::{initialize, Conn, Failure, Session, Target};

/// Sessions that could not be opened, with the first reason.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {wanted} session(s) could not be initialized; first failure: {first:?}")]
pub struct SetupError {
    /// Sessions asked for.
    pub wanted: usize,
    /// Sessions that failed.
    pub failed: usize,
    /// The first failure seen.
    pub first: Failure,
}

/// Initializes `count` sessions over `conns` (in parallel, one task per connection), using
/// request ids from `first_id` on. Returns the connections (for reuse) and the sessions.
pub async fn setup(
    target: &Target,
    conns: Vec<Conn>,
    count: usize,
    first_id: u64,
) -> Result<(Vec<Conn>, Vec<Rc<Session>>), SetupError> {
    let slots: Rc<RefCell<Vec<Option<Rc<Session>>>>> = Rc::new(RefCell::new(vec![None; count]));
    let failures: Rc<RefCell<Vec<Failure>>> = Rc::default();
    let lanes = conns.len().max(1);
    let mut tasks = Vec::new();
    for (lane, mut conn) in conns.into_iter().enumerate() {
        let (slots, failures, target) = (slots.clone(), failures.clone(), target.clone());
        tasks.push(glommio::spawn_local(async move {
            // Lane `lane` opens sessions lane, lane + lanes, ...: every connection works.
            for i in (lane..count).step_by(lanes) {
                match initialize(&mut conn, &target, first_id + i as u64).await {
                    Ok(s) => slots.borrow_mut()[i] = Some(Rc::new(s)),
                    Err(f) => failures.borrow_mut().push(f),
                }
                if !conn.reusable() {
                    // The server closed or broke the connection: carry on with a fresh one.
                    match Conn::open(&target, Duration::from_secs(10)).await {
                        Ok(c) => conn = c,
                        Err(f) => {
                            failures.borrow_mut().push(f);
                            return None;
                        }
                    }
                }
            }
            Some(conn)
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.extend(t.await);
    }
    let failures = failures.borrow();
    let sessions: Vec<_> = slots.borrow_mut().drain(..).flatten().collect();
    if sessions.len() < count {
        return Err(SetupError {
            wanted: count,
            failed: count - sessions.len(),
            first: failures.first().copied().unwrap_or(Failure::Connection),
        });
    }
    Ok((conns, sessions))
}

/// Opens `connections` connections to `target`.
pub async fn connect(
    target: &Target,
    connections: usize,
    timeout: Duration,
) -> Result<Vec<Conn>, SetupError> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(
            Conn::open(target, timeout)
                .await
                .map_err(|first| SetupError {
                    wanted: connections,
                    failed: connections - conns.len(),
                    first,
                })?,
        );
    }
    Ok(conns)
}

/// What `open` did.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    /// Sessions initialized.
    pub sessions: usize,
    /// Time it took.
    pub elapsed: Duration,
}

/// Why `open` failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Some sessions failed to initialize.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The executor thread could not start or died.
    #[error("executor: {0}")]
    Executor(String),
}

/// Opens `count` sessions over `connections` connections and leaves them idle (never deleted:
/// the server keeps them until its own idle timeout).
pub fn open(target: Target, count: usize, connections: usize) -> Result<Opened, OpenError> {
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("mcp-loadgen-sessions")
        .spawn(move || async move {
            let started = Instant::now();
            let conns = connect(&target, connections.max(1), Duration::from_secs(10)).await?;
            let (_, sessions) = setup(&target, conns, count, 1).await?;
            Ok::<_, SetupError>(Opened {
                sessions: sessions.len(),
                elapsed: started.elapsed(),
            })
        })
        .map_err(|e| OpenError::Executor(e.to_string()))?;
    let opened = handle
        .join()
        .map_err(|e| OpenError::Executor(e.to_string()))??;
    Ok(opened)
}
