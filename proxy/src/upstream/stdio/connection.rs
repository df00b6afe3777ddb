//! The one MCP session with a stdio child, shared by every downstream session.
//!
//! A child has one stdin/stdout and one MCP session, so requests from many sessions (on any
//! shard) are multiplexed onto it: each gets a child-unique id and, if it asked for progress,
//! a child-unique progress token; both are mapped back on the way out. What the child sends
//! on its own is routed to the session that caused it:
//! - progress by its token, responses by their id;
//! - server-to-client requests (sampling, elicitation, roots) to the session whose request is
//!   in flight (stdio carries no relation on the wire, so with several in flight the most
//!   recent one is chosen); asked outside any request, the proxy declines them;
//! - `resources/updated` to the sessions subscribed to that URI (the child holds one
//!   subscription per URI: only the first subscribe and the last unsubscribe reach it);
//! - log messages to every session using the server; `list_changed` to discovery.
//!
//! The link restarts a child that exits, with exponential backoff, and gives up after
//! [`CRASH_LIMIT`] quick exits in a row: the server is then reported failed.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::io::ReadHalf;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::UnixStream;
use simd_json::prelude::*;
use simd_json::BorrowedValue as Value;

use super::child::ChildProcess;
use super::lines::{read_lines, write_lines};
use crate::config::{ServerConfig, StdioCommand};
use crate::protocol::jsonrpc::{self, code, Id, Kind};
use crate::protocol::version;
use crate::shard::Shard;
use crate::upstream::{UpstreamError, UpstreamSink};

/// Session key of discovery's handle: nothing is routed back to it unasked.
pub const DISCOVERY: &str = "discovery";
/// Session key of the link's own requests (the handshake, re-subscriptions).
const LINK: &str = "link";
/// Quick exits in a row after which the server is reported failed.
pub const CRASH_LIMIT: u32 = 5;
/// A child that ran this long counts as having started fine.
const STABLE_AFTER: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How a posted message was taken.
pub enum LinkReply {
    /// A notification or response was passed on.
    Accepted,
    /// The messages answering a request, ending with its response.
    Stream(LocalReceiver<Bytes>),
}

enum ChildState {
    Starting,
    Ready(Bytes),
    Failed(String),
    Stopped,
}

struct Pending {
    tx: LocalSender<Bytes>,
    session: String,
    origin_id: Id,
    token: Option<(String, Id)>,
}

/// One stdio server's child and the session with it.
pub struct StdioLink {
    index: usize,
    name: String,
    command: StdioCommand,
    timeout: Duration,
    shard: Weak<Shard>,
    state: RefCell<ChildState>,
    out: RefCell<Option<LocalSender<Bytes>>>,
    child: RefCell<Option<ChildProcess>>,
    next_id: Cell<i64>,
    /// Child id -> the request it stands for; ordered, so the last is the most recent.
    pending: RefCell<BTreeMap<i64, Pending>>,
    by_origin: RefCell<HashMap<(String, Id), i64>>,
    tokens: RefCell<HashMap<String, i64>>,
    /// The child's own requests -> the session asked to answer.
    asked: RefCell<HashMap<Id, String>>,
    subscriptions: RefCell<HashMap<String, BTreeSet<String>>>,
    attached: RefCell<HashMap<String, Instant>>,
    stopping: Cell<bool>,
}

impl StdioLink {
    /// Starts the child and its supervisor.
    pub fn start(
        shard: Weak<Shard>,
        index: usize,
        config: &ServerConfig,
        command: &StdioCommand,
    ) -> Rc<StdioLink> {
        let link = Rc::new(StdioLink {
            index,
            name: config.name.clone(),
            command: command.clone(),
            timeout: config.timeout,
            shard,
            state: RefCell::new(ChildState::Starting),
            out: RefCell::new(None),
            child: RefCell::new(None),
            next_id: Cell::new(1),
            pending: RefCell::new(BTreeMap::new()),
            by_origin: RefCell::new(HashMap::new()),
            tokens: RefCell::new(HashMap::new()),
            asked: RefCell::new(HashMap::new()),
            subscriptions: RefCell::new(HashMap::new()),
            attached: RefCell::new(HashMap::new()),
            stopping: Cell::new(false),
        });
        glommio::spawn_local(link.clone().supervise()).detach();
        link
    }

    fn error(&self, detail: String) -> UpstreamError {
        UpstreamError::Protocol {
            server: self.name.clone(),
            detail,
        }
    }

    /// Waits until the child is ready (or reported failed).
    async fn wait_ready(&self) -> Result<Bytes, UpstreamError> {
        let start = Instant::now();
        loop {
            match &*self.state.borrow() {
                ChildState::Ready(init) => return Ok(init.clone()),
                // The child never ran (or kept dying): nothing was exchanged, so this is a
                // failure to reach it, not a protocol error.
                ChildState::Failed(why) => {
                    return Err(UpstreamError::Connect {
                        server: self.name.clone(),
                        addr: format!("command {}", self.command.command),
                        source: std::io::Error::other(format!("stdio server failed: {why}")),
                    })
                }
                ChildState::Stopped => return Err(self.error("stopped".into())),
                ChildState::Starting => {}
            }
            if start.elapsed() > self.timeout {
                return Err(UpstreamError::Timeout {
                    server: self.name.clone(),
                    timeout: self.timeout,
                });
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `result` of the child's initialize answer.
    pub async fn init_result(&self) -> Result<Bytes, UpstreamError> {
        self.wait_ready().await
    }

    fn send(&self, line: Bytes) -> Result<(), UpstreamError> {
        match self.out.borrow().as_ref() {
            Some(tx) if tx.try_send(line).is_ok() => Ok(()),
            _ => Err(UpstreamError::Connect {
                server: self.name.clone(),
                addr: "stdio".into(),
                source: std::io::Error::other("the child is not running"),
            }),
        }
    }

    /// Passes one message from `session` to the child.
    pub async fn post(
        self: &Rc<Self>,
        session: &str,
        body: Bytes,
    ) -> Result<LinkReply, UpstreamError> {
        self.wait_ready().await?;
        if session != DISCOVERY {
            self.attached
                .borrow_mut()
                .insert(session.to_owned(), Instant::now());
        }
        let mut buf = body.to_vec();
        let mut msg = jsonrpc::parse(&mut buf).map_err(|e| self.error(e.to_string()))?;
        let (id, method) = match jsonrpc::classify(&msg).map_err(|e| self.error(e.to_string()))? {
            Kind::Request { id, method } => (Some(id), method.to_owned()),
            Kind::Notification { method } => (None, method.to_owned()),
            Kind::Response { id } => {
                if let Some(id) = id {
                    self.asked.borrow_mut().remove(&id);
                }
                self.send(body)?;
                return Ok(LinkReply::Accepted);
            }
        };
        let Some(origin_id) = id else {
            self.notification(session, &method, msg)?;
            return Ok(LinkReply::Accepted);
        };
        let uri = msg
            .get("params")
            .and_then(|p| p.get_str("uri"))
            .map(str::to_owned);
        if let Some(uri) = uri.filter(|_| method.starts_with("resources/")) {
            if !self.subscription_reaches_child(session, &method, &uri) {
                let (tx, rx) = local_channel::new_unbounded();
                let _ = tx.try_send(jsonrpc::result_body(&origin_id, b"{}"));
                return Ok(LinkReply::Stream(rx));
            }
        }
        let child_id = self.next_id.get();
        self.next_id.set(child_id + 1);
        jsonrpc::set_member(&mut msg, "id", Value::from(child_id));
        let mut token = None;
        if let Some(meta) = msg.get_mut("params").and_then(|p| p.get_mut("_meta")) {
            if let Some(original) = meta.get("progressToken").and_then(Id::from_value) {
                let child_token = format!("p{child_id}");
                jsonrpc::set_member(meta, "progressToken", Value::from(child_token.clone()));
                self.tokens
                    .borrow_mut()
                    .insert(child_token.clone(), child_id);
                token = Some((child_token, original));
            }
        }
        let line = jsonrpc::to_bytes(&msg);
        let (tx, rx) = local_channel::new_unbounded();
        self.by_origin
            .borrow_mut()
            .insert((session.to_owned(), origin_id.clone()), child_id);
        self.pending.borrow_mut().insert(
            child_id,
            Pending {
                tx,
                session: session.to_owned(),
                origin_id,
                token,
            },
        );
        if let Err(e) = self.send(line) {
            self.forget(child_id);
            return Err(e);
        }
        Ok(LinkReply::Stream(rx))
    }

    fn notification(
        &self,
        session: &str,
        method: &str,
        mut msg: Value<'_>,
    ) -> Result<(), UpstreamError> {
        match method {
            // The link did its own handshake with the child.
            "notifications/initialized" => Ok(()),
            "notifications/cancelled" => {
                let origin = msg
                    .get("params")
                    .and_then(|p| p.get("requestId"))
                    .and_then(Id::from_value);
                let child_id = origin.and_then(|o| {
                    self.by_origin
                        .borrow()
                        .get(&(session.to_owned(), o))
                        .copied()
                });
                let (Some(child_id), Some(params)) = (child_id, msg.get_mut("params")) else {
                    return Ok(());
                };
                jsonrpc::set_member(params, "requestId", Value::from(child_id));
                self.send(jsonrpc::to_bytes(&msg))
            }
            _ => self.send(jsonrpc::to_bytes(&msg)),
        }
    }

    /// Records a (un)subscription; true when it must reach the child.
    fn subscription_reaches_child(&self, session: &str, method: &str, uri: &str) -> bool {
        let mut subs = self.subscriptions.borrow_mut();
        match method {
            "resources/subscribe" => {
                let set = subs.entry(uri.to_owned()).or_default();
                let first = set.is_empty();
                set.insert(session.to_owned());
                first
            }
            "resources/unsubscribe" => {
                let Some(set) = subs.get_mut(uri) else {
                    return false;
                };
                let was_subscribed = set.remove(session);
                let last = set.is_empty();
                if last {
                    subs.remove(uri);
                }
                was_subscribed && last
            }
            _ => true,
        }
    }

    fn forget(&self, child_id: i64) -> Option<Pending> {
        let p = self.pending.borrow_mut().remove(&child_id)?;
        self.by_origin
            .borrow_mut()
            .remove(&(p.session.clone(), p.origin_id.clone()));
        if let Some((token, _)) = &p.token {
            self.tokens.borrow_mut().remove(token);
        }
        Some(p)
    }

    /// A session ended: drop its subscriptions (unsubscribing the child from URIs no one wants).
    pub async fn detach(&self, session: &str) {
        self.attached.borrow_mut().remove(session);
        let orphaned: Vec<String> = {
            let mut subs = self.subscriptions.borrow_mut();
            let mut gone = Vec::new();
            subs.retain(|uri, set| {
                set.remove(session);
                if set.is_empty() {
                    gone.push(uri.clone());
                }
                !set.is_empty()
            });
            gone
        };
        for uri in orphaned {
            self.fire_and_forget("resources/unsubscribe", &uri);
        }
    }

    /// Registers `child_id` as a request the connection itself sent; its answer arrives on
    /// the returned receiver.
    fn expect_own_answer(&self, child_id: i64) -> LocalReceiver<Bytes> {
        let (tx, rx) = local_channel::new_unbounded();
        self.pending.borrow_mut().insert(
            child_id,
            Pending {
                tx,
                session: LINK.into(),
                origin_id: Id::Num(child_id),
                token: None,
            },
        );
        rx
    }

    /// Sends a request of the link's own whose answer nobody needs.
    fn fire_and_forget(&self, method: &str, uri: &str) {
        let child_id = self.next_id.get();
        self.next_id.set(child_id + 1);
        let mut params = b"{\"uri\":".to_vec();
        jsonrpc::write_json_string(&mut params, uri);
        params.push(b'}');
        // Nobody waits for the answer; it is read and dropped like any other.
        let _answer = self.expect_own_answer(child_id);
        let _ = self.send(jsonrpc::request_body(&Id::Num(child_id), method, &params));
    }

    /// One line from the child.
    fn on_line(self: &Rc<Self>, line: &[u8]) {
        let mut buf = line.to_vec();
        let Ok(mut msg) = jsonrpc::parse(&mut buf) else {
            log::debug!(
                "stdio server {}: not JSON-RPC on stdout: {}",
                self.name,
                String::from_utf8_lossy(line)
            );
            return;
        };
        let kind = match jsonrpc::classify(&msg) {
            Ok(Kind::Response { id }) => (id, None),
            Ok(Kind::Request { id, method }) => (Some(id), Some(method.to_owned())),
            Ok(Kind::Notification { method }) => (None, Some(method.to_owned())),
            Err(_) => return,
        };
        match kind {
            (Some(Id::Num(n)), None) => {
                if let Some(p) = self.forget(n) {
                    jsonrpc::set_member(&mut msg, "id", p.origin_id.to_value());
                    let _ = p.tx.try_send(jsonrpc::to_bytes(&msg));
                }
            }
            (_, None) => {}
            (Some(id), Some(_)) => self.route_request(id, Bytes::copy_from_slice(line)),
            (None, Some(method)) => self.route_notification(&method, msg),
        }
    }

    fn route_request(&self, id: Id, message: Bytes) {
        // The most recent request in flight (not the link's own) is the likeliest cause.
        let target = self
            .pending
            .borrow()
            .iter()
            .rev()
            .find(|(_, p)| p.session != LINK && p.session != DISCOVERY)
            .map(|(child_id, p)| (*child_id, p.session.clone()));
        if let Some((child_id, session)) = target {
            self.asked.borrow_mut().insert(id, session);
            if let Some(p) = self.pending.borrow().get(&child_id) {
                let _ = p.tx.try_send(message);
            }
            return;
        }
        // Asked outside any request (e.g. roots/list right after initialize): no session
        // agreed to answer for it, so the proxy declines rather than picking one.
        let answer = jsonrpc::error_body(
            Some(&id),
            code::METHOD_NOT_FOUND,
            "no client request is in flight to answer this on behalf of",
        );
        let _ = self.send(answer);
    }

    fn route_notification(&self, method: &str, mut msg: Value<'_>) {
        match method {
            "notifications/progress" => {
                let token = msg
                    .get("params")
                    .and_then(|p| p.get_str("progressToken"))
                    .map(str::to_owned);
                let Some(child_id) = token.and_then(|t| self.tokens.borrow().get(&t).copied())
                else {
                    return;
                };
                let pending = self.pending.borrow();
                let Some(p) = pending.get(&child_id) else {
                    return;
                };
                if let (Some((_, original)), Some(params)) = (&p.token, msg.get_mut("params")) {
                    jsonrpc::set_member(params, "progressToken", original.to_value());
                }
                let _ = p.tx.try_send(jsonrpc::to_bytes(&msg));
            }
            "notifications/cancelled" => {
                let id = msg
                    .get("params")
                    .and_then(|p| p.get("requestId"))
                    .and_then(Id::from_value);
                let session = id.and_then(|id| self.asked.borrow_mut().remove(&id));
                if let Some(session) = session {
                    self.deliver(&session, jsonrpc::to_bytes(&msg));
                }
            }
            "notifications/tools/list_changed"
            | "notifications/prompts/list_changed"
            | "notifications/resources/list_changed" => {
                if let Some(shard) = self.shard.upgrade() {
                    shard.request_rediscovery(self.index);
                }
            }
            "notifications/resources/updated" => {
                let uri = msg
                    .get("params")
                    .and_then(|p| p.get_str("uri"))
                    .unwrap_or_default();
                let subscribers: Vec<String> = self
                    .subscriptions
                    .borrow()
                    .get(uri)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                let message = jsonrpc::to_bytes(&msg);
                for session in subscribers {
                    self.deliver(&session, message.clone());
                }
            }
            _ => {
                let message = jsonrpc::to_bytes(&msg);
                let sessions: Vec<String> = self.attached.borrow().keys().cloned().collect();
                for session in sessions {
                    self.deliver(&session, message.clone());
                }
            }
        }
    }

    /// Hands an unasked message to a session, on whichever shard it lives.
    fn deliver(&self, session: &str, message: Bytes) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        let index = self.index;
        match (shard.local::<SessionDirectory>().owner_of)(&shard, session) {
            Some(owner) if owner == shard.id => deliver_here(&shard, session, index, message),
            Some(owner) => {
                let session = session.to_owned();
                shard.mesh.tell(owner, move |owner: &Rc<Shard>| {
                    deliver_here(owner, &session, index, message)
                });
            }
            None => {}
        }
    }

    /// Runs the child, restarts it when it exits, and gives up after a crash loop.
    async fn supervise(self: Rc<Self>) {
        let mut quick_exits = 0u32;
        let mut runs = 0u32;
        loop {
            *self.state.borrow_mut() = ChildState::Starting;
            let started = Instant::now();
            // Why this start failed, when the child could not even be started.
            let spawn_error: Option<String>;
            match ChildProcess::spawn(&self.name, &self.command) {
                Err(e) => {
                    log::warn!(
                        "stdio server {}: cannot start {}: {e}",
                        self.name,
                        self.command.command
                    );
                    spawn_error = Some(e.to_string());
                }
                Ok((child, stream)) => {
                    spawn_error = None;
                    log::info!("started stdio server {} (pid {})", self.name, child.pid);
                    crate::metrics::fleet::child_started(&self.name, runs > 0);
                    runs += 1;
                    self.run(child, stream, runs > 1).await;
                }
            }
            if self.stopping.get() {
                *self.state.borrow_mut() = ChildState::Stopped;
                return;
            }
            quick_exits = if started.elapsed() > STABLE_AFTER {
                1
            } else {
                quick_exits + 1
            };
            if quick_exits >= CRASH_LIMIT {
                let why = match &spawn_error {
                    Some(e) => format!("cannot start {}: {e}", self.command.command),
                    None => format!(
                    "it exited {quick_exits} times in a row within {}s of starting; fix its command \
                     ({}) and restart the proxy",
                        STABLE_AFTER.as_secs(),
                        self.command.command
                    ),
                };
                log::error!("stdio server {} failed: {why}", self.name);
                crate::metrics::fleet::child_failed(&self.name);
                *self.state.borrow_mut() = ChildState::Failed(why);
                if let Some(shard) = self.shard.upgrade() {
                    shard.request_rediscovery(self.index);
                }
                return;
            }
            let backoff =
                (BACKOFF_MIN * 2u32.saturating_pow(quick_exits.saturating_sub(1))).min(BACKOFF_MAX);
            log::info!("stdio server {}: restarting in {backoff:?}", self.name);
            glommio::timer::sleep(backoff).await;
            if self.stopping.get() {
                *self.state.borrow_mut() = ChildState::Stopped;
                return;
            }
        }
    }

    async fn run(self: &Rc<Self>, child: ChildProcess, stream: UnixStream, restarted: bool) {
        let (reader, writer) = futures_lite::io::split(stream);
        let (tx, rx) = local_channel::new_unbounded();
        *self.out.borrow_mut() = Some(tx);
        *self.child.borrow_mut() = Some(child);
        let writer = glommio::spawn_local(write_lines(writer, rx));
        let reader = glommio::spawn_local(read_child(self.clone(), reader));
        match self.handshake().await {
            Ok(init) => {
                *self.state.borrow_mut() = ChildState::Ready(init);
                self.resubscribe();
                if restarted {
                    if let Some(shard) = self.shard.upgrade() {
                        shard.request_rediscovery(self.index);
                    }
                }
            }
            Err(e) => {
                log::warn!("stdio server {}: initialize failed: {e}", self.name);
                if let Some(c) = self.child.borrow().as_ref() {
                    c.signal(libc::SIGKILL);
                }
            }
        }
        reader.await;
        self.out.borrow_mut().take();
        drop(writer);
        if let Some(c) = self.child.borrow_mut().take() {
            // Whatever the child left running in its group goes with it.
            c.signal(libc::SIGKILL);
        }
        *self.state.borrow_mut() = ChildState::Starting;
        self.fail_pending();
    }

    /// Opens the MCP session with the child. Roots are not declared: a child shared by many
    /// clients has no single set of roots to be given.
    async fn handshake(&self) -> Result<Bytes, UpstreamError> {
        let child_id = self.next_id.get();
        self.next_id.set(child_id + 1);
        let params = format!(
            r#"{{"protocolVersion":"{}","capabilities":{{"sampling":{{}},"elicitation":{{}}}},"clientInfo":{{"name":"mcp-proxy","version":"{}"}}}}"#,
            version::LATEST,
            env!("CARGO_PKG_VERSION")
        );
        let rx = self.expect_own_answer(child_id);
        self.send(jsonrpc::request_body(
            &Id::Num(child_id),
            "initialize",
            params.as_bytes(),
        ))?;
        let answer = glommio::timer::timeout(self.timeout, async { Ok(rx.recv().await) })
            .await
            .map_err(|_| UpstreamError::Timeout {
                server: self.name.clone(),
                timeout: self.timeout,
            })?
            .ok_or_else(|| self.error("exited during initialize".into()))?;
        let mut buf = answer.to_vec();
        let msg = jsonrpc::parse(&mut buf).map_err(|e| self.error(e.to_string()))?;
        let result = msg.get("result").ok_or_else(|| {
            self.error(format!(
                "initialize refused: {}",
                String::from_utf8_lossy(&answer)
            ))
        })?;
        let init = Bytes::from(result.encode().into_bytes());
        self.send(jsonrpc::notification_body(
            "notifications/initialized",
            None,
        ))?;
        Ok(init)
    }

    /// A restarted child knows no subscriptions: renew the ones sessions still hold.
    fn resubscribe(&self) {
        let uris: Vec<String> = self.subscriptions.borrow().keys().cloned().collect();
        for uri in uris {
            self.fire_and_forget("resources/subscribe", &uri);
        }
    }

    /// The child is gone: every request in flight gets an error now rather than never.
    fn fail_pending(&self) {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        self.by_origin.borrow_mut().clear();
        self.tokens.borrow_mut().clear();
        self.asked.borrow_mut().clear();
        for (_, p) in pending {
            let message = format!(
                "stdio server {} exited while handling the request; it is being restarted",
                self.name
            );
            let _ = p.tx.try_send(jsonrpc::error_body(
                Some(&p.origin_id),
                code::UPSTREAM_UNAVAILABLE,
                &message,
            ));
        }
    }

    /// Stops the child: SIGTERM to its group, SIGKILL after `grace`.
    pub async fn stop(&self, grace: Duration) {
        self.stopping.set(true);
        let pid = self.child.borrow().as_ref().map(|c| c.pid);
        let Some(pid) = pid else { return };
        if let Some(c) = self.child.borrow().as_ref() {
            c.signal(libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < grace
            && self
                .child
                .borrow()
                .as_ref()
                .is_some_and(|c| !c.has_exited())
        {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        // SAFETY: kill has no memory effects; an empty group only fails with ESRCH.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

async fn read_child(link: Rc<StdioLink>, mut reader: ReadHalf<UnixStream>) {
    if let Err(e) = read_lines(&mut reader, |line| link.on_line(line)).await {
        log::warn!("stdio server {}: {e}; dropping the child", link.name);
    }
    // The child's output ended: whatever waits on it (the handshake included) learns now.
    link.out.borrow_mut().take();
    link.fail_pending();
}

/// How this layer finds the session an unasked message is for: given by the layer that owns
/// sessions, kept as a shard local.
pub struct SessionDirectory {
    /// The shard owning a session id, if the id names one.
    pub owner_of: fn(&Shard, &str) -> Option<usize>,
    /// The session (bridge sessions included) on this shard, as a sink for server messages.
    pub find: fn(&Shard, &str) -> Option<Rc<dyn UpstreamSink>>,
}

fn deliver_here(shard: &Shard, session: &str, server: usize, message: Bytes) {
    if let Some(s) = (shard.local::<SessionDirectory>().find)(shard, session) {
        s.unsolicited(server, message);
    }
}
