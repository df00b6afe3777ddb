//! The proxy as an OAuth 2.1 protected resource (MCP authorization spec, RFC 9728, RFC 8707).
//!
//! - [`keys`]: the trusted issuers' verification keys, one process-wide slot a control thread
//!   replaces and each shard copies (the way a reload hands in `[auth]`), and each issuer's
//!   status for the admin API.
//! - [`fetch`]: the control thread (off the shards) that reads each issuer's metadata (RFC 8414
//!   or OpenID Connect discovery) and JWKS, again on the keys' cache lifetime and when a token
//!   names an unknown `kid` (at most once per `kid_refresh_seconds`), keeping the keys it has
//!   when the issuer cannot be reached.
//! - [`resource`]: the Protected Resource Metadata document and the `WWW-Authenticate`
//!   parameters that point clients to it.
//! - `upstream_tokens`: the proxy's own tokens for upstream servers (client credentials), on
//!   the same thread, handed to `upstream::credentials`; it also posts every grant to a token
//!   endpoint (the client's credentials, scope and resource), for both kinds of token.
//! - `exchange`: clients' tokens exchanged (RFC 8693) for upstreams that take them, on the
//!   same thread, handed over the same way; a request waiting for one is parked there.

mod exchange;
pub mod fetch;
mod http;
pub mod keys;
pub mod resource;
mod upstream_tokens;

pub use exchange::offer;
pub use fetch::{follow, wait_first_fetch};
pub use keys::{IssuerKeys, IssuerStatus};
pub use resource::{challenge, metadata_document};
