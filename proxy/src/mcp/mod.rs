//! The MCP layer: what a client's messages mean and where they go.
//!
//! - [`session`]: downstream sessions, their event streams and the id maps that relay a
//!   conversation.
//! - [`routing`]: what each MCP method does: answer locally, aggregate, or forward to one server.
//! - [`bridge`]: the stateless era (2026-07-28) on both sides: its clients served through bridge
//!   sessions, and its servers' `input_required` asked of stateful clients.

pub mod bridge;
pub mod routing;
pub mod session;
