//! What happens to a connection the listener accepted: the shard's connection limit, then TLS
//! when the listener has it (the handshake bounded by `header_read_timeout`), then HTTP.

use std::rc::Rc;

use glommio::net::TcpStream;

use crate::endpoint::limits;
use crate::shard::Shard;

/// Serves one accepted client connection: the per-shard connection limit, then TLS when the
/// listener has it (the handshake bounded by `header_read_timeout`), then HTTP.
pub async fn serve(shard: Rc<Shard>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Some(_slot) = limits::connection_slot(limits::max_connections()) else {
        limits::refuse_connection(tcp, crate::tls::listener::acceptor().is_some()).await;
        return;
    };
    let _open = crate::metrics::Connection::open();
    // Counted below TLS: the byte counters measure the wire.
    let counted = crate::metrics::Counted::new(tcp);
    match crate::tls::listener::acceptor() {
        None => crate::endpoint::http::serve_connection(shard, counted).await,
        Some(acceptor) => {
            let limit = limits::connection_limits().header_read_timeout;
            let handshake =
                glommio::timer::timeout(limit, async { Ok(acceptor.accept(counted).await) }).await;
            match handshake {
                Ok(Ok(stream)) => crate::endpoint::http::serve_connection(shard, stream).await,
                Ok(Err(e)) => log::debug!("TLS handshake failed: {e}"),
                Err(_) => log::debug!("TLS handshake not finished within {limit:?}"),
            }
        }
    }
}
