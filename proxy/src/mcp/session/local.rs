//! The sessions of one shard: the local the session layer keeps on each shard.
//!
//! Sessions are found by id; an id this process does not hold is opened (it is sealed) and
//! the session rebuilt, unless it ended here. Catalog changes reach every session as
//! `list_changed` notices on its standalone stream.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::ended::EndedIds;
use super::token::{Claims, SessionKey};
use super::{Closed, Session, STANDALONE};
use crate::config::Config;
use crate::protocol::cursor::ListKind;
use crate::protocol::jsonrpc;
use crate::registry::Catalog;
use crate::shard::Shard;
use crate::upstream::stdio::connection::SessionDirectory;
use crate::upstream::UpstreamSink;

/// One shard's sessions, the key that seals their ids, and the ids of those that ended.
pub struct Sessions {
    by_id: RefCell<HashMap<String, Rc<Session>>>,
    /// Seals and opens session ids.
    key: SessionKey,
    /// Ids of sessions ended here (DELETE, idle expiry), so a still-valid sealed id is not
    /// restored.
    ended: RefCell<EndedIds>,
    /// This member's tag in a fleet, named in the ids of its sessions.
    member: Option<u32>,
}

impl Sessions {
    /// No sessions yet; ids sealed with the configured key (the runtime always sets one, a
    /// random one when none is configured).
    pub fn new(config: &Config) -> Sessions {
        let key = config
            .proxy
            .session_key
            .as_deref()
            .and_then(|k| SessionKey::from_hex(k).ok())
            .unwrap_or_else(SessionKey::random);
        Sessions {
            by_id: RefCell::new(HashMap::new()),
            key,
            ended: RefCell::new(EndedIds::new(config.proxy.session_max_age)),
            member: crate::cluster::get()
                .map(|c| crate::cluster::member_routes::member_tag(&c.identity.name)),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A shard's sessions.
// Shards run on single-threaded executors: these futures never need to be `Send`.
#[allow(async_fn_in_trait)]
pub trait ShardSessions {
    /// A fresh sealed session id naming this shard and carrying what restores the session.
    fn new_session_id(
        &self,
        version: &str,
        init_params: &Bytes,
        bindings: &[u8],
        principal: &[u8],
    ) -> String;

    /// The shard that owns `session_id`: the one named in it, modulo the shards running now
    /// (a proxy restarted with fewer shards still serves every session).
    fn owner_of(&self, session_id: &str) -> Option<usize>;

    /// A session of this shard, restored from its sealed id if this process does not have
    /// it (the proxy restarted, or another instance created it). Ended sessions stay ended.
    fn find_session(self: &Rc<Self>, id: &str) -> Option<Rc<Session>>;

    /// A session of this shard.
    fn session(&self, id: &str) -> Option<Rc<Session>>;

    /// Registers a new session.
    fn add_session(&self, session: Rc<Session>);

    /// Removes a session and ends it for `why`; its id is not restored again.
    async fn end_session(&self, id: &str, why: Closed) -> bool;

    /// Ends every session of this shard (upstream sessions are deleted, streams closed),
    /// bridge sessions included.
    async fn end_all_sessions(&self);

    /// Lets go of the sessions another fleet member now serves (`elsewhere` says which): their
    /// streams end, so the client opens them again and reaches that member, and their upstream
    /// sessions close; their ids stay valid (the member serving them restores them).
    async fn let_go_sessions(&self, elsewhere: impl Fn(&str) -> bool);

    /// Ends sessions unused for longer than the configured idle timeout, forever.
    async fn expire_sessions(self: Rc<Self>);
}

impl ShardSessions for Shard {
    fn new_session_id(
        &self,
        version: &str,
        init_params: &Bytes,
        bindings: &[u8],
        principal: &[u8],
    ) -> String {
        let sessions = self.local::<Sessions>();
        sessions.key.seal(&Claims {
            shard: self.id as u8,
            member: sessions.member,
            issued_at: unix_now(),
            version: version.to_owned(),
            init_params: init_params.clone(),
            bindings: bindings.to_vec(),
            principal: principal.to_vec(),
        })
    }

    fn owner_of(&self, session_id: &str) -> Option<usize> {
        let shard = usize::from_str_radix(session_id.get(..2)?, 16).ok()?;
        Some(shard % self.nr_shards)
    }

    fn find_session(self: &Rc<Self>, id: &str) -> Option<Rc<Session>> {
        if let Some(s) = self.session(id) {
            return Some(s);
        }
        let sessions = self.local::<Sessions>();
        if sessions.ended.borrow().contains(id) {
            return None;
        }
        let claims = sessions.key.open(id)?;
        let age = unix_now().saturating_sub(claims.issued_at);
        if age > self.config.proxy.session_max_age.as_secs() {
            return None;
        }
        let session = Session::new(
            self,
            id.to_owned(),
            claims.version,
            claims.init_params,
            claims.bindings,
        );
        session.auth.restore(&claims.principal);
        self.add_session(session.clone());
        log::info!("session restored from its id on shard {}", self.id);
        Some(session)
    }

    fn session(&self, id: &str) -> Option<Rc<Session>> {
        self.local::<Sessions>().by_id.borrow().get(id).cloned()
    }

    fn add_session(&self, session: Rc<Session>) {
        let sessions = self.local::<Sessions>();
        sessions
            .by_id
            .borrow_mut()
            .insert(session.id.clone(), session);
        self.set_session_count(sessions.by_id.borrow().len());
        crate::metrics::sessions(self.session_count());
    }

    async fn end_session(&self, id: &str, why: Closed) -> bool {
        let sessions = self.local::<Sessions>();
        let removed = sessions.by_id.borrow_mut().remove(id);
        if removed.is_some() {
            sessions.ended.borrow_mut().insert(id, unix_now());
        }
        self.set_session_count(sessions.by_id.borrow().len());
        crate::metrics::sessions(self.session_count());
        match removed {
            Some(s) => {
                s.close(why).await;
                true
            }
            None => false,
        }
    }

    async fn end_all_sessions(&self) {
        let ids: Vec<String> = self
            .local::<Sessions>()
            .by_id
            .borrow()
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.end_session(&id, Closed::Shutdown).await;
        }
        self.local::<crate::mcp::bridge::BridgeSessions>()
            .close()
            .await;
    }

    async fn let_go_sessions(&self, elsewhere: impl Fn(&str) -> bool) {
        let sessions = self.local::<Sessions>();
        let ids: Vec<String> = sessions
            .by_id
            .borrow()
            .keys()
            .filter(|id| elsewhere(id))
            .cloned()
            .collect();
        for id in ids {
            let removed = sessions.by_id.borrow_mut().remove(&id);
            self.set_session_count(sessions.by_id.borrow().len());
            crate::metrics::sessions(self.session_count());
            if let Some(s) = removed {
                log::info!("session handed to the fleet member that serves it now");
                s.close(Closed::SessionEnded).await;
            }
        }
    }

    async fn expire_sessions(self: Rc<Self>) {
        let idle = self.config.proxy.session_idle_timeout;
        let period = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            glommio::timer::sleep(period).await;
            let expired: Vec<String> = self
                .local::<Sessions>()
                .by_id
                .borrow()
                .values()
                .filter(|s| s.last_active().elapsed() > idle)
                .map(|s| s.id.clone())
                .collect();
            for id in expired {
                log::debug!("session {id} expired");
                self.end_session(&id, Closed::SessionEnded).await;
            }
        }
    }
}

/// Tells this shard's sessions which lists changed (a [`crate::shard::CatalogHook`]).
pub fn follow_catalog(shard: &Shard, _catalog: &Arc<Catalog>, changed: &[ListKind]) {
    if changed.is_empty() {
        return;
    }
    shard
        .local::<crate::mcp::bridge::BridgeSessions>()
        .lists_changed(changed);
    let notices: Vec<_> = changed
        .iter()
        .map(|kind| {
            let method = match kind {
                ListKind::Tools => "notifications/tools/list_changed",
                ListKind::Prompts => "notifications/prompts/list_changed",
                ListKind::Resources | ListKind::ResourceTemplates => {
                    "notifications/resources/list_changed"
                }
            };
            jsonrpc::notification_body(method, None)
        })
        .collect();
    for session in shard.local::<Sessions>().by_id.borrow().values() {
        for n in &notices {
            session.events.push(STANDALONE, n.clone());
        }
    }
}

/// Where an upstream's unasked message for a session goes: the upstream layer's
/// [`SessionDirectory`], answered by this layer.
pub fn directory() -> SessionDirectory {
    SessionDirectory {
        owner_of: |shard, id| shard.owner_of(id),
        find: |shard, id| {
            let session = shard.session(id).or_else(|| {
                shard
                    .local::<crate::mcp::bridge::BridgeSessions>()
                    .session_named(id)
            })?;
            Some(session as Rc<dyn UpstreamSink>)
        },
    }
}
