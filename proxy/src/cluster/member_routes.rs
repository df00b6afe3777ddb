//! Where a session is served in a fleet: the members in force, handed to the shards.
//!
//! A session id names the member that opened it ([`member_tag`] of its name, in the id's clear
//! prefix). Every member routes a session's requests by the same rule ([`Routes::serving`]):
//! to its owner while the owner is listed, otherwise to its *successor*, the listed member that
//! ranks highest for that session id (rendezvous hashing). Members that see the same list
//! agree on the successor without talking, so a dead owner's session is taken over by one
//! member rather than restored on whichever member each request lands on.
//!
//! The control thread publishes a new [`Routes`] after a heartbeat that changed it; each shard
//! subscribed ([`subscribe`]) receives it on a channel, as shard 0 receives registry changes:
//! nothing on the request path locks or waits.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use super::membership::View;
use crate::config::UpstreamUrl;

/// The tag naming member `name` in session ids: the first 32 bits of SHA-256 of the name.
pub fn member_tag(name: &str) -> u32 {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut first = [0u8; 4];
    first.copy_from_slice(&digest.as_ref()[..4]);
    u32::from_be_bytes(first)
}

/// One member as the shards reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMember {
    /// Its name.
    pub name: String,
    /// Its tag ([`member_tag`]).
    pub tag: u32,
    /// Its advertise URL, split for the HTTP client.
    pub url: UpstreamUrl,
    /// Its address, resolved on the control thread (shards never resolve names); `None` when
    /// the name did not resolve.
    pub addr: Option<SocketAddr>,
}

/// Where a session's request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// On this member.
    Here,
    /// Forwarded to another member.
    Member(&'a RouteMember),
}

/// The members a session can be served by, as this member last saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// This member's tag.
    pub this: u32,
    /// The members listed at the last heartbeat (this one included while listed).
    pub members: Vec<RouteMember>,
    /// Whether this member's lease may have expired: it then claims no session, its own
    /// included (the others have taken them over), and routes them as the others do.
    pub detached: bool,
}

impl Routes {
    /// Where the session `session_id` of member `owner` is served, leaving out the members in
    /// `unreachable` (found so while forwarding).
    pub fn serving(&self, owner: u32, session_id: &str, unreachable: &[u32]) -> Target<'_> {
        // A detached member leaves itself out: it claims no session.
        let left_out = |m: &RouteMember| self.detached && m.tag == self.this;
        let usable = |m: &&RouteMember| !unreachable.contains(&m.tag) && !left_out(m);
        if owner == self.this && !self.detached {
            return Target::Here;
        }
        if let Some(m) = self.members.iter().filter(usable).find(|m| m.tag == owner) {
            return Target::Member(m);
        }
        let successor = self
            .members
            .iter()
            .filter(usable)
            .max_by_key(|m| rank(&m.name, session_id));
        match successor {
            Some(m) if m.tag != self.this => Target::Member(m),
            _ => Target::Here,
        }
    }
}

/// A member's rank for a session: the highest takes the session over.
fn rank(member: &str, session_id: &str) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(member.as_bytes());
    ctx.update(&[0]);
    ctx.update(session_id.as_bytes());
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

struct Published {
    current: Option<Arc<Routes>>,
    subscribers: Vec<flume::Sender<Arc<Routes>>>,
}

static PUBLISHED: Mutex<Published> = Mutex::new(Published {
    current: None,
    subscribers: Vec::new(),
});

/// The routes as they change, the current ones first (if any yet); one receiver per shard.
pub fn subscribe() -> flume::Receiver<Arc<Routes>> {
    let (tx, rx) = flume::unbounded();
    if let Ok(mut p) = PUBLISHED.lock() {
        if let Some(now) = &p.current {
            let _ = tx.send(now.clone());
        }
        p.subscribers.push(tx);
    }
    rx
}

/// Publishes the routes `view` implies for member `this`, if they changed (control thread).
pub(super) fn publish(this: &str, view: &View) {
    let routes = routes_of(this, view, |m| m.addr);
    let Ok(mut p) = PUBLISHED.lock() else {
        return;
    };
    if p.current
        .as_deref()
        .is_some_and(|c| same_members(c, &routes))
    {
        return;
    }
    // Resolved only for a changed list: a name lookup may block, and only this thread may.
    let routes = Arc::new(routes_of(this, view, |m| resolve(&m.url)));
    p.subscribers.retain(|s| s.send(routes.clone()).is_ok());
    p.current = Some(routes);
}

fn same_members(a: &Routes, b: &Routes) -> bool {
    a.this == b.this
        && a.detached == b.detached
        && a.members.len() == b.members.len()
        && a.members
            .iter()
            .zip(&b.members)
            .all(|(x, y)| x.name == y.name && x.url == y.url)
}

fn routes_of(this: &str, view: &View, addr: impl Fn(&RouteMember) -> Option<SocketAddr>) -> Routes {
    let members = view
        .members
        .iter()
        .filter_map(|m| {
            let url = match UpstreamUrl::parse(&m.identity.advertise) {
                Ok(url) => url,
                Err(e) => {
                    log::warn!(
                        "cluster: member {} cannot be forwarded to: {e}",
                        m.identity.name
                    );
                    return None;
                }
            };
            let mut member = RouteMember {
                name: m.identity.name.clone(),
                tag: member_tag(&m.identity.name),
                url,
                addr: None,
            };
            member.addr = addr(&member);
            Some(member)
        })
        .collect();
    Routes {
        this: member_tag(this),
        members,
        detached: view.detached,
    }
}

fn resolve(url: &UpstreamUrl) -> Option<SocketAddr> {
    let found = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next());
    if found.is_none() {
        log::warn!(
            "cluster: the member address {} does not resolve",
            url.authority
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> RouteMember {
        RouteMember {
            name: name.into(),
            tag: member_tag(name),
            url: UpstreamUrl::parse("http://127.0.0.1:1").expect("url"),
            addr: None,
        }
    }

    fn routes(this: &str, names: &[&str], detached: bool) -> Routes {
        Routes {
            this: member_tag(this),
            members: names.iter().map(|n| member(n)).collect(),
            detached,
        }
    }

    fn served_by<'a>(t: Target<'a>, here: &'a str) -> &'a str {
        match t {
            Target::Here => here,
            Target::Member(m) => &m.name,
        }
    }

    #[test]
    fn a_listed_owner_serves_its_sessions_and_a_gone_one_has_one_successor() {
        let id = "00.session";
        let (a, b, c) = (member_tag("a"), member_tag("b"), member_tag("c"));
        let on_b = routes("b", &["a", "b", "c"], false);
        assert_eq!(on_b.serving(b, id, &[]), Target::Here);
        assert_eq!(served_by(on_b.serving(a, id, &[]), "b"), "a");
        // a is gone: b and c agree on who takes its session over.
        let (on_b, on_c) = (
            routes("b", &["b", "c"], false),
            routes("c", &["b", "c"], false),
        );
        let picked = served_by(on_b.serving(a, id, &[]), "b").to_owned();
        assert_eq!(served_by(on_c.serving(a, id, &[]), "c"), picked);
        // Still listed but unreachable: the same successor.
        let listed = routes("b", &["a", "b", "c"], false);
        assert_eq!(served_by(listed.serving(a, id, &[a]), "b"), picked);
        // Sessions spread over the survivors.
        let mut on = std::collections::HashSet::new();
        for i in 0..64 {
            on.insert(served_by(on_b.serving(a, &format!("id{i}"), &[]), "b").to_owned());
        }
        assert_eq!(on.len(), 2, "{on:?}");
        let _ = c;
    }

    #[test]
    fn a_detached_member_claims_none_of_its_own_sessions() {
        let id = "00.session";
        let a = member_tag("a");
        let detached = routes("a", &["a", "b", "c"], true);
        assert!(matches!(detached.serving(a, id, &[]), Target::Member(m) if m.name != "a"));
        let alone = routes("a", &["a"], true);
        assert_eq!(
            alone.serving(a, id, &[]),
            Target::Here,
            "nobody else to ask"
        );
    }
}
