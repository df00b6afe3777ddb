//! Who is calling `/mcp`, what they may see and call, and how much (see `docs/auth.md`).
//!
//! Auth answers in typed results; the endpoint turns a [`Denial`] into its HTTP answer
//! (`endpoint::gate`), and a session keeps who owns it (`mcp::session::owner`).
//!
//! - [`identity`]: an `Authorization` value mapped to a configured client ([`Identity`]): API
//!   keys and JWTs ([`jwt`]), tokens remembered per shard once verified, and the check each
//!   request passes at the door ([`check_request`]).
//! - [`rate`]: one token bucket per client on each shard: no lock, no mesh message.
//! - [`sessions`]: sessions per client in process-wide atomics, touched only at session open
//!   and close, and the `max_sessions` quota ([`open`]).
//! - [`policy`]: what a client may see and call; a hidden tool is answered exactly like a tool
//!   that does not exist, so a client cannot probe for names.
//! - `tool_scope`: per-tool scopes, checked at the door ([`check_tool_scope`]).
//! - [`denial`]: why a request is refused, and the refusal counter.
//! - [`running`]: the running `[auth]`, kept in a [`crate::config::reloadable::Reloadable`]
//!   with a generation number: a reload
//!   swaps it, and each shard keeps its own copy, refreshed when one atomic load shows a new
//!   generation, so the hot path takes no lock.
//! - `revoke`: open streams end when a reload stops accepting their credential.
//! - [`oauth`]: the proxy as an OAuth protected resource: the trusted issuers' keys, fetched
//!   off the shards, and the metadata that points clients to them.
//!
//! With `[auth]` off, every check here is a no-op and sessions carry no identity.

pub mod denial;
pub mod identity;
pub mod jwt;
pub mod oauth;
pub mod policy;
pub mod rate;
mod revoke;
pub mod running;
pub mod sessions;
mod tool_scope;

pub use denial::{count_denial, Denial};
pub use identity::{authenticate, check_forwarded, check_request, stream_end, Identity};
pub use oauth::fetch::take_key_wait;
pub use policy::{server_name, shows, Policy, PROXY_SERVER};
pub use revoke::{stream_deadline, Opened};
pub use running::{install, reload};
pub use sessions::{count_session, open, Opening, SessionSlot};
pub use tool_scope::check_tool_scope;

/// Byte-equality of two digests in time independent of their contents.
pub fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `*` matches any run of characters, `?` any one; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("everything__*", "everything__echo"));
        assert!(!glob("everything__*", "memory__read_graph"));
        assert!(glob("a?c*", "abcdef"));
        assert!(glob("*__echo", "everything__echo"));
        assert!(!glob("echo", "echo2"));
        assert!(glob("*o*o*", "foo_bo"));
    }
}
