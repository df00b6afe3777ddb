//! Bounds on what one client can make a shard hold: connections and streams per session; and
//! putting `[limits]` in force (the JSON depth limit is `protocol::depth`'s, set from here).
//!
//! Counters are per shard (thread-local cells, no atomics on the hot path): connections are
//! accepted by the kernel's choice of shard, and a session's streams are served on its owner
//! shard, so each count is only ever touched by one thread. The HTTP-level limits (head and
//! body sizes, timeouts) are applied by `http::ServerConn` from [`http_limits`].
//!
//! The bounds themselves (`[limits]`, and the per-connection HTTP limits of `[proxy]`, see
//! [`ConnectionLimits`]) are process-wide atomics, set at start and replaced by a reload:
//! written a few times in the process's life, read with a relaxed load where each limit
//! applies, so shards need no message to follow a reload.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;

use crate::config::limits::LimitsConfig;
use crate::config::ProxyConfig;
use crate::http::Limits;

/// The HTTP limits for a new client connection, as in force when it is accepted: the
/// connection keeps them for its life, so a reload changes only later connections.
pub fn http_limits() -> Limits {
    let limits = in_force();
    let conn = connection_limits();
    Limits {
        max_head_bytes: conn.max_header_bytes,
        max_headers: limits.max_headers,
        max_body_bytes: conn.max_body_bytes,
        head_timeout: conn.header_read_timeout,
        body_timeout: limits.request_timeout,
        idle_timeout: conn.idle_timeout,
    }
}

/// The per-connection HTTP limits that live in `[proxy]` (where existing configurations have
/// them) but follow a reload like `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `[proxy] max_body_bytes`.
    pub max_body_bytes: usize,
    /// `[proxy] max_header_bytes`.
    pub max_header_bytes: usize,
    /// `[proxy] header_read_timeout` (also bounds the TLS handshake).
    pub header_read_timeout: Duration,
    /// `[proxy] idle_timeout`.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// The connection limits set in `proxy`.
    pub fn of(proxy: &ProxyConfig) -> Self {
        ConnectionLimits {
            max_body_bytes: proxy.max_body_bytes,
            max_header_bytes: proxy.max_header_bytes,
            header_read_timeout: proxy.header_read_timeout,
            idle_timeout: proxy.idle_timeout,
        }
    }
}

// The values before the first `apply_connection` are `[proxy]`'s defaults; the runtime puts
// the configuration's in force before any shard accepts a connection.
static MAX_BODY_BYTES: AtomicUsize = AtomicUsize::new(4 * 1024 * 1024);
static MAX_HEADER_BYTES: AtomicUsize = AtomicUsize::new(16 * 1024);
static HEADER_READ_TIMEOUT_US: AtomicU64 = AtomicU64::new(10_000_000);
static IDLE_TIMEOUT_US: AtomicU64 = AtomicU64::new(60_000_000);

/// Puts the connection limits `conn` in force for the whole process (at start, and on
/// reload); returns whether anything changed. Open connections keep the limits they started
/// with; the next accepted connection gets these.
pub fn apply_connection(conn: &ConnectionLimits) -> bool {
    let changed = connection_limits() != *conn;
    MAX_BODY_BYTES.store(conn.max_body_bytes, Ordering::Relaxed);
    MAX_HEADER_BYTES.store(conn.max_header_bytes, Ordering::Relaxed);
    HEADER_READ_TIMEOUT_US.store(micros(conn.header_read_timeout), Ordering::Relaxed);
    IDLE_TIMEOUT_US.store(micros(conn.idle_timeout), Ordering::Relaxed);
    changed
}

/// The connection limits in force.
pub fn connection_limits() -> ConnectionLimits {
    ConnectionLimits {
        max_body_bytes: MAX_BODY_BYTES.load(Ordering::Relaxed),
        max_header_bytes: MAX_HEADER_BYTES.load(Ordering::Relaxed),
        header_read_timeout: Duration::from_micros(HEADER_READ_TIMEOUT_US.load(Ordering::Relaxed)),
        idle_timeout: Duration::from_micros(IDLE_TIMEOUT_US.load(Ordering::Relaxed)),
    }
}

/// `d` in whole microseconds (the finest unit a setting is written in), saturated.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

static MAX_HEADERS: AtomicUsize = AtomicUsize::new(64);
static MAX_CONNECTIONS: AtomicUsize = AtomicUsize::new(1024);
static MAX_STREAMS_PER_SESSION: AtomicUsize = AtomicUsize::new(32);
static REQUEST_TIMEOUT_US: AtomicU64 = AtomicU64::new(30_000_000);

/// Puts `limits` in force for the whole process (at start, and on reload); returns whether
/// anything changed. Connections and streams already admitted keep going; the next admission
/// is judged by the new bounds.
pub fn apply(limits: &LimitsConfig) -> bool {
    let changed = in_force() != *limits;
    MAX_HEADERS.store(limits.max_headers, Ordering::Relaxed);
    crate::protocol::depth::set_max_json_depth(limits.max_json_depth);
    MAX_CONNECTIONS.store(limits.max_connections, Ordering::Relaxed);
    MAX_STREAMS_PER_SESSION.store(limits.max_streams_per_session, Ordering::Relaxed);
    REQUEST_TIMEOUT_US.store(micros(limits.request_timeout), Ordering::Relaxed);
    changed
}

/// The `[limits]` in force.
pub fn in_force() -> LimitsConfig {
    LimitsConfig {
        max_headers: MAX_HEADERS.load(Ordering::Relaxed),
        max_json_depth: crate::protocol::depth::max_json_depth(),
        max_connections: MAX_CONNECTIONS.load(Ordering::Relaxed),
        max_streams_per_session: MAX_STREAMS_PER_SESSION.load(Ordering::Relaxed),
        request_timeout: Duration::from_micros(REQUEST_TIMEOUT_US.load(Ordering::Relaxed)),
    }
}

/// Most client connections one shard serves at once, in force.
pub fn max_connections() -> usize {
    MAX_CONNECTIONS.load(Ordering::Relaxed)
}

/// Most streams one session holds at once, in force.
pub fn max_streams_per_session() -> usize {
    MAX_STREAMS_PER_SESSION.load(Ordering::Relaxed)
}

thread_local! {
    /// Client connections open on this shard.
    static CONNECTIONS: Cell<usize> = const { Cell::new(0) };
    /// Streams held by each session owned by this shard, by session id.
    static STREAMS: RefCell<HashMap<String, usize>> = RefCell::new(HashMap::new());
}

/// One open client connection, counted until dropped.
pub struct ConnectionSlot(());

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        CONNECTIONS.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// A slot for a new connection, or `None` when this shard already serves `max`.
pub fn connection_slot(max: usize) -> Option<ConnectionSlot> {
    CONNECTIONS.with(|c| {
        if c.get() >= max {
            None
        } else {
            c.set(c.get() + 1);
            Some(ConnectionSlot(()))
        }
    })
}

/// Connections open on this shard.
pub fn connections() -> usize {
    CONNECTIONS.with(Cell::get)
}

/// Tells a connection over the limit to come back later, then closes it. A TLS client would
/// not read a plain-text answer, and a handshake is the work the limit exists to avoid, so TLS
/// connections are just closed.
pub async fn refuse_connection(mut tcp: TcpStream, tls: bool) {
    if tls {
        return;
    }
    let body = crate::protocol::jsonrpc::error_body(
        None,
        crate::protocol::jsonrpc::code::INTERNAL_ERROR,
        "too many connections to this proxy shard; retry shortly (or raise [limits] max_connections)",
    );
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    // Bounded: a client that does not read must not hold the refusal open.
    let _ = glommio::timer::timeout(std::time::Duration::from_secs(1), async {
        let _ = tcp.write_all(&out).await;
        let _ = tcp.flush().await;
        Ok(())
    })
    .await;
}

/// One stream (GET stream or POST in flight) of a session, counted until dropped.
pub struct StreamSlot {
    session: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        STREAMS.with(|s| {
            let mut map = s.borrow_mut();
            if let Some(n) = map.get_mut(&self.session) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.session);
                }
            }
        });
    }
}

/// A stream slot in session `id`, or `None` when it already holds `max`.
pub fn stream_slot(id: &str, max: usize) -> Option<StreamSlot> {
    STREAMS.with(|s| {
        let mut map = s.borrow_mut();
        let n = map.entry(id.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            session: id.to_owned(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_put_in_force_reach_the_next_connections_limits() {
        let started = connection_limits();
        let raised = ConnectionLimits {
            max_body_bytes: 12_345,
            max_header_bytes: 6_789,
            header_read_timeout: Duration::from_micros(1_500),
            idle_timeout: Duration::from_secs(3),
        };
        assert!(apply_connection(&raised));
        assert!(
            !apply_connection(&raised),
            "the same limits again change nothing"
        );
        let http = http_limits();
        assert_eq!(
            (
                http.max_body_bytes,
                http.max_head_bytes,
                http.head_timeout,
                http.idle_timeout
            ),
            (
                12_345,
                6_789,
                Duration::from_micros(1_500),
                Duration::from_secs(3)
            )
        );
        apply_connection(&started);
        assert_eq!(connection_limits(), started);
    }

    #[test]
    fn slots_count_and_release() {
        let a = connection_slot(2).expect("first");
        let _b = connection_slot(2).expect("second");
        assert!(connection_slot(2).is_none());
        drop(a);
        assert!(connection_slot(2).is_some());
        let s1 = stream_slot("s", 1).expect("first stream");
        assert!(stream_slot("s", 1).is_none());
        assert!(stream_slot("t", 1).is_some());
        drop(s1);
        assert!(stream_slot("s", 1).is_some());
        STREAMS.with(|s| assert!(s.borrow().is_empty()));
    }
}
