//! JSON-RPC and MCP wire facts. Nothing here knows about sockets or HTTP.

pub mod cursor;
pub mod depth;
pub mod duplicate_keys;
pub mod jsonrpc;
pub mod names;
pub mod result_uris;
pub mod splice;
pub mod stateless;
pub mod stateless_answer;
pub mod version;
