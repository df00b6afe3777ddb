//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay in `cargo test`.
//!
//! Each function feeds untrusted bytes through the same code a client's bytes reach, and
//! panics only when an invariant the rest of the proxy relies on is broken (a body over its
//! limit, an error with no answer, a forged session id that opens). Nothing here is used by
//! the proxy itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};

use crate::http::{HttpError, Limits, ServerConn};
use crate::session::token::SessionKey;

/// A peer that sends `input` in pieces of `step` bytes, then closes; writes are discarded.
struct Replay {
    input: Vec<u8>,
    pos: usize,
    step: usize,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = self.step.min(buf.len()).min(self.input.len() - self.pos);
        let from = self.pos;
        buf[..n].copy_from_slice(&self.input[from..from + n]);
        self.pos += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    /// One executor per thread for every input: the server's reads arm glommio timers.
    static EXECUTOR: glommio::LocalExecutor = glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap_or_else(|e| panic!("cannot start a glommio executor for fuzzing: {e}"));
}

/// Reads every request in `data` the way a client connection is read. The first byte picks
/// how many bytes each read returns (1 to 64), so partial reads are explored too.
pub fn http_request(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_head_bytes: 2048,
        max_headers: 16,
        max_body_bytes: 4096,
        head_timeout: Duration::from_secs(3600),
        body_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(3600),
    };
    let stream = Replay {
        input: rest.to_vec(),
        pos: 0,
        step: usize::from(first % 64) + 1,
    };
    EXECUTOR.with(|ex| {
        ex.run(async {
            let mut conn = ServerConn::new(stream);
            loop {
                match conn.read_request(&limits).await {
                    Ok(Some(req)) => {
                        assert!(
                            req.body.len() <= limits.max_body_bytes,
                            "body over its limit"
                        );
                        assert!(req.header_count() <= limits.max_headers);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // Every fault but a vanished peer gets an answer.
                        let silent = matches!(e, HttpError::Truncated | HttpError::Io(_));
                        assert!(silent || e.status().is_some(), "no status for {e:?}");
                        assert!(!matches!(e, HttpError::Timeout(_)), "a replay never stalls");
                        break;
                    }
                }
            }
        })
    });
}

/// Parses and classifies `data` as a JSON-RPC message, as every POST body is.
pub fn jsonrpc(data: &[u8]) {
    let mut buf = data.to_vec();
    let deep = !crate::limits::json_depth_within(data, crate::limits::max_json_depth());
    match crate::protocol::jsonrpc::parse(&mut buf) {
        Ok(msg) => {
            assert!(!deep, "a message over the depth limit was parsed");
            if let Ok(crate::protocol::jsonrpc::Kind::Request { id, .. }) =
                crate::protocol::jsonrpc::classify(&msg)
            {
                // Ids are echoed back into replies: writing one must give valid JSON.
                let mut out = Vec::new();
                id.write_json(&mut out);
                assert!(simd_json::to_borrowed_value(&mut out).is_ok(), "id {id:?}");
            }
        }
        Err(e) => {
            assert!(e.code() < 0);
        }
    };
}

/// Opens `data` as a session id, and as the plaintext of a genuinely sealed one.
pub fn session_token(data: &[u8]) {
    let key = SessionKey::from_hex(&"5a".repeat(32)).unwrap_or_else(|_| unreachable!());
    // Forged ids: nothing a client makes up may open.
    let text = String::from_utf8_lossy(data);
    assert!(key.open(&text).is_none(), "a forged id opened: {text:?}");
    // Sealed garbage: what follows decryption must take any plaintext without panicking, and
    // whatever opens must seal and open again to the same claims.
    let shard = data.first().copied().unwrap_or(0);
    let id = key.seal_raw(shard, data);
    if let Some(claims) = key.open(&id) {
        assert_eq!(claims.shard, shard);
        assert_eq!(key.open(&key.seal(&claims)), Some(claims));
    }
}
