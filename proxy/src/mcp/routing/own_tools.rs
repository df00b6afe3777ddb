//! The proxy's own tools as routing serves them: the session is the orchestration layer's
//! [`Caller`], and a tool's [`ToolReply`] becomes an [`Answer`] (a call the generic
//! `proxy__call_tool` hands on is forwarded like the client's own `tools/call`).

use std::rc::Rc;

use bytes::Bytes;
use simd_json::BorrowedValue as Value;

use super::{forward, Answer};
use crate::auth::Policy;
use crate::mcp::session::{Session, STANDALONE};
use crate::orchestration::caller::{Caller, ToolReply};
use crate::protocol::jsonrpc::{self, code, Id};
use crate::registry::Catalog;
use crate::shard::Shard;
use crate::upstream::UpstreamHandle;

impl Caller for Session {
    fn session_id(&self) -> &str {
        &self.id
    }

    fn shard(&self) -> Option<Rc<Shard>> {
        Session::shard(self)
    }

    fn policy(&self) -> Option<Policy> {
        self.auth.policy()
    }

    fn permits_tool(&self, catalog: &Catalog, server: usize, exposed: &str) -> bool {
        self.auth.permits_tool(catalog, server, exposed)
    }

    fn upstream(&self, server: usize) -> Option<UpstreamHandle> {
        Session::upstream(self, server)
    }

    fn abandoned(&self, request: &Id) -> bool {
        Session::abandoned(self, request)
    }

    fn open_stream(&self) -> u64 {
        self.events.open()
    }

    fn send(&self, stream: Option<u64>, message: Bytes) {
        self.events.push(stream.unwrap_or(STANDALONE), message);
    }

    fn finish_stream(&self, stream: u64) {
        self.events.finish(stream);
    }
}

/// Answers `tools/call` of one of the proxy's own tools for `session`.
pub(super) async fn call(
    shard: &Rc<Shard>,
    session: &Rc<Session>,
    id: Id,
    msg: &Value<'_>,
    accepts_sse: bool,
) -> Answer {
    let caller: Rc<dyn Caller> = session.clone();
    let reply = crate::orchestration::call_tool(shard, caller, id.clone(), msg, accepts_sse).await;
    match reply {
        ToolReply::Json(body) => Answer::Json(body),
        ToolReply::Stream(stream) => Answer::Stream(session.clone(), stream),
        ToolReply::Silent => Answer::Silent,
        ToolReply::Forward { server, request } => {
            let mut buf = request.to_vec();
            let msg = match jsonrpc::parse(&mut buf) {
                Ok(m) => m,
                Err(e) => {
                    return Answer::Json(jsonrpc::error_body(
                        Some(&id),
                        code::INTERNAL_ERROR,
                        &e.to_string(),
                    ))
                }
            };
            let delivery = forward::Delivery::own(accepts_sse);
            forward::request(session, server, id, msg, delivery).await
        }
    }
}
