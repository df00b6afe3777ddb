//! Ids of sessions that ended on a shard, so a still-valid sealed id is not restored.
//!
//! A sealed id rebuilds its session on any shard until `session_max_age` after it was issued
//! (`Shard::find_session`), so a session a client deleted, or that expired, would come back
//! if its id were not remembered. Memory stays small whatever the session traffic:
//! - an id is kept as a 16-byte digest (a prefix of its SHA-256), not as its text, which
//!   carries the client's `initialize` parameters and runs to hundreds of bytes;
//! - at most [`ENDED_KEPT`] digests per shard, the oldest forgotten first;
//! - a digest is forgotten once `session_max_age` has passed since its session ended: the
//!   session was issued before it ended, so its id is by then refused for its age anyway.

use std::collections::{HashSet, VecDeque};
use std::mem::size_of;
use std::time::Duration;

/// Ended session ids remembered per shard (about 4 MB when full).
pub const ENDED_KEPT: usize = 65_536;

/// Bytes of an id's digest: 128 bits keep accidental collisions out of reach for any number
/// of sessions a shard sees in `session_max_age`.
const DIGEST_LEN: usize = 16;

type Digest = [u8; DIGEST_LEN];

/// The ended session ids of one shard.
pub struct EndedIds {
    /// Digests in the order their sessions ended, with when (seconds since the Unix epoch).
    order: VecDeque<(Digest, u64)>,
    /// The same digests, for lookup.
    set: HashSet<Digest>,
    /// Digests at most.
    kept: usize,
    /// Seconds after which an ended id is refused for its age anyway.
    max_age: u64,
}

impl EndedIds {
    /// An empty store that forgets an id `max_age` after its session ended.
    pub fn new(max_age: Duration) -> EndedIds {
        EndedIds::with_limit(ENDED_KEPT, max_age)
    }

    /// An empty store of at most `kept` ids.
    pub fn with_limit(kept: usize, max_age: Duration) -> EndedIds {
        EndedIds {
            order: VecDeque::new(),
            set: HashSet::new(),
            kept: kept.max(1),
            max_age: max_age.as_secs(),
        }
    }

    /// Remembers that the session `id` ended at `now` (seconds since the Unix epoch).
    pub fn insert(&mut self, id: &str, now: u64) {
        while let Some(&(old, at)) = self.order.front() {
            if at.saturating_add(self.max_age) >= now {
                break;
            }
            self.order.pop_front();
            self.set.remove(&old);
        }
        let digest = digest(id);
        if self.set.contains(&digest) {
            return;
        }
        if self.order.len() >= self.kept {
            if let Some((old, _)) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(digest);
        self.order.push_back((digest, now));
    }

    /// Whether the session `id` ended (and is still remembered).
    pub fn contains(&self, id: &str) -> bool {
        !self.set.is_empty() && self.set.contains(&digest(id))
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Heap bytes the store holds, from its capacities: the hash set's buckets (one control
    /// byte each, at most 7/8 of them used) and the queue's slots.
    pub fn footprint_bytes(&self) -> usize {
        let buckets = (self.set.capacity() * 8).div_ceil(7);
        buckets * (size_of::<Digest>() + 1) + self.order.capacity() * size_of::<(Digest, u64)>()
    }
}

fn digest(id: &str) -> Digest {
    let full = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(&full.as_ref()[..DIGEST_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::session::token::{Claims, SessionKey};
    use bytes::Bytes;

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
    const NOW: u64 = 1_764_000_000;

    /// A sealed id as the proxy issues it, with a typical client's `initialize` parameters.
    fn session_id(key: &SessionKey) -> String {
        key.seal(&Claims {
            shard: 1,
            member: None,
            issued_at: NOW,
            version: "2025-11-25".into(),
            init_params: Bytes::from_static(
                br#"{"capabilities":{"roots":{"listChanged":true},"sampling":{},"elicitation":{}},"clientInfo":{"name":"claude-code","version":"2.0.14"}}"#,
            ),
            bindings: vec![0, 1, 0],
            principal: vec![7; 32],
        })
    }

    #[test]
    fn a_hundred_thousand_ended_sessions_fit_in_a_few_megabytes() {
        let key = SessionKey::random();
        let mut ended = EndedIds::new(WEEK);
        let mut ids = Vec::new();
        for i in 0..100_000u64 {
            let id = session_id(&key);
            ended.insert(&id, NOW + i / 100);
            if i >= 100_000 - 1_000 {
                ids.push(id);
            }
        }
        let bytes = ended.footprint_bytes();
        assert!(
            bytes < 8 * 1024 * 1024,
            "100,000 ended sessions take {bytes} bytes"
        );
        assert_eq!(ended.len(), ENDED_KEPT);
        for id in &ids {
            assert!(ended.contains(id), "a recently ended id was forgotten");
        }
        assert!(!ended.contains(&session_id(&key)), "a live id is not ended");
    }

    #[test]
    fn the_oldest_ids_go_first_when_full() {
        let mut ended = EndedIds::with_limit(3, WEEK);
        for id in ["a", "b", "c", "d"] {
            ended.insert(id, NOW);
        }
        assert!(!ended.contains("a"));
        assert!(["b", "c", "d"].iter().all(|id| ended.contains(id)));
        ended.insert("d", NOW);
        assert_eq!(ended.len(), 3, "an id ended twice is kept once");
    }

    #[test]
    fn ids_are_forgotten_once_their_age_refuses_them_anyway() {
        let mut ended = EndedIds::new(Duration::from_secs(60));
        ended.insert("old", NOW);
        ended.insert("recent", NOW + 30);
        ended.insert("new", NOW + 60);
        assert!(ended.contains("old"), "kept for the whole max age");
        ended.insert("newer", NOW + 61);
        assert!(!ended.contains("old"));
        assert!(ended.contains("recent") && ended.contains("new") && ended.contains("newer"));
        assert_eq!(ended.len(), 3);
    }
}
