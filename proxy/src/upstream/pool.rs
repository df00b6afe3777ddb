//! One shard's keep-alive connections to the replicas of one upstream server.
//!
//! Each shard owns its own pool (no sharing, no locks). Node-based servers close idle
//! keep-alive connections after 5 s, so pooled connections are retired after [`POOL_IDLE`],
//! and one whose peer closed it meanwhile is never handed out (see [`still_open`]).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;

use super::error::UpstreamError;
use crate::config::{ReplicaConfig, ServerConfig, UpstreamUrl};
use crate::http::ClientConn;
use crate::tls::UpstreamStream;

/// How long an idle pooled connection is trusted (below Node's 5 s keep-alive timeout).
pub const POOL_IDLE: Duration = Duration::from_secs(4);
/// Idle connections kept per server per shard.
const POOL_MAX_IDLE: usize = 64;

struct Idle {
    conn: ClientConn<UpstreamStream>,
    since: Instant,
}

/// One replica's address and idle connections.
struct Replica {
    url: UpstreamUrl,
    idle: RefCell<Vec<Idle>>,
}

/// The replicas of one server, their addresses and idle connections.
pub struct Pool {
    server: String,
    replicas: Vec<Replica>,
    connect_timeout: Duration,
    /// Client TLS configuration for `https://` replicas (built once; none without any).
    tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Pool {
    /// An empty pool for `config`'s `replicas`.
    pub fn new(config: &ServerConfig, replicas: &[ReplicaConfig]) -> Pool {
        let tls = replicas
            .iter()
            .any(|r| r.url.tls)
            .then(|| crate::tls::client_config(config.tls.as_ref()).map_err(|e| e.to_string()));
        Pool {
            server: config.name.clone(),
            replicas: replicas
                .iter()
                .map(|r| Replica {
                    url: r.url.clone(),
                    idle: RefCell::new(Vec::new()),
                })
                .collect(),
            connect_timeout: config.connect_timeout,
            tls,
        }
    }

    /// Number of replicas.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// True when the server has no replica.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// The URL of `replica`.
    pub fn url(&self, replica: usize) -> Option<&UpstreamUrl> {
        self.replicas.get(replica).map(|r| &r.url)
    }

    /// An idle connection to `replica` still fit for use, if any.
    pub fn checkout(&self, replica: usize) -> Option<ClientConn<UpstreamStream>> {
        let mut idle = self.replicas.get(replica)?.idle.borrow_mut();
        while let Some(mut entry) = idle.pop() {
            if entry.since.elapsed() < POOL_IDLE && still_open(entry.conn.get_mut()) {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next exchange with `replica` (dropped when the pool is full).
    pub fn checkin(&self, replica: usize, conn: ClientConn<UpstreamStream>) {
        let Some(r) = self.replicas.get(replica) else {
            return;
        };
        let mut idle = r.idle.borrow_mut();
        if idle.len() < POOL_MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// A new connection to `replica` (TLS for `https://`), within the server's connect timeout.
    pub async fn connect(
        &self,
        replica: usize,
    ) -> Result<ClientConn<UpstreamStream>, UpstreamError> {
        let Some(url) = self.url(replica) else {
            return Err(UpstreamError::Connect {
                server: self.server.clone(),
                addr: format!("replica {replica}"),
                source: std::io::Error::other("no such replica"),
            });
        };
        let addr = if url.host.contains(':') {
            format!("[{}]:{}", url.host, url.port)
        } else {
            format!("{}:{}", url.host, url.port)
        };
        let stream = TcpStream::connect_timeout(addr.as_str(), self.connect_timeout)
            .await
            .map_err(|e| UpstreamError::Connect {
                server: self.server.clone(),
                addr: addr.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        // Requests are small and latency-bound; Nagle would hold them back.
        let _ = stream.set_nodelay(true);
        if !url.tls {
            return Ok(ClientConn::new(UpstreamStream::Plain(stream)));
        }
        let failed = |detail: String| UpstreamError::Connect {
            server: self.server.clone(),
            addr: addr.clone(),
            source: std::io::Error::other(detail),
        };
        let config = match &self.tls {
            Some(Ok(config)) => config.clone(),
            Some(Err(e)) => return Err(failed(format!("TLS settings unusable: {e}"))),
            None => {
                return Err(failed(
                    "no TLS configuration for an https:// replica".into(),
                ))
            }
        };
        // The handshake shares the connect budget: both are "reaching the server".
        let handshake = glommio::timer::timeout(self.connect_timeout, async {
            Ok(crate::tls::connect(config, &url.host, stream).await)
        })
        .await;
        match handshake {
            Ok(Ok(tls)) => Ok(ClientConn::new(tls)),
            Ok(Err(e)) => Err(failed(format!("TLS handshake failed: {e}"))),
            Err(_) => Err(failed(format!(
                "TLS handshake not finished within {:?}",
                self.connect_timeout
            ))),
        }
    }
}

/// True when an idle connection's peer has not closed it: a non-blocking peek sees neither
/// end-of-file nor stray bytes. Checked before reuse, so a failure after the request is
/// written can be blamed on the server, not on a stale pool.
fn still_open(stream: &mut UpstreamStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: a one-byte peek into a local buffer on a socket this connection owns.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}
